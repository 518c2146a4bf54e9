#include "coordinator/remote_pipeline.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>

#include "cluster/model_fingerprint.h"
#include "cluster/tensor_hashes.h"
#include "common/log.h"
#include "coordinator/fixed_plan.h"
#include "model/gguf.h"
#include "model/weights.h"
#include "engine/comm.h"

namespace herd {

using namespace transport;
using namespace cluster;

RemotePipeline::RemotePipeline(const model::GgufFile& f, const model::ModelConfig& c, RemotePipelineOptions opts)
    : config_(c),
      file_(f),
      opts_(std::move(opts)),
      weights_(f, opts_.debug_corrupt_chunks, opts_.debug_tamper_chunks),
      progress_(opts_.show_progress, isatty(STDERR_FILENO) != 0) {
  if (opts_.n_ctx <= 0) throw std::invalid_argument("context size must be positive");
  if (opts_.workers.empty()) throw std::invalid_argument("RemotePipeline needs at least one worker");
  if (opts_.model_path.empty()) opts_.model_path = std::filesystem::absolute(f.path()).string();
  check_worker_loss_policy(opts_.on_worker_loss);
  if (opts_.wait_timeout_ms < 0) throw std::invalid_argument("the wait timeout must be >= 0");
  if (opts_.tp < 0 || opts_.tp > static_cast<int>(kMaxTpRanks))
    throw std::invalid_argument("--tp must be in 1.." + std::to_string(kMaxTpRanks) + " or auto, not " +
                                std::to_string(opts_.tp));
  if (opts_.plan) {
    if (!opts_.split.empty()) throw std::invalid_argument("--plan and --split: give one (the plan names the split)");
    if (opts_.tp != 1) throw std::invalid_argument("--plan and --tp: give one (the plan names the tensor-parallel groups)");
    check_plan_model(*opts_.plan, c);
    opts_.tp = static_cast<int>(opts_.plan->group());
    if (opts_.tp > static_cast<int>(kMaxTpRanks)) throw std::invalid_argument(opts_.plan->source + ": groups too large");
  }
  tp_auto_ = opts_.tp == 0;
  if (tp_auto_ && !opts_.split.empty())
    throw std::invalid_argument("--tp auto chooses the groups and the split: give --tp N with --split");
  if (tp_auto_ && opts_.plan_strategy != "optimal")
    throw std::invalid_argument("--tp auto compares plans priced by the planner's tensor-parallel model: use it with "
                                "--plan-strategy optimal (the default), or give --tp N");
  tp_ = tp_auto_ ? 1 : static_cast<size_t>(opts_.tp);
  if (!opts_.plan && opts_.workers.size() % tp_ != 0)
    throw std::invalid_argument("--tp " + std::to_string(tp_) + " with " + std::to_string(opts_.workers.size()) +
                                " workers: the number of workers must be a multiple of --tp (each pipeline stage is "
                                "a group of --tp consecutive workers)");
  if (tp_ > 1 && c.is_moe())
    throw std::invalid_argument("tensor parallelism does not split mixture-of-experts models yet (" + c.arch + ", " +
                                std::to_string(c.n_expert) + " experts): run without --tp");
  if (tp_auto_ && c.is_moe()) tp_auto_ = false;  // stays a pipeline: nothing to choose
  if ((tp_ > 1 || tp_auto_) && opts_.tp_sync == TpSync::Q8 && c.n_embd % 32 != 0)
    throw std::invalid_argument("--tp-sync q8 needs n_embd in whole blocks of 32; it is " + std::to_string(c.n_embd));
  model_hash_ = model_fingerprint(f);
  // Every tensor any stage may be given, hashed once (a full read the first time; the cache file
  // beside the model after that). Each Assign then carries its stage's digests.
  HashOptions ho;
  ho.show = opts_.show_progress;
  hashes_ = std::make_unique<TensorHashes>(f, model_hash_, ho);
  hashes_->digests(model::stage_tensor_names(f, c, {0, c.n_layers, true, true}));
  live_ = opts_.workers;
  setup();
}

void check_worker_loss_policy(const std::string& policy) {
  if (policy != "replan" && policy != "wait" && policy != "fail")
    throw std::invalid_argument("--on-worker-loss must be replan, wait or fail, not '" + policy + "'");
}

int RemotePipeline::step_timeout_ms(int64_t n_rows) const {
  if (opts_.step_timeout_ms >= 0) return opts_.step_timeout_ms;
  if (!plan_) return kStepTimeoutSplitMs;
  // The plan's prediction for n_rows tokens: one token's trip through every stage, then the rest
  // at the predicted prefill rate. 4x it: a loaded host (or a first, cold batch) may well run
  // slower than predicted; the base keeps a tiny model's milliseconds from meaning "stuck".
  const partition::Prediction& pr = plan_->pred;
  double s = pr.latency_s;
  if (pr.prefill_tok_s > 0) s += static_cast<double>(n_rows) / pr.prefill_tok_s;
  if (!std::isfinite(s) || s < 0) s = 0;
  return kStepTimeoutBaseMs + static_cast<int>(std::min(4e3 * s, 3.6e6));
}

RemotePipeline::~RemotePipeline() = default;

// pending_ stays: a recovery sends it again; do_submit/do_poll drop it when the error leaves them.
void RemotePipeline::fail(size_t i, const std::string& what, bool lost) {
  healthy_ = false;
  workers_.fail(i, what, lost);
}

void RemotePipeline::fail_root_cause(size_t i, const std::string& what) {
  healthy_ = false;
  workers_.fail_root_cause(i, what, tp_ > 1 ? 1000 : 300);
}

void RemotePipeline::setup() {
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t sent0 = weights_.bytes_sent();
  ++session_;
  workers_.connect(live_, opts_.connect_timeout_ms, opts_.take_over);
  worker_links_ = workers_.links();

  if (!opts_.split.empty() && !replanned_) {
    plan_.reset();
    plan_summary_.clear();
    try {
      ranges_ = parse_split(opts_.split, config_.n_layers);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(e.what());
    }
    if (ranges_.size() * tp_ != workers_.size())
      throw std::runtime_error("--split has " + std::to_string(ranges_.size()) + " ranges for " +
                               std::to_string(workers_.size()) + " workers" +
                               (tp_ > 1 ? " in groups of --tp " + std::to_string(tp_) + " (one range per group)" : ""));
    std::vector<model::LayerRange> per_worker;  // a group's ranks share their stage's range
    for (const auto& r : ranges_) per_worker.insert(per_worker.end(), tp_, r);
    ranges_ = std::move(per_worker);
  } else if (opts_.plan && !replanned_) {
    fixed_split();
  } else {
    plan_split();
  }

  const size_t n_st = workers_.size() / tp_;
  weights_.allow(config_, ranges_);  // the header, and each worker its own tensors (a group's: its stage's)
  ready_info_.assign(workers_.size(), {});
  stage_status_.assign(n_st, {});
  stage_links_.assign(n_st > 0 ? n_st - 1 : 0, {});
  // Link tokens: stage s takes Forward messages only from the peer that says upstream_token (stage
  // s-1's rank 0, told it as its next_token); stage 0 only from us. Fresh for every assignment.
  link_tokens_.assign(n_st, {});
  for (size_t s = 0; s + 1 < n_st; ++s) link_tokens_[s] = random_token();
  // Tensor parallelism: each group's shares from its ranks' measured read bandwidth (a decode
  // step reads every weight once: a rank's time is its share of the bytes over its bandwidth),
  // rates within the startup probe's noise taken as equal (engine/shard_plan.h).
  tp_weights_.clear();
  ring_addresses_.assign(workers_.size(), {});
  if (tp_ > 1)
    for (size_t s = 0; s < n_st; ++s) {
      std::vector<double> w;
      for (size_t r = 0; r < tp_; ++r) {
        const double bw = workers_[s * tp_ + r].hello.profile.read_bw_Bps;
        w.push_back(std::isfinite(bw) && bw > 0 && bw < 1e18 ? bw : 1.0);
      }
      tp_weights_.push_back(same_speed_weights(w));
    }
  if (tp_ > 1 && opts_.plan && !replanned_ && fixed_tp_weights_.size() == n_st) tp_weights_ = fixed_tp_weights_;
  // Assign from the last stage back, so that each stage's next stage is ready when it dials it; a
  // tensor-parallel group's ring is formed once all its ranks are assigned.
  for (size_t s = n_st; s-- > 0;) {
    for (size_t r = 0; r < tp_; ++r) assign(s * tp_ + r);
    if (tp_ > 1) form_ring(s);
  }
  mirrors_.assign(static_cast<size_t>(opts_.n_seq), std::nullopt);  // fresh samplers on the last stage
  // A new layout: the times start again. The way back from the last stage is taken to be its link
  // as this coordinator measured it (an echo: both directions together).
  hop_links_.clear();
  hop_links_.push_back(worker_links_.at(workers_[0].index));
  hop_links_.insert(hop_links_.end(), stage_links_.begin(), stage_links_.end());
  hop_links_.push_back(worker_links_.at(workers_[result_worker()].index));
  stats_.reset(stage_status_, hop_links_.size());
  healthy_ = true;
  progress_at_ = std::chrono::steady_clock::now();
  progress_.all_ready(n_st, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                      weights_.bytes_sent() - sent0);
}

void RemotePipeline::plan_split() {
  if (!shape_) shape_ = partition::shape_from_gguf(file_, config_);
  SplitRequest q;
  q.strategy = opts_.plan_strategy;
  q.n_ctx = opts_.n_ctx;
  q.act_bytes = opts_.act_dtype == WireDType::F16 ? 2 : 4;
  q.n_seq = opts_.n_seq;
  q.kv_type = std::string(dtype_name(opts_.kv_type));
  q.tp_sync = opts_.tp_sync;
  SplitPlan s;
  try {
    if (tp_auto_) {
      s = choose_tp(q);
    } else {
      s = herd::plan_split(*shape_, workers_, measured_hops_, q, tp_);
    }
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

void RemotePipeline::fixed_split() {
  std::vector<std::string> addresses;
  for (size_t i = 0; i < workers_.size(); ++i) addresses.push_back(workers_[i].address);
  FixedSplit f;
  try {
    f = herd::fixed_split(*opts_.plan, addresses);
  } catch (const std::exception& e) {
    workers_.close();
    throw std::runtime_error(e.what());
  }
  plan_.reset();
  tp_ = f.group;
  ranges_ = std::move(f.ranges);
  workers_.keep(f.stage_workers);  // in the plan's order; the workers it leaves out get nothing
  fixed_tp_weights_ = std::move(f.tp_weights);
  plan_summary_ = std::move(f.summary);
  if (opts_.print_plan) {
    std::fprintf(stderr, "%s\n", plan_summary_.c_str());
    std::fflush(stderr);
  }
}

constexpr double kTpAutoMargin = 1.1;

SplitPlan RemotePipeline::choose_tp(const SplitRequest& q) {
  // Every group size that divides the workers (1: a pipeline), each planned as `--tp N` would be;
  // the fastest predicted decode wins, a larger group only by kTpAutoMargin.
  std::optional<SplitPlan> best;
  size_t best_tp = 1;
  std::string tried, first_error;
  const size_t n = workers_.size();
  for (size_t g = 1; g <= std::min<size_t>(n, kMaxTpRanks); ++g) {
    if (n % g != 0) continue;
    try {
      SplitPlan p = herd::plan_split(*shape_, workers_, measured_hops_, q, g);
      const double tok_s = p.plan.pred.decode_tok_s;
      char b[64];
      std::snprintf(b, sizeof b, "%stp %zu %.1f tok/s", tried.empty() ? "" : ", ", g, tok_s);
      tried += b;
      // A larger group must be predicted 10% faster: its all-reduces' cost is the least certain
      // part of the model (per-hop latency under load), and a wrong TP choice costs more than a
      // wrong pipeline one.
      if (!best || tok_s > kTpAutoMargin * best->plan.pred.decode_tok_s) {
        best = std::move(p);
        best_tp = g;
      }
    } catch (const partition::PlanError& e) {
      tried += (tried.empty() ? "" : ", ") + std::string("tp ") + std::to_string(g) + " does not fit";
      if (first_error.empty()) first_error = e.what();
    }
  }
  if (!best) throw partition::PlanError(first_error);
  tp_ = best_tp;
  tp_auto_ = false;  // chosen: a replan keeps the groups
  best->summary = "plan: --tp auto chose tp " + std::to_string(best_tp) + " (predicted " + tried + ")\n" + best->summary;
  return std::move(*best);
}

void RemotePipeline::assign(size_t k) {
  const size_t s = k / tp_, rank = k % tp_, n_st = workers_.size() / tp_;
  Assign a;
  a.session = session_;
  a.model_hash = model_hash_;
  a.model_path = opts_.model_path;
  a.layers = {ranges_[k].first, ranges_[k].end, s == 0, s + 1 == n_st};
  a.n_ctx = opts_.n_ctx;
  a.n_seq = opts_.n_seq;
  a.kv_type = opts_.kv_type;
  a.act_dtype = opts_.act_dtype;
  a.backend_isa = opts_.isa;
  a.exact = opts_.exact;
  a.file_size = file_.file_size();
  a.header_bytes = file_.data_offset();
  a.tensor_digests = hashes_->digests(model::stage_tensor_names(file_, config_, ranges_[k]));
  // Only rank 0 of a group sends on: to the next stage, every rank of its group.
  if (!a.layers.output && rank == 0) {
    a.next_address = workers_[(s + 1) * tp_].address;
    a.next_token = link_tokens_[s];
    if (tp_ > 1)
      for (size_t r = 0; r < tp_; ++r) a.tp.next_addresses.push_back(workers_[(s + 1) * tp_ + r].address);
  }
  if (s > 0) a.upstream_token = link_tokens_[s - 1];
  if (tp_ > 1) {
    a.tp.rank = static_cast<uint32_t>(rank);
    a.tp.size = static_cast<uint32_t>(tp_);
    a.tp.weights = tp_weights_[s];
    a.tp.sync = static_cast<uint8_t>(opts_.tp_sync);
    // A collective waits this long for a silent rank: the step timeout of a prompt-sized batch (the
    // coordinator's watchdog names a stuck worker first), or Comm's default without one.
    const int st = step_timeout_ms(512);
    a.tp.ring_timeout_ms = st > 0 ? std::min(st, kMaxRingTimeoutMs) : Comm::kDefaultTimeoutMs;
  }
  if (auto err = workers_[k].link->send(pack(a)); !err.empty()) fail(k, err);
  // A worker without the model fetches its shard first: each request restarts the clock.
  const std::string who = workers_[k].address;
  progress_.assigning(who, layers_text(ranges_[k]));
  const uint64_t sent0 = weights_.bytes_sent();
  Received r;
  while (true) {
    r = workers_[k].link->recv(opts_.assign_timeout_ms);
    if (r.status == RecvStatus::ok && r.msg.type == static_cast<uint16_t>(MsgType::WeightRequest)) {
      try {
        serve_weights(k, r.msg);
      } catch (...) {
        progress_.stage_done(who);
        throw;
      }
      progress_.sent(who, weights_.bytes_sent() - sent0, weights_.servable_bytes(k));
      continue;
    }
    break;
  }
  progress_.stage_done(who);
  if (r.status == RecvStatus::timeout) fail(k, "no answer to the layer assignment");
  if (r.status != RecvStatus::ok) fail(k, r.error);
  try {
    if (r.msg.type == static_cast<uint16_t>(MsgType::Error))
      fail(k, "refused the assignment: " + unpack<ErrorMsg>(r.msg).message);
    const Ready ready = unpack<Ready>(r.msg);
    HERD_LOG_INFO(describe(k), " ready: ", ready.info);
    ready_info_[k] = ready.info;
    const std::string& addr = workers_[k].address;
    if (rank == 0) {
      stage_status_[s] = {addr.rfind("tcp://", 0) == 0 ? addr.substr(6) : addr, ready.device, ranges_[k].first,
                          ranges_[k].end, ready.memory_bytes};
      if (tp_ > 1) stage_status_[s].name += " +" + std::to_string(tp_ - 1) + " tp";
    } else {
      stage_status_[s].memory_bytes += ready.memory_bytes;  // the group's memory
    }
    if (tp_ > 1) {
      // Its ring listener, on the interface this coordinator dialled (a wildcard bind says 0.0.0.0).
      const std::string& ra = ready.ring_address;
      if (ra.empty()) fail(k, "did not report its tensor-parallel ring listener (an older worker?)");
      ring_addresses_[k] = ra.rfind("tcp://", 0) == 0 && addr.rfind("tcp://", 0) == 0
                               ? addr.substr(0, addr.rfind(':')) + ra.substr(ra.rfind(':'))
                               : ra;
    }
    if (s + 1 < n_st && rank == 0) {
      if (!ready.has_next_link) fail(k, "did not report its link to the next stage");
      stage_links_[s] = ready.next_link;
      measured_hops_[{workers_[k].address, workers_[(s + 1) * tp_].address}] = ready.next_link;
      HERD_LOG_INFO(describe(k), ": link to the next stage ", ready.next_link.latency_s * 1e6, " us one way, ",
                    ready.next_link.bandwidth_Bps / 1e9, " GB/s");
    }
  } catch (const ProtocolError& e) {
    fail(k, std::string("bad answer to the assignment: ") + e.what());
  }
}

void RemotePipeline::form_ring(size_t s) {
  constexpr int kRingAnswerMs = 15000;  // the workers' own bound (10 s) plus slack
  TpRing t;
  t.session = session_;
  for (size_t r = 0; r < tp_; ++r) t.addresses.push_back(ring_addresses_[s * tp_ + r]);
  // All ranks first (each blocks in make_ring_comm until its neighbours are there), then the answers.
  for (size_t r = 0; r < tp_; ++r)
    if (auto err = workers_[s * tp_ + r].link->send(pack(t)); !err.empty()) fail(s * tp_ + r, err, /*lost=*/true);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kRingAnswerMs);
  for (size_t r = 0; r < tp_; ++r) {
    const size_t k = s * tp_ + r;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    Received a = workers_[k].link->recv(static_cast<int>(std::max<int64_t>(left.count(), 0)));
    if (a.status == RecvStatus::timeout) fail(k, "no answer to the tensor-parallel ring setup", /*lost=*/true);
    if (a.status != RecvStatus::ok) fail(k, a.error, /*lost=*/true);
    try {
      if (a.msg.type == static_cast<uint16_t>(MsgType::Error))
        fail(k, "cannot join the tensor-parallel ring: " + unpack<ErrorMsg>(a.msg).message);
      HERD_LOG_INFO(describe(k), ": ", unpack<Ready>(a.msg).info);
    } catch (const ProtocolError& e) {
      fail(k, std::string("bad answer to the ring setup: ") + e.what());
    }
  }
}

void RemotePipeline::serve_weights(size_t k, const Message& m) {
  if (auto err = weights_.serve(k, *workers_[k].link, m, session_, describe(k)); !err.empty()) fail(k, err);
}

}  // namespace herd
