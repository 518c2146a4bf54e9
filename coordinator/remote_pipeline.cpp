#include "coordinator/remote_pipeline.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "common/log.h"
#include "model/gguf.h"
#include "model/weights.h"
#include "partition/strategies.h"
#include "transport/crc32.h"
#include "transport/link_measure.h"
#include "transport/sha256.h"

namespace herd {

using namespace transport;

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kPollSliceMs = 20;
constexpr int kRootCauseGraceMs = 300;

std::string layers_text(const model::LayerRange& r) {
  return r.size() == 1 ? "layer " + std::to_string(r.first)
                       : "layers " + std::to_string(r.first) + "-" + std::to_string(r.end - 1);
}

}  // namespace

std::vector<std::string> parse_worker_list(const std::string& spec) {
  std::vector<std::string> out;
  std::stringstream ss(spec);
  std::string part;
  while (std::getline(ss, part, ',')) {
    if (part.empty()) throw std::invalid_argument("--workers '" + spec + "' has an empty entry");
    out.push_back(part);
  }
  if (out.empty()) throw std::invalid_argument("--workers is empty");
  return out;
}

std::vector<model::LayerRange> split_by_memory(int64_t n_layers, const std::vector<uint64_t>& free_bytes) {
  const auto n = static_cast<int64_t>(free_bytes.size());
  if (n == 0) throw std::invalid_argument("no workers");
  if (n > n_layers)
    throw std::invalid_argument(std::to_string(n) + " workers but the model has only " + std::to_string(n_layers) +
                                " layers");
  // Everyone gets one layer; the rest go by share of free memory (equal shares when unknown).
  long double total = 0;
  for (uint64_t b : free_bytes) total += static_cast<long double>(b);
  std::vector<int64_t> count(static_cast<size_t>(n), 1);
  std::vector<std::pair<long double, int64_t>> rem;
  const int64_t spare = n_layers - n;
  int64_t given = 0;
  for (int64_t i = 0; i < n; ++i) {
    const long double share = total > 0 ? static_cast<long double>(free_bytes[i]) / total : 1.0L / n;
    const long double want = share * spare;
    const auto whole = static_cast<int64_t>(want);
    count[i] += whole;
    given += whole;
    rem.push_back({want - whole, -i});
  }
  std::sort(rem.rbegin(), rem.rend());
  for (int64_t k = 0; given < spare; ++k, ++given) ++count[static_cast<size_t>(-rem[static_cast<size_t>(k)].second)];
  std::vector<model::LayerRange> out;
  int64_t first = 0;
  for (int64_t i = 0; i < n; ++i) {
    out.push_back({first, first + count[i], i == 0, i + 1 == n});
    first += count[i];
  }
  return out;
}

RemotePipeline::RemotePipeline(const model::GgufFile& f, const model::ModelConfig& c, RemotePipelineOptions opts)
    : config_(c), file_(f), opts_(std::move(opts)) {
  if (opts_.n_ctx <= 0) throw std::invalid_argument("context size must be positive");
  if (opts_.workers.empty()) throw std::invalid_argument("RemotePipeline needs at least one worker");
  if (opts_.model_path.empty()) opts_.model_path = std::filesystem::absolute(f.path()).string();
  model_hash_ = sha256_file_prefix(f.path(), f.data_offset());
  fd_ = ::open(f.path().c_str(), O_RDONLY | O_CLOEXEC);  // -1: workers without the model are refused
  setup();
}

RemotePipeline::~RemotePipeline() {
  if (fd_ >= 0) ::close(fd_);
}

std::string RemotePipeline::describe(size_t i) const {
  std::string s = "worker " + std::to_string(i + 1) + " of " + std::to_string(workers_.size()) + " (" +
                  workers_[i].address;
  if (i < ranges_.size()) s += ", " + layers_text(ranges_[i]);
  return s + ")";
}

void RemotePipeline::fail(size_t i, const std::string& what) {
  const std::string msg = describe(i) + ": " + what;
  healthy_ = false;
  for (auto& w : workers_) w.link.reset();  // the next eval reconnects and re-assigns everyone
  HERD_LOG_INFO(msg);  // the caller reports it (the CLI prints it once, as its error)
  throw std::runtime_error(msg);
}

void RemotePipeline::fail_root_cause(size_t i, const std::string& what) {
  // A stage that cannot reach its neighbour reports an error, but the news worth giving is which
  // worker died: look briefly for a lost connection before blaming the reporter.
  const auto until = Clock::now() + std::chrono::milliseconds(kRootCauseGraceMs);
  while (Clock::now() < until) {
    for (size_t j = 0; j < workers_.size(); ++j) {
      if (j == i || !workers_[j].link) continue;
      Received r = workers_[j].link->recv(j + 1 == workers_.size() ? 5 : 0);
      if (r.status == RecvStatus::closed)
        fail(j, "lost (" + r.error + "); " + describe(i) + " reported: " + what);
    }
  }
  fail(i, what);
}

void RemotePipeline::setup() {
  ++session_;
  workers_.clear();
  for (size_t i = 0; i < opts_.workers.size(); ++i) workers_.push_back({normalize_address(opts_.workers[i]), nullptr, {}, i});
  // Hello to everyone first, then collect the answers (in parallel: one timeout in all).
  Hello h;
  h.role = Role::Coordinator;
  h.name = "coordinator";
  for (size_t i = 0; i < workers_.size(); ++i) {
    try {
      workers_[i].link = connect(workers_[i].address);
    } catch (const std::exception& e) {
      fail(i, e.what());
    }
    if (auto err = workers_[i].link->send(pack(h)); !err.empty()) fail(i, err);
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(opts_.connect_timeout_ms);
  for (size_t i = 0; i < workers_.size(); ++i) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    Received r = workers_[i].link->recv(static_cast<int>(std::max<int64_t>(left, 0)));
    if (r.status == RecvStatus::timeout)
      fail(i, "no answer within " + std::to_string(opts_.connect_timeout_ms / 1000.0).substr(0, 4) +
                  " s (is `herd worker --listen " + workers_[i].address + "` running?)");
    if (r.status != RecvStatus::ok) fail(i, r.error);
    try {
      if (r.msg.type == static_cast<uint16_t>(MsgType::Error)) {
        const std::string why = unpack<ErrorMsg>(r.msg).message;
        // A worker older than protocol 4 drops us for the lane request that precedes our Hello.
        fail(i, "refused: " + why +
                    (why.find("before Hello") != std::string::npos
                         ? " (an older herd worker? this coordinator speaks protocol " +
                               std::to_string(kProtocolVersion) + ": update herd on that host)"
                         : ""));
      }
      workers_[i].hello = unpack<Hello>(r.msg);
    } catch (const ProtocolError& e) {
      fail(i, std::string("bad handshake: ") + e.what());
    }
    if (workers_[i].hello.protocol_version != kProtocolVersion)
      fail(i, "speaks protocol version " + std::to_string(workers_[i].hello.protocol_version) +
                  ", this coordinator speaks " + std::to_string(kProtocolVersion) + " (update herd on that host)");
    if (workers_[i].hello.role != Role::Worker) fail(i, "answered but is not a worker");
  }
  // Measure each link (a few small round trips and one ~1 MiB echo through this very link).
  worker_links_.assign(workers_.size(), {});
  for (size_t i = 0; i < workers_.size(); ++i) {
    try {
      LinkMeasureOptions lo;
      lo.timeout_ms = opts_.connect_timeout_ms;
      worker_links_[i] = measure_link(*workers_[i].link, lo);
    } catch (const std::exception& e) {
      fail(i, std::string("measuring the link: ") + e.what());
    }
    HERD_LOG_INFO(describe(i), ": link ", worker_links_[i].latency_s * 1e6, " us one way, ",
                  worker_links_[i].bandwidth_Bps / 1e9, " GB/s; profile (", workers_[i].hello.profile.source, ") ",
                  workers_[i].hello.profile.free_ram_bytes / 1e9, " GB free, ", workers_[i].hello.profile.read_bw_Bps / 1e9,
                  " GB/s read");
  }

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

  // What each worker may fetch: the header, and its own tensors.
  servable_.assign(workers_.size(), {{0, file_.data_offset()}});
  for (size_t k = 0; k < workers_.size(); ++k)
    for (const auto& name : model::stage_tensor_names(file_, config_, ranges_[k])) {
      const model::GgufTensorInfo* t = file_.find_tensor(name);
      if (t) servable_[k].push_back({file_.data_offset() + t->offset, file_.data_offset() + t->offset + t->n_bytes});
    }
  ready_info_.assign(workers_.size(), {});
  stage_links_.assign(workers_.size() > 0 ? workers_.size() - 1 : 0, {});

  // Assign from the last stage back, so that each stage's next stage is ready when it dials it.
  for (size_t k = workers_.size(); k-- > 0;) {
    Assign a;
    a.session = session_;
    a.model_hash = model_hash_;
    a.model_path = opts_.model_path;
    a.first_layer = ranges_[k].first;
    a.end_layer = ranges_[k].end;
    a.is_first = k == 0;
    a.is_last = k + 1 == workers_.size();
    a.n_ctx = opts_.n_ctx;
    a.act_dtype = opts_.act_dtype;
    a.backend_isa = opts_.isa;
    a.exact = opts_.exact;
    a.file_size = file_.file_size();
    a.header_bytes = file_.data_offset();
    if (!a.is_last) a.next_address = workers_[k + 1].address;
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
  healthy_ = true;
}

namespace {

// A worker's Hello profile as the planner's device (memory = what it reports free).
partition::DeviceProfile device_of(const WorkerProfile& w, const std::string& name) {
  partition::DeviceProfile d;
  d.name = name;
  d.host = name;  // every worker its own host: the links below are per worker
  d.kind = partition::DeviceKind::Cpu;
  d.free_bytes = w.free_ram_bytes;
  d.total_bytes = std::max(w.total_ram_bytes, w.free_ram_bytes);
  // A profile without rates (an older worker, a failed measurement): a modest host's figures.
  d.bandwidth_Bps = w.read_bw_Bps > 0 ? w.read_bw_Bps : 10e9;
  d.flops = w.matmul_flops > 0 ? w.matmul_flops : 50 * d.bandwidth_Bps;
  d.overhead_bytes = 128ull << 20;  // as a cluster file's cpu device
  d.attn_Bps = w.attn_Bps;
  d.op_overhead_s = w.op_overhead_s;
  for (const auto& m : w.matvec) d.matvec_Bps[m.type] = m.bytes_per_s;
  d.probe = w.source;
  return d;
}

partition::LinkProfile link_of(const LinkStats& s) {
  return {s.latency_s, s.bandwidth_Bps > 0 ? s.bandwidth_Bps : 125e6};
}

std::string tok_s_text(double tok_s) {
  char b[32];
  std::snprintf(b, sizeof b, tok_s >= 100 ? "%.0f" : "%.1f", tok_s);
  return b;
}

}  // namespace

void RemotePipeline::plan_split() {
  if (!shape_) shape_ = partition::shape_from_gguf(file_, config_);
  partition::Cluster c;
  c.coordinator_host = "coordinator";
  for (size_t i = 0; i < workers_.size(); ++i)
    c.devices.push_back(device_of(workers_[i].hello.profile, "worker " + std::to_string(workers_[i].index + 1)));
  auto key = [](const std::string& a, const std::string& b) { return a < b ? std::make_pair(a, b) : std::make_pair(b, a); };
  for (size_t i = 0; i < workers_.size(); ++i) {
    c.links[key(c.coordinator_host, c.devices[i].host)] = link_of(worker_links_[i]);
    for (size_t j = i + 1; j < workers_.size(); ++j) {
      // Measured by the stage itself on an earlier assignment, else estimated from the two
      // coordinator links: the slower latency and the lower bandwidth.
      partition::LinkProfile l;
      if (auto it = measured_hops_.find({workers_[i].address, workers_[j].address}); it != measured_hops_.end()) {
        l = link_of(it->second);
      } else {
        l.latency_s = std::max(worker_links_[i].latency_s, worker_links_[j].latency_s);
        l.bandwidth_Bps = std::min(link_of(worker_links_[i]).bandwidth_Bps, link_of(worker_links_[j]).bandwidth_Bps);
      }
      c.links[key(c.devices[i].host, c.devices[j].host)] = l;
    }
  }
  partition::PlanOptions o;
  o.n_ctx = opts_.n_ctx;
  o.n_batch = std::min<int64_t>(512, opts_.n_ctx);
  o.n_prompt = std::min<int64_t>(512, opts_.n_ctx);
  o.act_bytes = opts_.act_dtype == WireDType::F16 ? 2 : 4;
  o.keep_order = true;  // the stages follow --workers
  partition::Strategy strategy = nullptr;
  try {
    strategy = partition::find_strategy(opts_.plan_strategy);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(std::string("--plan-strategy: ") + e.what());
  }
  partition::Plan p;
  try {
    p = strategy(*shape_, c, o);
  } catch (const partition::PlanError& e) {
    for (auto& w : workers_) w.link.reset();
    throw std::runtime_error(e.what());
  }
  cluster_ = c;
  plan_options_ = o;

  // The plan's stages in pipeline order; workers it leaves out get nothing.
  std::vector<Worker> active;
  ranges_.clear();
  std::string line = "plan:";
  for (size_t s = 0; s < p.stages.size(); ++s) {
    const auto& st = p.stages[s];
    auto& w = workers_[static_cast<size_t>(st.device)];
    ranges_.push_back({st.first, st.end, s == 0, s + 1 == p.stages.size()});
    line += std::string(s ? ", " : " ") + "worker " + std::to_string(w.index + 1) + " " + layers_text(ranges_.back());
    HERD_LOG_INFO("plan (", p.strategy, "): worker ", w.index + 1, " (", w.address, ") ", layers_text(ranges_.back()),
                  ": needs ", partition::gb(st.mem.total()), " of ", partition::gb(c.devices[static_cast<size_t>(st.device)].free_bytes),
                  " free, ", st.decode_s * 1e3, " ms per token");
  }
  line += "; predicted " + tok_s_text(p.pred.decode_tok_s) + " tok/s";
  for (const auto& e : p.excluded) {
    const auto& w = workers_[static_cast<size_t>(e.device)];
    HERD_LOG_INFO("plan: worker ", w.index + 1, " (", w.address, ") gets no layers: ", e.reason);
    const std::string why = e.reason.rfind("left out: ", 0) == 0 ? e.reason.substr(10) : e.reason;
    line += "; worker " + std::to_string(w.index + 1) + " unused (" + why + ")";
  }
  HERD_LOG_INFO("plan (", p.strategy, "): predicted ", p.pred.decode_tok_s, " tok/s decode, ", p.pred.ttft_s * 1e3,
                " ms to the first token of a ", o.n_prompt, "-token prompt");
  for (const auto& st : p.stages) active.push_back(std::move(workers_[static_cast<size_t>(st.device)]));
  workers_ = std::move(active);  // the left-out workers' links close here
  plan_summary_ = line;
  plan_ = std::move(p);
  if (opts_.print_plan) {
    std::fprintf(stderr, "%s\n", plan_summary_.c_str());
    std::fflush(stderr);
  }
}

void RemotePipeline::serve_weights(size_t k, const Message& m) {
  WeightRequest q;
  try {
    q = unpack<WeightRequest>(m);
  } catch (const ProtocolError& e) {
    fail(k, std::string("bad weight request: ") + e.what());
  }
  if (q.session != session_) return;  // from an abandoned assignment
  auto refuse = [&](const std::string& why) {
    HERD_LOG_WARN(describe(k), ": ", why);
    if (auto err = workers_[k].link->send(pack(ErrorMsg{0, why})); !err.empty()) fail(k, err);
  };
  if (fd_ < 0) return refuse("the coordinator cannot read its model file " + file_.path() + " to send weights");
  bool ok = false;
  for (const auto& [b, e] : servable_[k]) ok |= q.offset >= b && q.offset <= e && q.length <= e - q.offset;
  if (!ok)
    return refuse("weight request for bytes " + std::to_string(q.offset) + "+" + std::to_string(q.length) +
                  " outside the header and this worker's tensors");
  Tensor t;
  t.dtype = WireDType::U8;
  t.shape = {static_cast<int64_t>(q.length)};
  t.data.resize(q.length);
  size_t done = 0;
  while (done < q.length) {
    const ssize_t got = ::pread(fd_, t.data.data() + done, q.length - done, static_cast<off_t>(q.offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return refuse("cannot read " + file_.path() + " at offset " + std::to_string(q.offset + done));
    done += static_cast<size_t>(got);
  }
  WeightChunk c{session_, q.offset, crc32(t.data.data(), t.data.size())};
  if (opts_.debug_corrupt_chunks < 0 || chunks_corrupted_ < opts_.debug_corrupt_chunks) {
    t.data[t.data.size() / 2] ^= 0x5A;
    ++chunks_corrupted_;
  }
  weight_bytes_sent_ += q.length;
  if (auto err = workers_[k].link->send(pack(c, {std::move(t)})); !err.empty()) fail(k, err);
}

void RemotePipeline::prepare(const int32_t* tokens, int64_t n, int64_t pos0) {
  if (!healthy_) {
    setup();
    if (pos0 > 0) {  // the (new) workers' caches are empty: rebuild positions [0, pos0)
      std::vector<float> scratch;
      forward(cached(0).data(), pos0, 0, false, scratch);
    }
  }
}

void RemotePipeline::do_submit(uint64_t ticket, const Batch& b, std::vector<RowSample> samples) {
  std::vector<SeqRun> runs;
  batch_runs(b, n_seq(), n_ctx(), runs);
  if (runs.size() != 1 || runs[0].seq != 0) throw std::invalid_argument("RemotePipeline: one sequence at a time");
  const int64_t n = b.size(), pos0 = runs[0].pos0;
  bool all_logits = true, last_only = true;
  for (int64_t i = 0; i < n; ++i) {
    all_logits = all_logits && b.logits[i];
    last_only = last_only && b.logits[i] == (i + 1 == n);
  }
  if (!all_logits && !last_only) throw std::invalid_argument("RemotePipeline: logits for the last row or all rows");
  prepare(b.tokens.data(), n, pos0);
  BatchOutput out{ticket, {}, {}};
  if (samples.empty()) {
    forward(b.tokens.data(), n, pos0, all_logits && n > 1, out.logits);
  } else {
    const SamplerParams& p = samples[0].sampler->params();
    SampleSpec s;
    s.temperature = p.temperature;
    s.top_k = p.top_k;
    s.top_p = p.top_p;
    s.min_p = p.min_p;
    s.repeat_penalty = p.repeat_penalty;
    s.repeat_last_n = p.repeat_last_n;
    s.recent = samples[0].sampler->recent();
    s.draw = samples[0].draw;
    std::vector<float> unused;
    out.tokens.push_back(forward(b.tokens.data(), n, pos0, false, unused, &s));
  }
  done_.push_back(std::move(out));
}

std::optional<BatchOutput> RemotePipeline::do_poll(int) {
  if (done_.empty()) return std::nullopt;
  BatchOutput o = std::move(done_.front());
  done_.pop_front();
  return o;
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
