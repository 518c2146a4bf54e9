#include "worker/worker_server.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <optional>
#include <sstream>
#include <thread>

#include "cluster/worker_profile.h"
#include "common/log.h"
#include "common/timer.h"
#include "engine/sampler.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/fp16.h"
#include "model/weights.h"
#include "engine/host_probe.h"
#include "worker/bounds.h"
#include "worker/mem_budget.h"
#include "worker/weight_cache.h"
#include "transport/zmq_link.h"

namespace herd {

using namespace transport;
using namespace cluster;

namespace {

std::string printable_peer(const std::string& peer) {
  std::ostringstream os;
  for (unsigned char c : peer) os << (c >= 0x21 && c < 0x7f ? static_cast<char>(c) : '.');
  return os.str();
}

// A peer-chosen name, for a log line: printable ASCII, at most 120 characters.
std::string printable_name(const std::string& name) {
  std::string out;
  for (unsigned char c : name.substr(0, 120)) out += c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?';
  return out;
}

void require(bool ok, const std::string& what) {
  if (!ok) throw ProtocolError(what);
}

}  // namespace

namespace {

// `floats` floats of `be`'s memory in `b`, grown (with headroom) when it is smaller: a device hop's
// buffer for the hidden state.
float* device_floats(Backend& be, Buffer& b, size_t floats) {
  const size_t bytes = floats * sizeof(float);
  if (b.bytes() < bytes) b = be.alloc(bytes + bytes / 2);
  return b.as<float>();
}

// A device hop's call (or a device allocation for one): its error, or what it threw as one, so a
// failing device never takes the worker's loop down.
template <class F>
std::string hop_call(F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    return e.what();
  }
}

// An f16 hop's bytes (round to nearest even); an f32 hop is the stage's own output, written in place.
void to_f16_bytes(const std::vector<float>& x, std::string& out) {
  out.resize(x.size() * 2);
  auto* p = reinterpret_cast<uint16_t*>(out.data());
  for (size_t i = 0; i < x.size(); ++i) p[i] = f32_to_f16(x[i]);
}

}  // namespace

WorkerServer::WorkerServer(std::unique_ptr<Listener> listener, WorkerServerOptions opts)
    : listener_(std::move(listener)), opts_(std::move(opts)) {
  // Opens the /proc/meminfo descriptor now, while descriptors are free: a Hello answered under a
  // flood of silent connections must not report 0 bytes free.
  (void)meminfo_bytes("MemAvailable");
  // The process before it holds any stage: the overhead the coordinator's planner counts for it
  // (at a Hello its RSS also holds the stage it serves now, which a new assignment replaces).
  idle_rss_ = resident_bytes();
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
  return "layers " + std::to_string(assign_.layers.first) + "-" + std::to_string(assign_.layers.end - 1) +
         (assign_.tp.size > 1 ? ", tp rank " + std::to_string(assign_.tp.rank) + " of " + std::to_string(assign_.tp.size)
                              : "");
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
    if (!handle(r)) break;
    if (forward && busy_window.count() > 0) busy_until = BusyClock::now() + busy_window;
  }
  log_tp_times();
}

bool WorkerServer::handle(Received& r) {
  if (r.status == RecvStatus::malformed) {
    drop(r.peer, r.error);
    return true;
  }
  if (r.status != RecvStatus::ok) return true;
  if (silenced_.count(r.peer)) return true;  // a peer that stopped reading: not even an Error back
  const Message& m = r.msg;
  try {
    const auto type = static_cast<MsgType>(m.type);
    if (std::string err = check_message_bytes(m, forward_bytes_limit()); !err.empty()) throw ProtocolError(err);
    if (type == MsgType::Hello) {
      on_hello(r.peer, m);
      return true;
    }
    require(peers_.count(r.peer) > 0, std::string(msg_type_name(m.type)) + " before Hello");
    if (const std::string why = refusal(r.peer, type); !why.empty()) {
      reply_error(r.peer, 0, "refused: " + why);  // changes nothing
      const Peer& p = peers_[r.peer];
      if (type == MsgType::Forward && p.role == Role::Upstream && !p.session.empty() && p.session == stale_upstream_token_)
        send_to_coordinator(pack(ErrorMsg{0, stage_name() + ": refused a Forward from the upstream stage of an earlier "
                                                             "assignment (re-assigned mid-generation?)"}));
      return true;
    }
    switch (type) {
      case MsgType::Assign: {
        const std::string old_token = assign_.upstream_token;
        on_assign(r.peer, m);
        if (assign_.upstream_token != old_token) stale_upstream_token_ = old_token;
        return true;
      }
      case MsgType::Forward:
        on_forward(r.peer, m);
        return true;
      case MsgType::TpRing:
        on_tp_ring(r.peer, m);
        return true;
      case MsgType::HopOffer:
        on_hop_offer(r.peer, m);
        return true;
      case MsgType::Reset:
        unpack<Reset>(m);
        if (!stage_) {
          reply_error(r.peer, 0, "Reset before a successful Assign");
          return true;
        }
        log_tp_times();
        stage_->reset_cache();
        samplers_.assign(samplers_.size(), std::nullopt);
        listener_->send(r.peer, pack(Ready{"reset"}));
        return true;
      case MsgType::Stop:
        unpack<Stop>(m);
        listener_->send(r.peer, pack(Ready{"stopping"}));
        HERD_LOG_INFO("worker: stop requested");
        return false;
      case MsgType::Ping: {  // link measurement (cluster/link_measure.h): echo the bytes back
        const Ping p = unpack<Ping>(m);
        check_echo_payload(m, p.bytes);
        if (auto err = listener_->send(r.peer, pack(Pong{p.seq, p.bytes}, std::move(r.msg.tensors))); !err.empty())
          silence(r.peer, "it does not read its Pongs (" + err + ")");
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
  uint64_t held_back = 0;
  if (drop_log_.allow(peer, DropLog::Clock::now(), &held_back))
    HERD_LOG_WARN("worker: dropping peer ", printable_peer(peer), ": ", reason,
                  held_back ? " (" + std::to_string(held_back) + " earlier drop lines not logged: rate limit)" : "");
  if (owner_ && owner_->peers.erase(peer) && owner_->peers.empty()) owner_.reset();  // a dropped coordinator owns nothing
  const auto it = peers_.find(peer);
  const bool upstream = it != peers_.end() && it->second.role == Role::Upstream;
  peers_.erase(peer);
  if (upstream) prev_hop_.reset();  // its other end is gone with it
  listener_->send(peer, pack(ErrorMsg{0, "dropped: " + reason}));  // best effort
  // The upstream stage never reads its link to us, and the Forward it sent is lost: tell the
  // coordinator, which would otherwise wait for that Result (e.g. a lane frame that failed
  // authentication: "lane from HOST: frame N failed authentication").
  if (upstream && peer != coordinator_)
    send_to_coordinator(pack(ErrorMsg{0, stage_name() + ": dropped the previous stage's connection: " + reason}));
}

// A peer whose replies cannot be delivered (its queue of kListenerHwm messages is full and a send
// timed out): forgotten, and its further messages ignored without an answer, so that it costs
// neither memory nor another send timeout per message.
void WorkerServer::silence(const std::string& peer, const std::string& reason) {
  HERD_LOG_WARN("worker: dropping peer ", printable_peer(peer), ": ", reason);
  note("herd worker: dropped a peer: " + reason);
  if (owner_ && owner_->peers.erase(peer) && owner_->peers.empty()) owner_.reset();  // as drop(): it owns nothing
  peers_.erase(peer);
  if (silenced_.size() >= 4096) silenced_.erase(silenced_.begin());
  silenced_.insert(peer);
  if (peer == coordinator_) coordinator_.clear();
}

// The most tensor bytes a Forward may carry here: the assigned stage's widest legal batch
// (rows <= n_ctx x n_seq and kMaxBatchRows; i32 tokens on the first stage, f32 or f16 hidden rows
// on the others); before an Assign, the listener's cap.
uint64_t WorkerServer::forward_bytes_limit() const {
  if (!stage_) return transport::kMaxListenerMessageBytes;
  const uint64_t rows = std::min<uint64_t>(kMaxBatchRows, static_cast<uint64_t>(assign_.n_ctx * assign_.n_seq));
  if (assign_.layers.embedding) return rows * sizeof(int32_t);
  return rows * static_cast<uint64_t>(config_.n_embd) * wire_dtype_size(assign_.act_dtype);
}

void WorkerServer::reply_error(const std::string& peer, uint64_t request_id, const std::string& message) {
  HERD_LOG_WARN("worker: ", message);
  listener_->send(peer, pack(ErrorMsg{request_id, message}));
}

void WorkerServer::send_to_coordinator(Message m) {
  if (coordinator_.empty()) return;
  if (auto err = listener_->send(coordinator_, std::move(m)); !err.empty())
    HERD_LOG_WARN("worker: cannot reach the coordinator: ", err);
}

void WorkerServer::on_hello(const std::string& peer, const Message& m) {
  const Hello h = unpack<Hello>(m);
  if (h.protocol_version != kProtocolVersion)
    throw ProtocolError("protocol version " + std::to_string(h.protocol_version) + ", this worker speaks " +
                        std::to_string(kProtocolVersion));
  require(h.role != Role::Worker, "Hello from a peer claiming to be a worker");
  if (h.role == Role::Coordinator) {
    if (const std::string busy = claim(peer, h); !busy.empty()) {
      HERD_LOG_WARN("worker: refused coordinator ", printable_name(h.name), ": ", busy);
      listener_->send(peer, pack(ErrorMsg{0, busy}));
      peers_.erase(peer);  // not a peer: whatever else it sends comes "before Hello"
      return;
    }
  }
  peers_[peer] = Peer{h.role, h.session};
  Hello reply;
  reply.role = Role::Worker;
  // Free memory: what this worker will hold (its budget: --mem-budget, else the lower of the free
  // memory and its memory cgroup's limit), so the coordinator's plan streams where it will.
  uint64_t free = opts_.report_free_mem;
  if (free == 0) free = opts_.mem_budget > 0 ? opts_.mem_budget : auto_mem_budget();
  if (free == 0) free = meminfo_bytes("MemAvailable");
  reply.profile = worker_profile(*opts_.profile,
                                 opts_.threads > 0 ? opts_.threads : static_cast<int32_t>(std::thread::hardware_concurrency()),
                                 free);
  reply.profile.source = opts_.profile_source;
  // (Not with the test hook for free memory: those tests set the plan's memory alone.)
  if (opts_.report_free_mem == 0) reply.profile.process_bytes = std::min(idle_rss_, std::max(reply.profile.total_ram_bytes, free));
  reply.profile.streams = !opts_.no_stream;
  if (opts_.device_backend) {  // a GPU: its memory, not the host's (a stage there never streams)
    if (opts_.report_free_mem == 0 && opts_.device_free_bytes) {
      const uint64_t f = opts_.device_free_bytes();
      if (f > 0) {
        reply.profile.free_ram_bytes = f;
        reply.profile.total_ram_bytes = std::max(reply.profile.total_ram_bytes, f);  // (a --profile file's may be the host's)
      }
    }
    reply.profile.process_bytes = 0;
    reply.profile.streams = false;
  }
  reply.name = opts_.name;
  listener_->send(peer, pack(reply));
  HERD_LOG_INFO("worker: hello from ", printable_peer(peer), " (", h.name, ")");
  // Who drives this worker is worth a line by default; the previous stage's hello is not.
  if (h.role == Role::Coordinator) note("herd worker: coordinator " + printable_name(h.name) + " connected");
}

namespace {

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

}  // namespace

std::string WorkerServer::claim(const std::string& peer, const Hello& h) {
  const bool same = owner_ && (owner_->peers.count(peer) || (!h.session.empty() && owner_->session == h.session));
  if (owner_ && !same) {
    std::erase_if(owner_->peers, [&](const std::string& p) { return !listener_->reachable(p); });
    if (!owner_->peers.empty()) {
      if (!h.take_over)
        return "busy: owned by " + owner_->name + " since " + owner_->since +
               " (another coordinator is using this worker; --take-over takes it from that one)";
      const std::string me = opts_.name.empty() ? listener_->address() : printable_name(opts_.name);
      for (const auto& p : owner_->peers) {
        listener_->send(p, pack(ErrorMsg{0, "worker " + me + " was taken over by " + printable_name(h.name)}));
        peers_.erase(p);  // the old owner's further messages come "before Hello"
      }
      note("herd worker: taken over by " + printable_name(h.name) + " from " + owner_->name);
      assign_.upstream_token.clear();  // and its pipeline's upstream stage no longer feeds this one
      next_.reset();
      next_extra_.clear();
      next_hop_.reset();
      prev_hop_.reset();
    } else {
      HERD_LOG_INFO("worker: the previous owner ", owner_->name, " is gone");
    }
  }
  if (same) {
    if (owner_->peers.size() >= 8)  // its earlier connections, once closed, are forgotten
      std::erase_if(owner_->peers, [&](const std::string& p) { return !listener_->reachable(p); });
    owner_->peers.insert(peer);  // the same coordinator on another connection: still the owner
  } else {
    owner_ = Owner{{peer}, h.session, h.name.empty() ? "an unnamed coordinator" : printable_name(h.name), utc_now()};
    // A new owner: the old one's pipeline is over. Its Assign makes this peer the coordinator
    // (shard_loader.cpp); until then a result of the old pipeline's batches still on their way
    // goes nowhere (it reached the new coordinator, in the middle of its link measurement), and a
    // Forward from the old upstream stage is refused without a report to the new coordinator.
    coordinator_.clear();
    assign_.upstream_token.clear();
    stale_upstream_token_.clear();
  }
  return {};
}

std::string WorkerServer::refusal(const std::string& peer, MsgType type) const {
  const bool owner = owner_ && owner_->peers.count(peer) > 0;
  switch (type) {
    case MsgType::Assign:
    case MsgType::Reset:
    case MsgType::Stop:
    case MsgType::TpRing:
      if (owner) return {};
      return std::string(msg_type_name(static_cast<uint16_t>(type))) + " from a peer that does not own this worker" +
             (owner_ ? " (owned by " + owner_->name + " since " + owner_->since + ")" : " (no coordinator owns it)");
    case MsgType::Forward:
    case MsgType::HopOffer: {
      if (assign_.layers.embedding) {
        if (owner && type == MsgType::Forward) return {};
        return std::string(msg_type_name(static_cast<uint16_t>(type))) + " to the first stage from a peer that is not its coordinator";
      }
      const auto it = peers_.find(peer);
      if (it != peers_.end() && it->second.role == Role::Upstream && !assign_.upstream_token.empty() &&
          it->second.session == assign_.upstream_token)
        return {};
      return std::string(msg_type_name(static_cast<uint16_t>(type))) + " from a peer that is not this stage's upstream stage";
    }
    default:
      return {};
  }
}

// One batch: checked against this stage's slots and context before any work, computed, then sent
// on (hidden state, written by the stage straight into the outgoing frame's bytes) or answered
// (logits, or one sampled token per output row from the sequence's own sampler).
//
// Timed on this worker's steady clock (StageTime in cluster/protocol.h): `picked` when the message
// was handed to us, compute around Stage::forward (and sampling), overhead the rest until the reply
// or the next stage's message is packed.
void WorkerServer::on_forward(const std::string& peer, const Message& m) {
  using Clock = std::chrono::steady_clock;
  auto picked = Clock::now();
  if (opts_.forward_observer) opts_.forward_observer(m);
  Forward f = unpack<Forward>(m);
  // A Forward on the device hop that is refused before its hidden state is received leaves that
  // transfer unmatched on the hop (NCCL may even have taken a small one in already), where the
  // next batch's receive would read it: the hop is dropped instead, so a later marked Forward is
  // a protocol error and the coordinator sets the pipeline up again, never a stale hidden state.
  struct HopInStep {
    std::unique_ptr<DeviceHop>& hop;
    bool pending;
    ~HopInStep() {
      if (pending) hop.reset();
    }
  } hop_in_step{prev_hop_, f.device_hop};
  if (!stage_) {
    // The upstream stage never reads its link to us: the coordinator must hear it.
    if (peer == coordinator_ || (owner_ && owner_->peers.count(peer)))
      reply_error(peer, f.request_id, "Forward before a successful Assign");
    else send_to_coordinator(pack(ErrorMsg{f.request_id, "Forward before a successful Assign (a stage whose assignment failed)"}));
    return;
  }
  if (assign_.tp.size > 1 && !comm_ && !group_comm_) {
    reply_error(peer, f.request_id, stage_name() + ": the tensor-parallel ring is not formed (no TpRing since the Assign)");
    return;
  }
  const int64_t n = f.n_rows();
  batch_.pos = f.pos;
  batch_.seq = f.seq;
  batch_.logits = f.logits;
  batch_.tokens.clear();
  std::vector<SeqRun> runs;
  if (std::string err = batch_runs(batch_, stage_->n_seq(), stage_->n_ctx(), runs); !err.empty())
    throw ProtocolError("Forward: " + err);
  if (std::string err = check_forward_scratch(config_, assign_.layers.output, n, batch_.n_outputs(),
                                             [] { return meminfo_bytes("MemAvailable"); });
      !err.empty()) {
    reply_error(peer, f.request_id, stage_name() + ": " + err);
    return;
  }
  for (const SeqRun& r : runs)
    require(r.pos0 <= stage_->cache().seq_len(r.seq),
            "Forward: sequence " + std::to_string(r.seq) + " at position " + std::to_string(r.pos0) + " (cache holds " +
                std::to_string(stage_->cache().seq_len(r.seq)) + ", context " + std::to_string(assign_.n_ctx) + ")");
  require(f.stage_times.size() < kMaxStages && (!assign_.layers.embedding || f.stage_times.empty()),
          "Forward: " + std::to_string(f.stage_times.size()) + " stage times already" +
              (assign_.layers.embedding ? " (the first stage expects none)" : ""));
  // A Forward on the device hop: its hidden state follows on the hop (worker/device_hop.h), which
  // only a stage that joined one with its sender has.
  require(!f.device_hop || (prev_hop_ && !assign_.layers.embedding),
          "Forward on a device hop, but this stage has no device hop from its sender");
  require(m.tensors.size() == (f.device_hop ? 0u : 1u), "Forward carries " + std::to_string(m.tensors.size()) +
                                                           " tensors (expected " + (f.device_hop ? "0" : "1") + ")");
  const float* hidden = nullptr;
  if (f.device_hop) {
    const size_t floats = static_cast<size_t>(n * config_.n_embd);
    float* in = nullptr;
    const auto wait_start = Clock::now();
    std::string err = hop_call([&] {
      in = device_floats(*backend_, prev_hop_buf_, floats);  // (device memory may run out)
      return prev_hop_->recv(in, floats);
    });
    if (!err.empty()) {
      prev_hop_.reset();  // broken: the next assignment offers a new one
      send_to_coordinator(pack(ErrorMsg{f.request_id, stage_name() + ": the device hop from the previous stage: " + err}));
      return;
    }
    hop_in_step.pending = false;
    picked += Clock::now() - wait_start;  // waiting for the hop is the hop's time, not this stage's
    hidden = in;
  } else if (assign_.layers.embedding) {
    const Tensor& t = m.tensors[0];
    require(t.dtype == WireDType::I32 && t.shape == std::vector<int64_t>{n}, "Forward tokens must be i32 [n_tokens]");
    batch_.tokens.resize(static_cast<size_t>(n));
    std::memcpy(batch_.tokens.data(), t.data.data(), t.data.size());
    for (const int32_t id : batch_.tokens)
      require(id >= 0 && id < config_.n_vocab,
              "token id " + std::to_string(id) + " outside the vocabulary of " + std::to_string(config_.n_vocab));
  } else {
    const Tensor& t = m.tensors[0];
    require(t.dtype == assign_.act_dtype && t.shape == std::vector<int64_t>{n, config_.n_embd},
            std::string("Forward hidden state must be ") + wire_dtype_name(assign_.act_dtype) + " [n_tokens, " +
                std::to_string(config_.n_embd) + "]");
    if (t.dtype == WireDType::F32) {
      hidden = reinterpret_cast<const float*>(t.data.data());  // read in place: the stage's one copy is its input
    } else {
      in_.resize(static_cast<size_t>(n * config_.n_embd));
      const auto* p = reinterpret_cast<const uint16_t*>(t.data.data());
      for (size_t i = 0; i < in_.size(); ++i) in_[i] = f16_to_f32(p[i]);
      hidden = in_.data();
    }
  }
  if (opts_.debug_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(opts_.debug_delay_ms));
  if (opts_.debug_freeze_after > 0 && ++debug_forwards_ >= opts_.debug_freeze_after) {
    HERD_LOG_WARN("worker: frozen (--debug-freeze-after ", opts_.debug_freeze_after, ")");
    while (true) std::this_thread::sleep_for(std::chrono::seconds(1));
  }

  const int64_t n_out_floats = stage_->output_floats(batch_);
  // The output goes on over the device hop when there is one (never to a tensor-parallel group).
  const bool hop_out = next_hop_ && !assign_.layers.output && assign_.tp.rank == 0 && next_extra_.empty();
  Tensor out;
  out.dtype = WireDType::F32;
  float* dst = nullptr;
  if (hop_out) {
    if (std::string err = hop_call([&] {
          dst = device_floats(*backend_, next_hop_buf_, static_cast<size_t>(n_out_floats));
          return std::string();
        });
        !err.empty()) {
      send_to_coordinator(pack(ErrorMsg{f.request_id, stage_name() + ": no device buffer for the hop: " + err}));
      return;
    }
  } else if (assign_.layers.output || assign_.act_dtype == WireDType::F32) {
    out.data.resize(static_cast<size_t>(n_out_floats) * sizeof(float));
    dst = reinterpret_cast<float*>(out.data.data());
  } else {
    out_.resize(static_cast<size_t>(n_out_floats));
    dst = out_.data();
  }
  const auto compute_start = Clock::now();
  try {
    if (can_hop()) stage_->set_io_on_device(f.device_hop, hop_out);
    stage_->forward(batch_, hidden, dst);
  } catch (const std::exception& e) {
    send_to_coordinator(pack(ErrorMsg{f.request_id, stage_name() + ": " + e.what()}));
    return;
  }
  auto compute_end = Clock::now();
  if (assign_.tp.size > 1) {
    ++tp_forwards_;
    tp_compute_s_ += std::chrono::duration<double>(compute_end - compute_start).count();
  }
  // A tensor-parallel follower has the same output as its leader (the collectives gave every rank
  // the whole sums and logits): only the leader sends it on.
  if (assign_.tp.rank > 0) return;
  // Appends this stage's StageTime to f (just before the outgoing message is packed).
  auto stamp = [&] {
    auto us = [](Clock::duration d) {
      return std::min<uint64_t>(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(d).count()),
                                kMaxStageMicros);
    };
    const Clock::duration compute = compute_end - compute_start;
    f.stage_times.push_back({us(compute), us(Clock::now() - picked - compute)});
  };
  if (assign_.layers.output) {
    const int64_t rows = batch_.n_outputs();
    if (f.sample) {
      std::vector<int32_t> tokens;
      try {
        int64_t r = 0;
        for (size_t i = 0; i < f.logits.size(); ++i)
          if (f.logits[i]) {
            tokens.push_back(sample(f.seq[i], f.samples[static_cast<size_t>(r)], dst + r * config_.n_vocab));
            ++r;
          }
      } catch (const std::exception& e) {
        send_to_coordinator(pack(ErrorMsg{f.request_id, stage_name() + ": cannot sample: " + e.what()}));
        return;
      }
      compute_end = Clock::now();  // sampling is the last stage's compute too
      stamp();
      Result res{f.request_id, rows, std::move(tokens)};
      res.stage_times = std::move(f.stage_times);
      send_to_coordinator(pack(res));
      return;
    }
    out.shape = {rows, config_.n_vocab};
    std::vector<Tensor> ts;
    ts.push_back(std::move(out));
    stamp();
    Result res{f.request_id, rows};
    res.stage_times = std::move(f.stage_times);
    send_to_coordinator(pack(res, std::move(ts)));
    return;
  }
  if (hop_out) {  // the header on the link, then the hidden state on the hop, where the next stage waits for it
    f.device_hop = true;
    stamp();
    if (auto err = next_->send(pack(f)); !err.empty()) {
      send_to_coordinator(pack(ErrorMsg{f.request_id, stage_name() + ": cannot reach the next stage " +
                                                           assign_.next_address + ": " + err}));
      return;
    }
    if (auto err = hop_call([&] { return next_hop_->send(dst, static_cast<size_t>(n_out_floats)); }); !err.empty()) {
      next_hop_.reset();  // broken: later batches take the link until the next assignment offers a new hop
      send_to_coordinator(pack(ErrorMsg{f.request_id, stage_name() + ": the device hop to the next stage " +
                                                           assign_.next_address + ": " + err}));
    }
    return;
  }
  out.shape = {n, config_.n_embd};
  if (assign_.act_dtype == WireDType::F16) {
    out.dtype = WireDType::F16;
    to_f16_bytes(out_, out.data);
  }
  std::vector<Tensor> ts;
  ts.push_back(std::move(out));
  stamp();
  // A tensor-parallel next stage: every rank of its group gets the batch (copies first, the
  // original moved into the last send).
  for (size_t i = 0; i < next_extra_.size(); ++i)
    if (auto err = next_extra_[i]->send(pack(f, ts)); !err.empty()) {
      send_to_coordinator(pack(ErrorMsg{f.request_id, stage_name() + ": cannot reach rank " + std::to_string(i + 1) +
                                                           " of the next stage " + assign_.tp.next_addresses[i + 1] +
                                                           ": " + err}));
      return;
    }
  if (auto err = next_->send(pack(f, std::move(ts))); !err.empty())
    send_to_coordinator(pack(ErrorMsg{f.request_id, stage_name() + ": cannot reach the next stage " +
                                                         assign_.next_address + ": " + err}));
}

int32_t WorkerServer::sample(int32_t seq, const SampleSpec& s, const float* logits) {
  std::optional<Sampler>& sampler = samplers_[static_cast<size_t>(seq)];
  if (s.reset) {
    // Bounded before the Sampler reserves its window (a peer's number is not a size to allocate).
    if (s.params.repeat_last_n < 0 || static_cast<size_t>(s.params.repeat_last_n) > kMaxSampleHistory)
      throw std::invalid_argument("repeat_last_n " + std::to_string(s.params.repeat_last_n));
    sampler.reset();  // a failed rebuild leaves no stale sampler behind
    Sampler fresh(s.params, static_cast<int32_t>(config_.n_vocab));
    for (int32_t t : s.recent) fresh.accept(t);
    sampler = std::move(fresh);
  }
  if (!sampler) throw std::invalid_argument("no sampler for sequence " + std::to_string(seq) + " (not reset yet)");
  const int32_t token = sampler->sample_with_draw(logits, s.draw);
  sampler->accept(token);  // the coordinator accepts it too: the windows stay the same
  return token;
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
        if (pending_.size() < kMaxPendingMessages)
          pending_.push_back(std::move(r));  // served after the assignment
        else
          HERD_LOG_WARN("worker: a message from ", printable_peer(r.peer), " dropped: ", kMaxPendingMessages,
                        " already wait for the weight transfer to end");
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

// What a tensor-parallel rank did since its stage was made or last reset: how much of its
// compute was spent in all-reduces and logits gathers (waiting for the other ranks included), the
// figure `herd bench --tp` prints for in-process ranks.
void WorkerServer::log_tp_times() {
  if (!stage_ || tp_forwards_ == 0) return;
  const double sync = stage_->tp_sync_seconds() - tp_sync_s0_;
  char line[200];
  std::snprintf(line, sizeof line,
                "herd worker: tp rank %u of %u: %lld forwards, compute %.3f s, of which %.3f s (%.1f%%) in all-reduces "
                "and gathers",
                static_cast<unsigned>(assign_.tp.rank), static_cast<unsigned>(assign_.tp.size),
                static_cast<long long>(tp_forwards_), tp_compute_s_, sync,
                tp_compute_s_ > 0 ? 100.0 * sync / tp_compute_s_ : 0.0);
  note(line);
  tp_forwards_ = 0;
  tp_compute_s_ = 0;
  tp_sync_s0_ = stage_->tp_sync_seconds();
}

}  // namespace herd
