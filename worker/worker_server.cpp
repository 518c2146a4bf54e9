#include "worker/worker_server.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <optional>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/log.h"
#include "common/timer.h"
#include "engine/sampler.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/fp16.h"
#include "model/weights.h"
#include "engine/host_probe.h"
#include "transport/link_measure.h"
#include "transport/sha256.h"
#include "worker/weight_cache.h"

namespace herd {

using namespace transport;

namespace {

constexpr int kNextStageHelloTimeoutMs = 5000;
constexpr int64_t kMaxContext = int64_t{1} << 24;

std::string printable_peer(const std::string& peer) {
  std::ostringstream os;
  for (unsigned char c : peer) os << (c >= 0x21 && c < 0x7f ? static_cast<char>(c) : '.');
  return os.str();
}

void require(bool ok, const std::string& what) {
  if (!ok) throw ProtocolError(what);
}

}  // namespace

uint64_t available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

Tensor make_activation(const std::vector<float>& x, int64_t rows, int64_t cols, WireDType dt) {
  Tensor t;
  t.dtype = dt;
  t.shape = {rows, cols};
  const size_t n = static_cast<size_t>(rows * cols);
  if (dt == WireDType::F16) {
    t.data.resize(n * 2);
    auto* p = reinterpret_cast<uint16_t*>(t.data.data());
    for (size_t i = 0; i < n; ++i) p[i] = f32_to_f16(x[i]);
  } else {
    t.data.assign(reinterpret_cast<const char*>(x.data()), n * sizeof(float));
  }
  return t;
}

void read_activation(const Tensor& t, std::vector<float>& out) {
  const size_t n = static_cast<size_t>(t.n_elements());
  out.resize(n);
  if (t.dtype == WireDType::F16) {
    const auto* p = reinterpret_cast<const uint16_t*>(t.data.data());
    for (size_t i = 0; i < n; ++i) out[i] = f16_to_f32(p[i]);
  } else {
    std::memcpy(out.data(), t.data.data(), n * sizeof(float));
  }
}

transport::WorkerProfile worker_profile(const ProbeResult& p, int threads, uint64_t free_bytes) {
  WorkerProfile w;
  w.threads = threads;
  w.free_ram_bytes = free_bytes;
  w.total_ram_bytes = std::max(p.mem_total_bytes, free_bytes);
  auto rate = [](double x, double max) { return std::isfinite(x) && x > 0 ? std::min(x, max) : 0.0; };
  w.read_bw_Bps = rate(p.read_bw_Bps, kMaxRateBps);
  w.matmul_flops = rate(p.matmul_flops, kMaxFlops);
  w.op_overhead_s = rate(p.op_overhead_s, kMaxSeconds);
  w.attn_Bps = rate(p.attn_Bps, kMaxRateBps);
  for (const auto& [t, bps] : p.matvec_Bps)
    if (t < kMaxGgufType && rate(bps, kMaxRateBps) > 0 && w.matvec.size() < kMaxProfileTypes)
      w.matvec.push_back({t, rate(bps, kMaxRateBps)});
  return w;
}

WorkerServer::WorkerServer(std::unique_ptr<Listener> listener, WorkerServerOptions opts)
    : listener_(std::move(listener)), opts_(std::move(opts)) {
  if (!opts_.profile) {
    Timer t;
    opts_.profile = cached_startup_profile(opts_.threads, opts_.profile_types);
    HERD_LOG_INFO("worker: profile ", opts_.profile->read_bw_Bps / 1e9, " GB/s read, ", opts_.profile->matvec_Bps.size(),
                  " matvec types, ", opts_.profile->op_overhead_s * 1e6, " us per call (", t.seconds(), " s)");
    if (opts_.profile_source.empty()) opts_.profile_source = "measured at startup";
  }
}

WorkerServer::~WorkerServer() = default;

std::string WorkerServer::stage_name() const {
  return "layers " + std::to_string(assign_.first_layer) + "-" + std::to_string(assign_.end_layer - 1);
}

void WorkerServer::serve(const std::atomic<bool>* stop) {
  HERD_LOG_INFO("worker listening on ", listener_->address());
  // After a Forward the next one usually follows within a step: busy-poll for it for a while
  // (transport::recv_busy) instead of sleeping, which costs a wake-up per hop; idle, block.
  const auto busy_window = busy_poll_window();
  BusyClock::time_point busy_until{};
  while (!stop || !stop->load()) {
    Received r;
    if (!pending_.empty()) {
      r = std::move(pending_.front());
      pending_.pop_front();
    } else {
      r = recv_busy(*listener_, busy_until, 100);
      if (r.status == RecvStatus::timeout) continue;
    }
    const bool forward = r.status == RecvStatus::ok && r.msg.type == static_cast<uint16_t>(MsgType::Forward);
    if (!handle(r)) return;
    if (forward && busy_window.count() > 0) busy_until = BusyClock::now() + busy_window;
  }
}

bool WorkerServer::handle(Received& r) {
  if (r.status == RecvStatus::malformed) {
    drop(r.peer, r.error);
    return true;
  }
  if (r.status != RecvStatus::ok) return true;
  const Message& m = r.msg;
  try {
    const auto type = static_cast<MsgType>(m.type);
    if (type == MsgType::Hello) {
      on_hello(r.peer, m);
      return true;
    }
    require(peers_.count(r.peer) > 0, std::string(msg_type_name(m.type)) + " before Hello");
    switch (type) {
      case MsgType::Assign:
        on_assign(r.peer, m);
        return true;
      case MsgType::Forward:
        on_forward(r.peer, m);
        return true;
      case MsgType::Reset:
        unpack<Reset>(m);
        n_past_ = 0;
        listener_->send(r.peer, pack(Ready{"reset"}));
        return true;
      case MsgType::Stop:
        unpack<Stop>(m);
        listener_->send(r.peer, pack(Ready{"stopping"}));
        HERD_LOG_INFO("worker: stop requested");
        return false;
      case MsgType::Ping: {  // link measurement (transport/link_measure.h): echo the bytes back
        const Ping p = unpack<Ping>(m);
        check_echo_payload(m, p.bytes);
        listener_->send(r.peer, pack(Pong{p.seq, p.bytes}, std::move(r.msg.tensors)));
        return true;
      }
      case MsgType::WeightChunk:
        return true;  // an answer to a weight request of an assignment that already failed
      case MsgType::Error: {
        const auto e = unpack<ErrorMsg>(m);
        HERD_LOG_WARN("worker: peer ", printable_peer(r.peer), " reports: ", e.message);
        return true;
      }
      default:
        throw ProtocolError(std::string("unexpected ") + msg_type_name(m.type) + " message");
    }
  } catch (const ProtocolError& e) {
    drop(r.peer, e.what());
  }
  return true;
}

void WorkerServer::drop(const std::string& peer, const std::string& reason) {
  HERD_LOG_WARN("worker: dropping peer ", printable_peer(peer), ": ", reason);
  peers_.erase(peer);
  listener_->send(peer, pack(ErrorMsg{0, "dropped: " + reason}));  // best effort
}

void WorkerServer::reply_error(const std::string& peer, uint64_t request_id, const std::string& message) {
  HERD_LOG_WARN("worker: ", message);
  listener_->send(peer, pack(ErrorMsg{request_id, message}));
}

void WorkerServer::send_to_coordinator(const Message& m) {
  if (coordinator_.empty()) return;
  if (auto err = listener_->send(coordinator_, m); !err.empty())
    HERD_LOG_WARN("worker: cannot reach the coordinator: ", err);
}

void WorkerServer::on_hello(const std::string& peer, const Message& m) {
  const Hello h = unpack<Hello>(m);
  if (h.protocol_version != kProtocolVersion)
    throw ProtocolError("protocol version " + std::to_string(h.protocol_version) + ", this worker speaks " +
                        std::to_string(kProtocolVersion));
  require(h.role != Role::Worker, "Hello from a peer claiming to be a worker");
  peers_[peer] = Peer{h.role};
  Hello reply;
  reply.role = Role::Worker;
  reply.profile = worker_profile(*opts_.profile,
                                 opts_.threads > 0 ? opts_.threads : static_cast<int32_t>(std::thread::hardware_concurrency()),
                                 opts_.report_free_mem > 0 ? opts_.report_free_mem : available_memory_bytes());
  reply.profile.source = opts_.profile_source;
  reply.name = opts_.name;
  listener_->send(peer, pack(reply));
  HERD_LOG_INFO("worker: hello from ", printable_peer(peer), " (", h.name, ")");
}

void WorkerServer::on_assign(const std::string& peer, const Message& m) {
  const Assign a = unpack<Assign>(m);
  require(peers_[peer].role == Role::Coordinator, "Assign from a peer that is not a coordinator");
  coordinator_ = peer;
  uint64_t received = 0;
  bool fetched = false;
  std::optional<LinkStats> next_link;
  try {
    // Own copy (-m), else the coordinator's path when it holds the same model here, else the
    // weight cache (filled from the coordinator as needed).
    std::string path = opts_.model_path;
    std::unique_ptr<WeightCache> cache;
    FetchStats fetch_stats;
    std::optional<WeightSource> source;
    if (path.empty()) {
      std::error_code ec;
      const bool hint_here = !a.model_path.empty() && std::filesystem::is_regular_file(a.model_path, ec);
      if (hint_here && a.header_bytes == 0) {
        path = a.model_path;  // a coordinator that cannot send weights
      } else if (hint_here && ((file_ && file_->path() == a.model_path && file_hash_ == a.model_hash) ||
                               (std::filesystem::file_size(a.model_path, ec) == a.file_size &&
                                sha256_file_prefix(a.model_path, a.header_bytes) == a.model_hash))) {
        path = a.model_path;
      } else {
        if (a.header_bytes == 0) throw std::runtime_error("no model file: start the worker with -m FILE");
        cache = std::make_unique<WeightCache>(opts_.cache_dir.empty() ? default_cache_dir() : opts_.cache_dir,
                                              a.model_hash);
        source = weight_source(peer, a.session);
        cache->ensure_header(a.file_size, a.header_bytes, *source, fetch_stats);
        path = cache->model_path();
      }
    }
    if (!file_ || file_->path() != path) {
      stage_.reset();
      file_.reset();
      model::GgufOpenOptions o;
      o.map_all = false;
      auto f = model::GgufFile::open(path, o);
      file_hash_ = sha256_file_prefix(path, f->data_offset());
      config_ = model::load_config(*f);
      file_ = std::move(f);
    }
    if (a.model_hash != file_hash_)
      throw std::runtime_error("model mismatch: this worker's " + path + " has hash " + file_hash_.substr(0, 16) +
                               "…, the coordinator's model has " + a.model_hash.substr(0, 16) + "…");
    const int64_t L = config_.n_layers;
    if (a.first_layer < 0 || a.end_layer <= a.first_layer || a.end_layer > L)
      throw std::runtime_error("layer range " + std::to_string(a.first_layer) + ".." + std::to_string(a.end_layer) +
                               " is not inside the model's 0.." + std::to_string(L));
    if (a.is_first != (a.first_layer == 0) || a.is_last != (a.end_layer == L))
      throw std::runtime_error("is_first/is_last disagree with the layer range");
    if (a.n_ctx <= 0 || a.n_ctx > kMaxContext) throw std::runtime_error("context size " + std::to_string(a.n_ctx));
    if (a.is_last != a.next_address.empty())
      throw std::runtime_error(a.is_last ? "the last stage has a next address" : "no next-stage address");

    if (!backend_ || a.backend_isa != assign_.backend_isa || a.exact != assign_.exact) {
      stage_.reset();  // holds a reference to the backend
      backend_ = make_cpu_backend(CpuBackendOptions{a.exact, a.backend_isa});
      backend_->set_threads(opts_.threads > 0 ? opts_.threads
                                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    }
    const bool same = stage_ && assign_.first_layer == a.first_layer && assign_.end_layer == a.end_layer &&
                      assign_.n_ctx == a.n_ctx;
    if (!same) {
      stage_.reset();
      model::LayerRange r{a.first_layer, a.end_layer, a.is_first, a.is_last};
      const auto names = model::stage_tensor_names(*file_, config_, r);
      if (cache) cache->ensure_tensors(*file_, names, *source, fetch_stats, opts_.chunk_bytes);
      file_->map_tensors(names);
      stage_ = std::make_unique<Stage>(config_, model::load_stage_weights(*file_, config_, r), *backend_,
                                      KvOptions{a.n_ctx, 1, DType::F32});
    }
    if (cache) {
      cache.reset();  // unlock
      fetched = true;
      received = fetch_stats.bytes_received;
    }
    assign_ = a;
    n_past_ = 0;
    next_.reset();
    if (!a.is_last) {
      next_ = connect(a.next_address);
      Hello h;
      h.role = Role::Upstream;
      h.name = opts_.name + " (" + stage_name() + ")";
      if (auto err = next_->send(pack(h)); !err.empty()) throw std::runtime_error(err);
      Received r = next_->recv(kNextStageHelloTimeoutMs);
      if (r.status != RecvStatus::ok) throw std::runtime_error("no Hello from the next stage " + a.next_address + ": " +
                                                              (r.error.empty() ? "timed out" : r.error));
      const Hello reply = unpack<Hello>(r.msg);
      if (reply.protocol_version != kProtocolVersion) throw std::runtime_error("next stage speaks another protocol");
      try {
        LinkMeasureOptions lo;
        lo.timeout_ms = kNextStageHelloTimeoutMs;
        next_link = measure_link(*next_, lo);
      } catch (const std::exception& e) {
        throw std::runtime_error("measuring the link to the next stage " + a.next_address + ": " + e.what());
      }
    }
  } catch (const ProtocolError&) {
    throw;
  } catch (const std::exception& e) {
    stage_.reset();
    next_.reset();
    reply_error(peer, 0, e.what());
    return;
  }
  const std::string info = stage_name() + " of " + std::to_string(config_.n_layers) + ", " +
                           std::to_string(file_->mapped_bytes() >> 20) + " MiB mapped" +
                           (fetched ? ", " + std::to_string(received) + " bytes received (cache " +
                                          file_->path() + ")"
                                    : "");
  HERD_LOG_INFO("worker: assigned ", info);
  Ready ready{info};
  if (next_link) {
    ready.has_next_link = true;
    ready.next_link = *next_link;
    HERD_LOG_INFO("worker: link to the next stage: ", next_link->latency_s * 1e6, " us, ", next_link->bandwidth_Bps / 1e9, " GB/s");
  }
  listener_->send(peer, pack(ready));
}

void WorkerServer::on_forward(const std::string& peer, const Message& m) {
  const Forward f = unpack<Forward>(m);
  if (!stage_) {
    reply_error(peer, f.request_id, "Forward before a successful Assign");
    return;
  }
  const int64_t n = f.n_tokens;
  require(n >= 1 && n <= assign_.n_ctx, "Forward.n_tokens " + std::to_string(n));
  require(f.pos0 >= 0 && f.pos0 <= n_past_ && f.pos0 + n <= assign_.n_ctx,
          "Forward.pos0 " + std::to_string(f.pos0) + " (cache holds " + std::to_string(n_past_) + ", context " +
              std::to_string(assign_.n_ctx) + ")");
  require(m.tensors.size() == 1, "Forward carries " + std::to_string(m.tensors.size()) + " tensors (expected 1)");
  const Tensor& t = m.tensors[0];
  const int32_t* tokens = nullptr;
  if (assign_.is_first) {
    require(t.dtype == WireDType::I32 && t.shape == std::vector<int64_t>{n}, "Forward tokens must be i32 [n_tokens]");
    tokens = reinterpret_cast<const int32_t*>(t.data.data());
    for (int64_t i = 0; i < n; ++i)
      require(tokens[i] >= 0 && tokens[i] < config_.n_vocab, "token id " + std::to_string(tokens[i]) +
                                                                  " outside the vocabulary of " +
                                                                  std::to_string(config_.n_vocab));
  } else {
    require(t.dtype == assign_.act_dtype && t.shape == std::vector<int64_t>{n, config_.n_embd},
            std::string("Forward hidden state must be ") + wire_dtype_name(assign_.act_dtype) + " [n_tokens, " +
                std::to_string(config_.n_embd) + "]");
    read_activation(t, in_);
  }
  if (opts_.debug_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(opts_.debug_delay_ms));
  try {
    stage_->forward(tokens, assign_.is_first ? nullptr : in_.data(), n, f.pos0, f.all_logits, out_);
  } catch (const std::exception& e) {
    send_to_coordinator(pack(ErrorMsg{f.request_id, stage_name() + ": " + e.what()}));
    return;
  }
  n_past_ = f.pos0 + n;
  if (assign_.is_last && f.sample) {
    int32_t token = -1;
    try {
      token = sample(f.sampling, out_.data());
    } catch (const std::exception& e) {
      send_to_coordinator(pack(ErrorMsg{f.request_id, stage_name() + ": cannot sample: " + e.what()}));
      return;
    }
    Result res{f.request_id, 0, token};
    send_to_coordinator(pack(res));
    return;
  }
  if (assign_.is_last) {
    const int64_t rows = f.all_logits ? n : 1;
    send_to_coordinator(pack(Result{f.request_id, rows}, {make_activation(out_, rows, config_.n_vocab, WireDType::F32)}));
    return;
  }
  Forward next = f;
  if (auto err = next_->send(pack(next, {make_activation(out_, n, config_.n_embd, assign_.act_dtype)})); !err.empty())
    send_to_coordinator(pack(ErrorMsg{f.request_id, stage_name() + ": cannot reach the next stage " +
                                                         assign_.next_address + ": " + err}));
}

int32_t WorkerServer::sample(const SampleSpec& s, const float* logits) {
  // Bounded before the Sampler reserves its window (a peer's number is not a size to allocate).
  if (s.repeat_last_n < 0 || static_cast<size_t>(s.repeat_last_n) > kMaxSampleHistory)
    throw std::invalid_argument("repeat_last_n " + std::to_string(s.repeat_last_n));
  SamplerParams p;
  p.temperature = s.temperature;
  p.top_k = s.top_k;
  p.top_p = s.top_p;
  p.min_p = s.min_p;
  p.repeat_penalty = s.repeat_penalty;
  p.repeat_last_n = s.repeat_last_n;
  Sampler sampler(p, static_cast<int32_t>(config_.n_vocab));
  for (int32_t t : s.recent) sampler.accept(t);
  return sampler.sample_with_draw(logits, s.draw);
}

WeightSource WorkerServer::weight_source(const std::string& peer, uint64_t session) {
  WeightSource src;
  src.request = [this, peer, session](uint64_t offset, uint64_t length) {
    if (auto err = listener_->send(peer, pack(WeightRequest{session, offset, length})); !err.empty())
      throw std::runtime_error("cannot ask the coordinator for weights: " + err);
  };
  src.receive = [this, peer, session](int timeout_ms) -> std::optional<WeightChunkData> {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) return std::nullopt;
      Received r = listener_->recv(static_cast<int>(left));
      if (r.status == RecvStatus::timeout) continue;
      if (r.peer != peer) {
        pending_.push_back(std::move(r));  // served after the assignment
        continue;
      }
      if (r.status != RecvStatus::ok) throw std::runtime_error("coordinator link: " + r.error);
      if (r.msg.type == static_cast<uint16_t>(MsgType::Error))
        throw std::runtime_error("the coordinator refused: " + unpack<ErrorMsg>(r.msg).message);
      const WeightChunk c = unpack<WeightChunk>(r.msg);  // anything else: ProtocolError
      if (c.session != session) continue;                // an answer to an abandoned assignment
      if (r.msg.tensors.size() != 1 || r.msg.tensors[0].dtype != WireDType::U8 || r.msg.tensors[0].shape.size() != 1)
        throw ProtocolError("WeightChunk must carry one u8 [length] tensor");
      return WeightChunkData{c.offset, c.crc32, std::move(r.msg.tensors[0].data)};
    }
  };
  return src;
}

}  // namespace herd
