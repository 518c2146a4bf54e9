#include "coordinator/remote_pipeline.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "cluster/model_fingerprint.h"
#include "common/log.h"
#include "model/gguf.h"
#include "model/weights.h"

namespace herd {

using namespace transport;
using namespace cluster;

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kPollSliceMs = 20;

}  // namespace

RemotePipeline::RemotePipeline(const model::GgufFile& f, const model::ModelConfig& c, RemotePipelineOptions opts)
    : config_(c), file_(f), opts_(std::move(opts)), weights_(f, opts_.debug_corrupt_chunks) {
  if (opts_.n_ctx <= 0) throw std::invalid_argument("context size must be positive");
  if (opts_.workers.empty()) throw std::invalid_argument("RemotePipeline needs at least one worker");
  if (opts_.model_path.empty()) opts_.model_path = std::filesystem::absolute(f.path()).string();
  model_hash_ = model_fingerprint(f);
  setup();
}

RemotePipeline::~RemotePipeline() = default;

void RemotePipeline::fail(size_t i, const std::string& what) {
  healthy_ = false;
  workers_.fail(i, what);
}

void RemotePipeline::fail_root_cause(size_t i, const std::string& what) {
  healthy_ = false;
  workers_.fail_root_cause(i, what);
}

void RemotePipeline::setup() {
  ++session_;
  workers_.connect(opts_.workers, opts_.connect_timeout_ms);
  worker_links_ = workers_.links();

  if (!opts_.split.empty()) {
    plan_.reset();
    plan_summary_.clear();
    try {
      ranges_ = parse_split(opts_.split, config_.n_layers);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(e.what());
    }
    if (ranges_.size() != workers_.size())
      throw std::runtime_error("--split has " + std::to_string(ranges_.size()) + " ranges for " +
                               std::to_string(workers_.size()) + " workers");
  } else {
    plan_split();
  }

  weights_.allow(config_, ranges_);  // the header, and each worker its own tensors
  ready_info_.assign(workers_.size(), {});
  stage_links_.assign(workers_.size() > 0 ? workers_.size() - 1 : 0, {});
  // Assign from the last stage back, so that each stage's next stage is ready when it dials it.
  for (size_t k = workers_.size(); k-- > 0;) assign(k);
  healthy_ = true;
}

void RemotePipeline::plan_split() {
  if (!shape_) shape_ = partition::shape_from_gguf(file_, config_);
  SplitRequest q;
  q.strategy = opts_.plan_strategy;
  q.n_ctx = opts_.n_ctx;
  q.act_bytes = opts_.act_dtype == WireDType::F16 ? 2 : 4;
  SplitPlan s;
  try {
    s = herd::plan_split(*shape_, workers_, measured_hops_, q);
  } catch (const partition::PlanError& e) {
    workers_.close();
    throw std::runtime_error(e.what());
  }
  cluster_ = std::move(s.cluster);
  plan_options_ = s.options;
  ranges_ = std::move(s.ranges);
  workers_.keep(s.stage_workers);  // the workers the plan leaves out get nothing
  plan_summary_ = std::move(s.summary);
  plan_ = std::move(s.plan);
  if (opts_.print_plan) {
    std::fprintf(stderr, "%s\n", plan_summary_.c_str());
    std::fflush(stderr);
  }
}

void RemotePipeline::assign(size_t k) {
  Assign a;
  a.session = session_;
  a.model_hash = model_hash_;
  a.model_path = opts_.model_path;
  a.layers = {ranges_[k].first, ranges_[k].end, k == 0, k + 1 == workers_.size()};
  a.n_ctx = opts_.n_ctx;
  a.act_dtype = opts_.act_dtype;
  a.backend_isa = opts_.isa;
  a.exact = opts_.exact;
  a.file_size = file_.file_size();
  a.header_bytes = file_.data_offset();
  if (!a.layers.output) a.next_address = workers_[k + 1].address;
  if (auto err = workers_[k].link->send(pack(a)); !err.empty()) fail(k, err);
  // A worker without the model fetches its shard first: each request restarts the clock.
  Received r;
  while (true) {
    r = workers_[k].link->recv(opts_.assign_timeout_ms);
    if (r.status == RecvStatus::ok && r.msg.type == static_cast<uint16_t>(MsgType::WeightRequest)) {
      serve_weights(k, r.msg);
      continue;
    }
    break;
  }
  if (r.status == RecvStatus::timeout) fail(k, "no answer to the layer assignment");
  if (r.status != RecvStatus::ok) fail(k, r.error);
  try {
    if (r.msg.type == static_cast<uint16_t>(MsgType::Error))
      fail(k, "refused the assignment: " + unpack<ErrorMsg>(r.msg).message);
    const Ready ready = unpack<Ready>(r.msg);
    HERD_LOG_INFO(describe(k), " ready: ", ready.info);
    ready_info_[k] = ready.info;
    if (k + 1 < workers_.size()) {
      if (!ready.has_next_link) fail(k, "did not report its link to the next stage");
      stage_links_[k] = ready.next_link;
      measured_hops_[{workers_[k].address, workers_[k + 1].address}] = ready.next_link;
      HERD_LOG_INFO(describe(k), ": link to the next stage ", ready.next_link.latency_s * 1e6, " us one way, ",
                    ready.next_link.bandwidth_Bps / 1e9, " GB/s");
    }
  } catch (const ProtocolError& e) {
    fail(k, std::string("bad answer to the assignment: ") + e.what());
  }
}

void RemotePipeline::serve_weights(size_t k, const Message& m) {
  if (auto err = weights_.serve(k, *workers_[k].link, m, session_, describe(k)); !err.empty()) fail(k, err);
}

// The request path: below, unchanged in behaviour by the split of this file (worker_set,
// weight_server, plan_adapter): prepare (reconnect + replay), eval, eval_sample, forward (with the
// stale-Result filter). tests/integration/test_cluster_inproc.cpp pins the filter and the replay.

void RemotePipeline::prepare(const int32_t* tokens, int64_t n, int64_t pos0) {
  if (n <= 0) throw std::invalid_argument("eval: no tokens");
  if (pos0 < 0 || pos0 + n > opts_.n_ctx)
    throw std::out_of_range("context full: positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + n - 1) +
                            " exceed the context size " + std::to_string(opts_.n_ctx));
  if (pos0 > static_cast<int64_t>(history_.size()))
    throw std::invalid_argument("eval at position " + std::to_string(pos0) + " but only " +
                                std::to_string(history_.size()) + " positions are cached");
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= config_.n_vocab)
      throw std::out_of_range("token id " + std::to_string(tokens[i]) + " outside the vocabulary (" +
                              std::to_string(config_.n_vocab) + ")");
  history_.resize(static_cast<size_t>(pos0));
  if (!healthy_) {
    setup();
    if (pos0 > 0) {  // the (new) workers' caches are empty: rebuild positions [0, pos0)
      std::vector<float> scratch;
      forward(history_.data(), pos0, 0, false, scratch);
    }
  }
}

void RemotePipeline::eval(const int32_t* tokens, int64_t n, int64_t pos0, bool all_logits, std::vector<float>& logits) {
  prepare(tokens, n, pos0);
  forward(tokens, n, pos0, all_logits, logits);
  history_.insert(history_.end(), tokens, tokens + n);
}

int32_t RemotePipeline::eval_sample(const int32_t* tokens, int64_t n, int64_t pos0, Sampler& sampler) {
  prepare(tokens, n, pos0);
  SampleSpec s;
  s.params = sampler.params();
  s.recent = sampler.recent();
  s.draw = sampler.next_draw();  // the RNG stays here: one draw per step, as a local sample() makes
  std::vector<float> unused;
  const int32_t token = forward(tokens, n, pos0, false, unused, &s);
  history_.insert(history_.end(), tokens, tokens + n);
  return token;
}

int32_t RemotePipeline::forward(const int32_t* tokens, int64_t n, int64_t pos0, bool all_logits,
                                std::vector<float>& logits, const SampleSpec* sample) {
  const uint64_t rid = next_request_++;
  Tensor t;
  t.dtype = WireDType::I32;
  t.shape = {n};
  t.data.assign(reinterpret_cast<const char*>(tokens), static_cast<size_t>(n) * sizeof(int32_t));
  Forward fw{rid, pos0, n, all_logits};
  if (sample) {
    fw.sample = true;
    fw.sampling = *sample;
  }
  if (auto err = workers_[0].link->send(pack(fw, {std::move(t)})); !err.empty()) fail(0, err);

  const size_t last = workers_.size() - 1;
  const auto start = Clock::now();
  // Busy-poll for the result for a while (a decode step is milliseconds; a blocked wait costs a
  // wake-up), then wait in slices that also watch the other workers.
  const auto busy_until = start + busy_poll_window();
  while (true) {
    Received r = recv_busy(*workers_[last].link, busy_until, kPollSliceMs);
    if (r.status == RecvStatus::closed) fail(last, "lost (" + r.error + ")");
    if (r.status == RecvStatus::malformed) fail(last, "sent a malformed message: " + r.error);
    if (r.status == RecvStatus::ok) {
      try {
        if (r.msg.type == static_cast<uint16_t>(MsgType::Error)) {
          const ErrorMsg e = unpack<ErrorMsg>(r.msg);
          fail_root_cause(last, "failed: " + e.message);
        }
        const Result res = unpack<Result>(r.msg);
        if (res.request_id != rid) {
          HERD_LOG_DEBUG("ignoring a stale result for request ", res.request_id);
          continue;
        }
        if (sample) {
          if (res.n_rows != 0 || !r.msg.tensors.empty() || res.token < 0 || res.token >= config_.n_vocab)
            throw ProtocolError("Result of a sampling request must carry a token id in [0, " +
                                std::to_string(config_.n_vocab) + ") and no logits (token " +
                                std::to_string(res.token) + ")");
          return res.token;
        }
        const int64_t rows = all_logits ? n : 1;
        if (res.n_rows != rows || r.msg.tensors.size() != 1 || r.msg.tensors[0].dtype != WireDType::F32 ||
            r.msg.tensors[0].shape != std::vector<int64_t>{rows, config_.n_vocab})
          throw ProtocolError("Result has the wrong shape (expected f32 [" + std::to_string(rows) + ", " +
                              std::to_string(config_.n_vocab) + "])");
        logits.resize(static_cast<size_t>(rows * config_.n_vocab));
        std::memcpy(logits.data(), r.msg.tensors[0].data.data(), logits.size() * sizeof(float));
        return -1;
      } catch (const ProtocolError& e) {
        fail(last, std::string("sent a bad result: ") + e.what());
      }
    }
    // Any other stage may report a failure (or die) while we wait for the last one.
    for (size_t i = 0; i < last; ++i) {
      Received o = workers_[i].link->recv(0);
      if (o.status == RecvStatus::closed) fail(i, "lost (" + o.error + ")");
      if (o.status == RecvStatus::malformed) fail(i, "sent a malformed message: " + o.error);
      if (o.status == RecvStatus::ok && o.msg.type == static_cast<uint16_t>(MsgType::Error)) {
        std::string what = "failed";
        try {
          what += ": " + unpack<ErrorMsg>(o.msg).message;
        } catch (const ProtocolError& e) {
          what += " (unreadable error: " + std::string(e.what()) + ")";
        }
        fail_root_cause(i, what);
      }
    }
    if (opts_.request_timeout_ms > 0 &&
        Clock::now() - start > std::chrono::milliseconds(opts_.request_timeout_ms))
      fail(last, "no result within " + std::to_string(opts_.request_timeout_ms) + " ms");
  }
}

}  // namespace herd
