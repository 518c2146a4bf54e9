// The herd wire protocol between a coordinator and its workers (and from one stage to the next).
// Each message is a cereal portable-binary payload (versioned per type with CEREAL_CLASS_VERSION)
// in the frame layout of transport/codec.h; tensors travel as raw frames beside it.
//
//   coordinator -> worker   Hello        worker -> coordinator  Hello (its profile: threads, free RAM,
//                                          and since v2 of WorkerProfile its measured rates)
//   coordinator -> worker   Ping{seq, bytes} + u8[bytes]  -> Pong{seq, bytes} + the same bytes
//                             (link measurement after the Hello: a few small ones, one ~1 MiB)
//   coordinator -> worker   Assign       worker -> coordinator  Ready | Error
//                             (Assign v5: the stage's tensor digests; a worker whose copy of one
//                             differs answers Error "tensor NAME differs from the coordinator's copy")
//                             (Ready v2: the stage's measured link to the next stage)
//   coordinator -> stage 0  Forward{batch rows: position, sequence, output flag} + tokens[n] (i32)
//                             (several may be in flight: micro-batches; results come back in order)
//   stage i -> stage i+1    Hello (role upstream) once, Pings (its link measurement), then Forward + hidden[n, n_embd] (f32|f16)
//   last stage -> coordinator Result + logits[n_outputs, n_vocab] (f32), or Result{tokens} when the
//                             Forward asked the last stage to sample its output rows (generation)
//                             (since protocol 6 each stage appends its StageTime to the Forward, and
//                             the Result carries all of them back: RemotePipeline::status())
//   worker -> coordinator   WeightRequest{offset, length} while assigning, when it has no copy of
//                             the model: coordinator -> worker WeightChunk{offset, crc32} + bytes (u8)
//   any stage -> coordinator Error{request_id, message} when a Forward fails
//   coordinator -> worker   Reset (forget the KV cache) -> Ready;  Stop -> Ready, then the worker exits
//   stage i -> stage i+1    (protocol 11) after its link measurement, when stage i computes on a
//                             device that can make a device hop: HopOffer{NCCL id} -> HopAnswer
//                             declined | accepted; once accepted both join a 2-rank group, and
//                             stage i+1 answers HopAnswer joined | failed. With a joined hop a
//                             Forward{device_hop} carries no tensor: the hidden state follows on the
//                             device hop (worker/device_hop.h)
//   coordinator -> every rank of a tensor-parallel group, after their Assigns (Assign v6 `tp`;
//                             each Ready v4 says its ring listener): TpRing{addresses} -> Ready | Error
//                             once the ring (engine/ring_comm.h) is formed. Then every rank takes the
//                             stage's Forwards; only rank 0 sends on (to every rank of the next group)
//
// Roles (protocol 8): a worker belongs to the first coordinator whose Hello it accepted (by its
// connection and session id) until that coordinator's connection is gone; only the owner's Assign,
// Reset and Stop are served, Forward only from the assigned upstream (Assign::upstream_token).
// Another coordinator's Hello is answered Error "busy: owned by NAME since TIME" unless it sets
// take_over: then the old owner gets Error "worker W was taken over by NAME". Anything else from a
// peer that may not send it is answered Error "refused: ..." and changes nothing.
//
// Every peer must open with a Hello whose protocol_version equals kProtocolVersion. Strings are
// bounded on load (a garbage length never allocates), and unpack() rejects trailing bytes.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cluster/tensor_hashes.h"
#include "cluster/wire.h"
#include "cluster/worker_profile.h"
#include "engine/nccl_bootstrap.h"
#include "engine/sampler.h"
#include "model/weights.h"

namespace herd::cluster {

// 2: sampling on the last stage, weight transfer; 3: worker profile (WorkerProfile v2), Ping/Pong,
// Ready v2 (measured link to the next stage); 4: the data lane handshake (transport/zmq_link.h),
// which a link opens with before its Hello; 5: batches of several sequences (Forward/Result v3,
// Assign v3: sequence slots and KV type), the last stage keeps each sequence's sampler; 6: stage
// times (Forward/Result v4), Ready v3 (the stage's device and memory), SampleSpec v3 (frequency and
// presence penalties); 7: links authenticated and encrypted by default (transport/security.h:
// CURVE + ZAP on ZeroMQ; the LaneOffer carries a session secret and lanes are sealed with
// ChaCha20-Poly1305 per message); --insecure keeps version 6's wire format on both channels;
// 8: authorisation by role (Hello v2: session and take_over; Assign v4: the link tokens that bind a
// stage to its upstream): a worker takes Assign/Reset/Stop only from the coordinator that owns it,
// Forward only from its assigned upstream, and a second coordinator is told "busy"; 9: weight
// integrity (Assign v5: the BLAKE2b-256 of each of the stage's tensors, cluster/tensor_hashes.h): a
// worker whose copy of a tensor differs refuses the Assign naming it, and checks what it is sent;
// 10: tensor parallelism over workers (Assign v6: the TP section; Ready v4: the ring listener's
// address; TpRing: the group's ring addresses, answered Ready | Error once the ring is formed);
// 11: stage hops between devices (HopOffer, HopAnswer; Forward v5: device_hop)
constexpr uint32_t kProtocolVersion = 11;

enum class Role : uint8_t { Coordinator = 0, Worker = 1, Upstream = 2 };

struct Hello {
  static constexpr MsgType kType = MsgType::Hello;
  uint32_t protocol_version = kProtocolVersion;
  Role role = Role::Coordinator;
  WorkerProfile profile;  // meaningful when role == Worker
  std::string name;       // free text for logs (host name, "stage 1")
  // v2. Coordinator: its session id (random per process, secret: it travels only inside CURVE), by
  // which a worker recognises its owner when it reconnects. Upstream: the link token of the Assign
  // (Assign::next_token) that makes this peer the next stage's upstream. Empty from a worker.
  std::string session;
  bool take_over = false;  // coordinator: take the worker from its current owner (--take-over)
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 2, "Hello");
    uint8_t r = static_cast<uint8_t>(role);
    ar(protocol_version, r, profile);
    if (r > static_cast<uint8_t>(Role::Upstream)) throw ProtocolError("Hello: unknown role " + std::to_string(r));
    role = static_cast<Role>(r);
    detail::bounded_string(ar, name, 256, "Hello.name");
    if (v >= 2) {
      detail::bounded_string(ar, session, 64, "Hello.session");
      detail::boolean(ar, take_over, "Hello.take_over");
    }
  }
};

// A layer range any model could have: 0 <= first < end <= kMaxLayers, and the embedding on the
// stage that starts at layer 0 (and only there). Throws ProtocolError "Assign: layer range ...".
constexpr int64_t kMaxLayers = int64_t{1} << 16;
void check_layer_range(const model::LayerRange& r);

// The model hash is the SHA-256 of the GGUF file's bytes [0, data_offset): header, metadata and
// tensor directory (names, shapes, types, offsets). Two files with the same hash have the same
// architecture, tokenizer and tensor layout (cluster/model_fingerprint.h). The weights are covered
// by tensor_digests (v5): the BLAKE2b-256 of each tensor's bytes, exactly the stage's tensors.
constexpr size_t kMaxStageTensors = size_t{1} << 20;
constexpr size_t kMaxTensorName = 1024;
namespace detail {
// At most kMaxStageTensors entries; read one by one (a claimed count allocates nothing: each entry
// needs its bytes in the payload), each name at most kMaxTensorName bytes, each digest 32 bytes.
template <class Archive>
void tensor_digests(Archive& ar, std::vector<TensorDigest>& v, const char* field) {
  uint64_t n = v.size();
  ar(n);
  if constexpr (Archive::is_loading::value) {
    if (n > kMaxStageTensors)
      throw ProtocolError(std::string(field) + " has " + std::to_string(n) + " entries (max " +
                          std::to_string(kMaxStageTensors) + ")");
    v.clear();
    for (uint64_t i = 0; i < n; ++i) {
      TensorDigest d;
      bounded_string(ar, d.name, kMaxTensorName, field);
      ar(cereal::binary_data(d.blake2b.data(), d.blake2b.size()));
      v.push_back(std::move(d));
    }
  } else {
    for (auto& d : v) {
      bounded_string(ar, d.name, kMaxTensorName, field);
      ar(cereal::binary_data(d.blake2b.data(), d.blake2b.size()));
    }
  }
}
}  // namespace detail

// Tensor parallelism (protocol 10): a stage may be a group of `size` workers, each running rank
// `rank`'s shard of the stage's layers (engine/tp_shard.h) with the plan every rank computes from
// the same `weights` (engine/shard_plan.h plan_shards). Every rank takes the stage's Forwards; only
// rank 0 sends its output on: to every address of `next_addresses` (the next group's ranks; empty
// for the last stage or a follower), or to the coordinator. sync: engine/tp_sync.h TpSync (0 f32,
// 1 f16, 2 q8). ring_timeout_ms: how long a collective may wait for a silent rank.
constexpr uint32_t kMaxTpRanks = 256;
constexpr size_t kMaxAddress = 1024;
constexpr int32_t kMaxRingTimeoutMs = 86400 * 1000;
namespace detail {
// At most `max` strings of at most kMaxAddress bytes, read one by one (a claimed count allocates nothing).
template <class Archive>
void bounded_strings(Archive& ar, std::vector<std::string>& v, size_t max, const char* field) {
  uint64_t n = v.size();
  ar(n);
  if constexpr (Archive::is_loading::value) {
    if (n > max)
      throw ProtocolError(std::string(field) + " has " + std::to_string(n) + " entries (max " + std::to_string(max) + ")");
    v.clear();
    for (uint64_t i = 0; i < n; ++i) {
      std::string s;
      bounded_string(ar, s, kMaxAddress, field);
      v.push_back(std::move(s));
    }
  } else {
    for (auto& s : v) bounded_string(ar, s, kMaxAddress, field);
  }
}
}  // namespace detail

struct TpAssign {
  uint32_t rank = 0;
  uint32_t size = 1;            // 1: not tensor-parallel (the rest is empty)
  std::vector<double> weights;  // one per rank, finite and positive (relative speeds); empty when size is 1
  uint8_t sync = 0;
  std::vector<std::string> next_addresses;
  int32_t ring_timeout_ms = 30000;
  bool operator==(const TpAssign&) const = default;
  template <class A> void serialize(A& ar) {
    ar(rank, size);
    if (size < 1 || size > kMaxTpRanks || rank >= size)
      throw ProtocolError("Assign: tensor-parallel rank " + std::to_string(rank) + " of " + std::to_string(size) +
                          " (1.." + std::to_string(kMaxTpRanks) + " ranks)");
    uint64_t n = weights.size();
    ar(n);
    if constexpr (A::is_loading::value) {
      if (n != (size > 1 ? size : 0))  // one per rank; none without tensor parallelism
        throw ProtocolError("Assign: " + std::to_string(n) + " tensor-parallel weights for " + std::to_string(size) +
                            (size > 1 ? " ranks" : " rank (none expected)"));
      weights.resize(static_cast<size_t>(n));
    }
    for (double& w : weights) {
      ar(w);
      if (!std::isfinite(w) || !(w > 0) || w > 1e18)
        throw ProtocolError("Assign: tensor-parallel weight " + std::to_string(w) + " (must be finite and positive)");
    }
    ar(sync);
    if (sync > 2) throw ProtocolError("Assign: tensor-parallel sync " + std::to_string(sync) + " (0 f32, 1 f16, 2 q8)");
    detail::bounded_strings(ar, next_addresses, kMaxTpRanks, "Assign.tp.next_addresses");
    ar(ring_timeout_ms);
    if (ring_timeout_ms < 1 || ring_timeout_ms > kMaxRingTimeoutMs)
      throw ProtocolError("Assign: ring timeout " + std::to_string(ring_timeout_ms) + " ms");
  }
};

struct Assign {
  static constexpr MsgType kType = MsgType::Assign;
  uint64_t session = 0;       // coordinator's assignment id (echoed in logs)
  std::string model_hash;     // hex sha256, see above
  std::string model_path;     // hint: where the coordinator's copy is (used when the worker has no -m)
  // The stage's layers [first, end); embedding: the first stage (takes token ids); output: the last
  // stage (returns logits). On the wire as first, end, is_first, is_last; checked on load
  // (check_layer_range), the end against the model's layer count by the worker.
  model::LayerRange layers{0, 0, false, false};
  int64_t n_ctx = 0;
  int64_t n_seq = 1;                     // v3: sequence slots of the KV cache (--parallel)
  DType kv_type = DType::F32;            // v3: KV storage, F32 | F16 | Q8_0
  WireDType act_dtype = WireDType::F32;  // hidden states between stages: F32 or F16
  std::string next_address;   // the next stage's listen address ("" when is_last)
  std::string backend_isa = "auto";  // CPU kernels the coordinator would use locally (same kernels = same bits)
  bool exact = false;                // f32 dot products (no 8-bit activation quantization)
  // For a worker without its own copy: the coordinator's file size and the bytes [0, header_bytes)
  // that model_hash covers (the worker fetches them, checks the hash, then fetches its tensors).
  uint64_t file_size = 0;
  uint64_t header_bytes = 0;
  // v4: link tokens (random per assignment, secret). The stage takes Forward messages only from a
  // peer whose Upstream Hello carried upstream_token (the first stage: only from its owner), and
  // says next_token in its own Hello to the next stage.
  std::string upstream_token;
  std::string next_token;
  // v5: the BLAKE2b-256 of each tensor of the stage (model::stage_tensor_names), as the
  // coordinator's file has them. The worker compares its own copy's (or what it was sent) and
  // refuses the Assign naming the first tensor that differs.
  std::vector<TensorDigest> tensor_digests;
  // v6: tensor parallelism (size 1: none).
  TpAssign tp;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 6, "Assign");
    ar(session);
    detail::bounded_string(ar, model_hash, 128, "Assign.model_hash");
    detail::bounded_string(ar, model_path, 4096, "Assign.model_path");
    uint8_t dt = static_cast<uint8_t>(act_dtype);
    ar(layers.first, layers.end);
    detail::boolean(ar, layers.embedding, "Assign.embedding");
    detail::boolean(ar, layers.output, "Assign.output");
    ar(n_ctx, dt);
    if constexpr (A::is_loading::value) check_layer_range(layers);
    if (dt != static_cast<uint8_t>(WireDType::F32) && dt != static_cast<uint8_t>(WireDType::F16))
      throw ProtocolError("Assign: activation dtype " + std::to_string(dt) + " (must be f32 or f16)");
    act_dtype = static_cast<WireDType>(dt);
    detail::bounded_string(ar, next_address, 1024, "Assign.next_address");
    detail::bounded_string(ar, backend_isa, 32, "Assign.backend_isa");
    detail::boolean(ar, exact, "Assign.exact");
    if (v >= 2) ar(file_size, header_bytes);
    if (v >= 3) {
      auto kv = static_cast<uint32_t>(kv_type);
      ar(n_seq, kv);
      if (n_seq < 1 || n_seq > kMaxSeqSlots)
        throw ProtocolError("Assign: " + std::to_string(n_seq) + " sequence slots (1.." + std::to_string(kMaxSeqSlots) + ")");
      if (kv != static_cast<uint32_t>(DType::F32) && kv != static_cast<uint32_t>(DType::F16) &&
          kv != static_cast<uint32_t>(DType::Q8_0))
        throw ProtocolError("Assign: KV type " + std::to_string(kv) + " (must be f32, f16 or q8_0)");
      kv_type = static_cast<DType>(kv);
    }
    if (v >= 4) {
      detail::bounded_string(ar, upstream_token, 64, "Assign.upstream_token");
      detail::bounded_string(ar, next_token, 64, "Assign.next_token");
    }
    if (v >= 5) detail::tensor_digests(ar, tensor_digests, "Assign.tensor_digests");
    if (v >= 6) tp.serialize(ar);
  }
};

// A measured link (cluster/link_measure.h): one-way latency and bandwidth.
struct LinkStats {
  double latency_s = 0;
  double bandwidth_Bps = 0;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "LinkStats");
    detail::bounded_number(ar, latency_s, kMaxSeconds, "LinkStats.latency_s");
    detail::bounded_number(ar, bandwidth_Bps, kMaxRateBps, "LinkStats.bandwidth_Bps");
  }
};

constexpr uint64_t kMaxStageBytes = uint64_t{1} << 50;  // 1 PiB: more than any host holds
struct Ready {
  static constexpr MsgType kType = MsgType::Ready;
  std::string info;
  // v2: after an Assign of a non-last stage, its measured link to the next stage.
  bool has_next_link = false;
  LinkStats next_link;
  // v3: after an Assign, what the stage runs on (Backend::description(), "cpu-avx2-q8, 4 threads")
  // and the bytes it holds (its tensors + the KV cache allocated); for status pages only.
  std::string device;
  uint64_t memory_bytes = 0;
  // v4: after an Assign of a tensor-parallel rank, the address its ring listener is bound to (the
  // coordinator puts the host it dialled in place of a wildcard one); "" otherwise.
  std::string ring_address;
  Ready() = default;
  Ready(std::string info_) : info(std::move(info_)) {}  // NOLINT: Ready{"text"} as before v2
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 4, "Ready");
    detail::bounded_string(ar, info, 4096, "Ready.info");
    if (v >= 2) {
      detail::boolean(ar, has_next_link, "Ready.has_next_link");
      if (has_next_link) ar(next_link);
    }
    if (v >= 3) {
      detail::bounded_string(ar, device, 256, "Ready.device");
      ar(memory_bytes);
      if (memory_bytes > kMaxStageBytes) throw ProtocolError("Ready: memory " + std::to_string(memory_bytes) + " bytes");
    }
    if (v >= 4) detail::bounded_string(ar, ring_address, kMaxAddress, "Ready.ring_address");
  }
};

struct ErrorMsg {
  static constexpr MsgType kType = MsgType::Error;
  uint64_t request_id = 0;  // 0: not about a request
  std::string message;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "Error");
    ar(request_id);
    detail::bounded_string(ar, message, 4096, "Error.message");
  }
};

// How the last stage samples one output row. The last stage keeps a Sampler per sequence slot
// (parameters and repeat-penalty window), so a decode step carries only `draw`: the 64-bit value
// the coordinator's Sampler::next_draw() gave for this step (0 when greedy; the RNG stays with the
// coordinator, so a seed gives the same text locally and on a cluster, and survives a restarted
// worker). The last stage accepts each token it samples into that sequence's window, as the
// coordinator does. `reset` (a new request, new parameters, a window that is not what the last
// stage would hold, a reconnected cluster) replaces the slot's sampler: `params` (the seed
// excepted) and `recent`, oldest first. Parameters are checked where the Sampler is built (a bad
// one is an Error reply); `recent` is bounded on load.
constexpr size_t kMaxSampleHistory = 1 << 16;
struct SampleSpec {
  uint64_t draw = 0;
  bool reset = false;
  SamplerParams params;         // with reset
  std::vector<int32_t> recent;  // with reset
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 3, "SampleSpec");
    if (v < 3) throw ProtocolError("SampleSpec v" + std::to_string(v) + " predates protocol 6");
    ar(draw);
    detail::boolean(ar, reset, "SampleSpec.reset");
    if (!reset) return;
    // Field by field, each with its wire width (SamplerParams' ints are i32 on the wire).
    int32_t top_k = params.top_k, repeat_last_n = params.repeat_last_n;
    ar(params.temperature, top_k, params.top_p, params.min_p, params.repeat_penalty, repeat_last_n,
       params.frequency_penalty, params.presence_penalty);
    params.top_k = top_k;
    params.repeat_last_n = repeat_last_n;
    detail::bounded_i32s(ar, recent, kMaxSampleHistory, "SampleSpec.recent");
  }
};

// What one stage spent on one batch, in microseconds of its own steady clock (durations only: no
// clock is shared between hosts, so no stage's time stamps travel). compute: Stage::forward (+
// sampling, on the last stage); overhead: the rest of the worker's handling, from picking the
// Forward up to packing what it sends on (unpack, checks, f16 conversion). The time a message
// waited in a socket queue or on a wire is in neither: the coordinator derives it (hop times).
constexpr size_t kMaxStages = 1024;
constexpr uint64_t kMaxStageMicros = uint64_t{3600} * 1000 * 1000;  // an hour per batch
struct StageTime {
  uint64_t compute_us = 0;
  uint64_t overhead_us = 0;
  bool operator==(const StageTime&) const = default;
};
namespace detail {
// At most kMaxStages entries (checked before any allocation), each time at most kMaxStageMicros.
template <class Archive>
void stage_times(Archive& ar, std::vector<StageTime>& v, const char* field) {
  uint64_t n = v.size();
  ar(n);
  if constexpr (Archive::is_loading::value) {
    if (n > kMaxStages)
      throw ProtocolError(std::string(field) + " has " + std::to_string(n) + " entries (max " + std::to_string(kMaxStages) + ")");
    v.resize(n);
  }
  for (auto& t : v) {
    ar(t.compute_us, t.overhead_us);
    if constexpr (Archive::is_loading::value)
      if (t.compute_us > kMaxStageMicros || t.overhead_us > kMaxStageMicros)
        throw ProtocolError(std::string(field) + ": " + std::to_string(t.compute_us) + " + " +
                            std::to_string(t.overhead_us) + " us (max " + std::to_string(kMaxStageMicros) + " each)");
  }
}
}  // namespace detail

// A batch (engine/batch.h) of n rows: + tensor 0: tokens i32 [n] (to the first stage) or hidden
// [n, n_embd] (f32|f16). pos/seq/logits are the rows' positions, sequence slots and output flags
// (checked by the stage against its slots and context); with `sample`, `samples` has one entry per
// output row and the last stage returns their tokens instead of logits. v4: stage_times, one entry
// per stage the batch has passed (empty from the coordinator; each stage appends its own).
// v5: device_hop: no tensor; the hidden state [n, n_embd] (f32) follows on the device hop the two
// stages joined (HopOffer below). A stage without such a hop from its sender refuses it.
constexpr size_t kMaxBatchRows = 1 << 16;
struct Forward {
  static constexpr MsgType kType = MsgType::Forward;
  uint64_t request_id = 0;
  std::vector<int32_t> pos, seq;
  std::vector<uint8_t> logits;
  bool sample = false;
  std::vector<SampleSpec> samples;
  std::vector<StageTime> stage_times;  // v4
  bool device_hop = false;             // v5
  Forward() = default;
  // One sequence's n rows at positions pos0..: outputs for the last row, or all of them.
  Forward(uint64_t request_id_, int64_t pos0, int64_t n, bool all_logits, int32_t seq_id = 0);
  int64_t n_rows() const { return static_cast<int64_t>(pos.size()); }
  int64_t n_outputs() const;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 5, "Forward");
    if (v < 4) throw ProtocolError("Forward v" + std::to_string(v) + " predates protocol 6");
    ar(request_id);
    detail::bounded_i32s(ar, pos, kMaxBatchRows, "Forward.pos");
    detail::bounded_i32s(ar, seq, kMaxBatchRows, "Forward.seq");
    uint64_t n = logits.size();
    ar(n);
    if constexpr (A::is_loading::value) {
      if (n != pos.size() || seq.size() != pos.size() || n == 0)
        throw ProtocolError("Forward: " + std::to_string(pos.size()) + " positions, " + std::to_string(seq.size()) +
                            " sequence ids, " + std::to_string(n) + " output flags (equal and non-zero)");
      logits.resize(n);
    }
    ar(cereal::binary_data(logits.data(), logits.size()));
    detail::boolean(ar, sample, "Forward.sample");
    uint64_t ns = samples.size();
    ar(ns);
    if constexpr (A::is_loading::value) {
      for (uint8_t f : logits)
        if (f > 1) throw ProtocolError("Forward: output flag " + std::to_string(f));
      if (ns != (sample ? static_cast<uint64_t>(n_outputs()) : 0))
        throw ProtocolError("Forward: " + std::to_string(ns) + " sample specs for " + std::to_string(n_outputs()) +
                            " output rows");
      samples.resize(ns);
    }
    for (auto& s : samples) ar(s);
    detail::stage_times(ar, stage_times, "Forward.stage_times");
    if (v >= 5) detail::boolean(ar, device_hop, "Forward.device_hop");
  }
};

// + tensor 0: logits f32 [n_rows, n_vocab] (n_rows = the Forward's output rows); or, when the
// Forward had `sample`, no tensor and the sampled `tokens` (one per output row). v4: stage_times,
// the Forward's plus the last stage's own (one per stage, in stage order).
struct Result {
  static constexpr MsgType kType = MsgType::Result;
  uint64_t request_id = 0;
  int64_t n_rows = 0;
  std::vector<int32_t> tokens;
  std::vector<StageTime> stage_times;  // v4
  Result() = default;
  Result(uint64_t request_id_, int64_t n_rows_, std::vector<int32_t> tokens_ = {})
      : request_id(request_id_), n_rows(n_rows_), tokens(std::move(tokens_)) {}
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 4, "Result");
    if (v < 4) throw ProtocolError("Result v" + std::to_string(v) + " predates protocol 6");
    ar(request_id, n_rows);
    if (n_rows < 0 || static_cast<uint64_t>(n_rows) > kMaxBatchRows)
      throw ProtocolError("Result: " + std::to_string(n_rows) + " rows");
    detail::bounded_i32s(ar, tokens, kMaxBatchRows, "Result.tokens");
    detail::stage_times(ar, stage_times, "Result.stage_times");
  }
};

// Weight transfer (a worker with no copy of the model): the worker asks for the file bytes
// [offset, offset + length) of the coordinator's GGUF — the header (< header_bytes), or one of
// its own tensors — at most kMaxWeightChunk at a time; the coordinator serves only those ranges.
constexpr uint64_t kMaxWeightChunk = uint64_t{4} << 20;
struct WeightRequest {
  static constexpr MsgType kType = MsgType::WeightRequest;
  uint64_t session = 0;  // the Assign's session
  uint64_t offset = 0;
  uint64_t length = 0;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "WeightRequest");
    ar(session, offset, length);
    if (length == 0 || length > kMaxWeightChunk) throw ProtocolError("WeightRequest: length " + std::to_string(length));
  }
};

// + tensor 0: u8 [length] = the requested bytes; crc32 (IEEE, transport/crc32.h) of them.
struct WeightChunk {
  static constexpr MsgType kType = MsgType::WeightChunk;
  uint64_t session = 0;
  uint64_t offset = 0;
  uint32_t crc32 = 0;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "WeightChunk");
    ar(session, offset, crc32);
  }
};

// Link measurement: Ping + (bytes > 0) one u8 [bytes] tensor; the peer answers Pong with the same
// seq, bytes and tensor. Any peer that completed a Hello may ping a worker.
constexpr uint64_t kMaxPingBytes = uint64_t{4} << 20;
struct Ping {
  static constexpr MsgType kType = MsgType::Ping;
  uint64_t seq = 0;
  uint64_t bytes = 0;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "Ping");
    ar(seq, bytes);
    if (bytes > kMaxPingBytes) throw ProtocolError("Ping: " + std::to_string(bytes) + " bytes (max " + std::to_string(kMaxPingBytes) + ")");
  }
};
struct Pong {
  static constexpr MsgType kType = MsgType::Pong;
  uint64_t seq = 0;
  uint64_t bytes = 0;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "Pong");
    ar(seq, bytes);
    if (bytes > kMaxPingBytes) throw ProtocolError("Pong: " + std::to_string(bytes) + " bytes (max " + std::to_string(kMaxPingBytes) + ")");
  }
};
// Throws ProtocolError unless `m` carries exactly what its Ping/Pong says: no tensor when bytes is 0,
// else one u8 [bytes] tensor.
void check_echo_payload(const Message& m, uint64_t bytes);

// Coordinator -> every rank of a tensor-parallel group, after each answered its Assign: the ring
// listeners' addresses in rank order (one per rank of the Assign's group). Each rank forms the ring
// (engine/ring_comm.h make_ring_comm, within the Assign's ring timeout) and answers Ready | Error.
struct TpRing {
  static constexpr MsgType kType = MsgType::TpRing;
  uint64_t session = 0;  // the Assign's
  std::vector<std::string> addresses;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "TpRing");
    ar(session);
    detail::bounded_strings(ar, addresses, kMaxTpRanks, "TpRing.addresses");
    if (addresses.size() < 2) throw ProtocolError("TpRing: " + std::to_string(addresses.size()) + " addresses (at least 2)");
  }
};

// Stage hops between devices (protocol 11; worker/device_hop.h). A non-last stage on a device that
// can make a device hop offers one to the next stage right after its link measurement: `id` is the
// 2-rank group's NCCL id as engine/nccl_bootstrap.h's checked message (encode_nccl_id: rank 0's
// id, group tag nccl_group_tag of the link token, so only this assignment's upstream can offer
// it), exactly kNcclIdMessageBytes; the receiver decodes and checks it (decode_nccl_id).
struct HopOffer {
  static constexpr MsgType kType = MsgType::HopOffer;
  std::string id;
  // The offering worker's host (common/host_identity.h) and whether it lets NCCL cross hosts
  // (--nccl-across-hosts): a hop between hosts needs both ends to allow it.
  uint64_t host = 0;
  bool across_hosts = false;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "HopOffer");
    uint64_t n = id.size();
    ar(n);
    if (n != kNcclIdMessageBytes)
      throw ProtocolError("HopOffer: an id of " + std::to_string(n) + " bytes (must be " +
                          std::to_string(kNcclIdMessageBytes) + ")");
    if constexpr (A::is_loading::value) id.resize(n);
    ar(cereal::binary_data(id.data(), n));
    ar(host);
    detail::boolean(ar, across_hosts, "HopOffer.across_hosts");
  }
};

// The next stage's answers to a HopOffer: first Declined (with the reason: a CPU stage, a
// tensor-parallel one, f16 activations, a refused id; the hop stays on the link) or Accepted; after
// Accepted both ends join the group (within the worker's hop timeout) and the next stage says
// Joined, or Failed with the reason (the hop stays on the link).
enum class HopState : uint8_t { Declined = 0, Accepted = 1, Joined = 2, Failed = 3 };
struct HopAnswer {
  static constexpr MsgType kType = MsgType::HopAnswer;
  HopState state = HopState::Declined;
  std::string reason;  // with Declined / Failed
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "HopAnswer");
    uint8_t s = static_cast<uint8_t>(state);
    ar(s);
    if (s > static_cast<uint8_t>(HopState::Failed))
      throw ProtocolError("HopAnswer: unknown state " + std::to_string(s));
    state = static_cast<HopState>(s);
    detail::bounded_string(ar, reason, 1024, "HopAnswer.reason");
  }
};

struct Reset {
  static constexpr MsgType kType = MsgType::Reset;
  template <class A> void serialize(A& ar, uint32_t v) { detail::check_version<A>(v, 1, "Reset"); }
};

struct Stop {
  static constexpr MsgType kType = MsgType::Stop;
  template <class A> void serialize(A& ar, uint32_t v) { detail::check_version<A>(v, 1, "Stop"); }
};

}  // namespace herd::cluster


CEREAL_CLASS_VERSION(herd::cluster::Hello, 2)
CEREAL_CLASS_VERSION(herd::cluster::Assign, 6)
CEREAL_CLASS_VERSION(herd::cluster::Ready, 4)
CEREAL_CLASS_VERSION(herd::cluster::TpRing, 1)
CEREAL_CLASS_VERSION(herd::cluster::LinkStats, 1)
CEREAL_CLASS_VERSION(herd::cluster::Ping, 1)
CEREAL_CLASS_VERSION(herd::cluster::Pong, 1)
CEREAL_CLASS_VERSION(herd::cluster::ErrorMsg, 1)
CEREAL_CLASS_VERSION(herd::cluster::SampleSpec, 3)
CEREAL_CLASS_VERSION(herd::cluster::Forward, 5)
CEREAL_CLASS_VERSION(herd::cluster::HopOffer, 1)
CEREAL_CLASS_VERSION(herd::cluster::HopAnswer, 1)
CEREAL_CLASS_VERSION(herd::cluster::Result, 4)
CEREAL_CLASS_VERSION(herd::cluster::WeightRequest, 1)
CEREAL_CLASS_VERSION(herd::cluster::WeightChunk, 1)
CEREAL_CLASS_VERSION(herd::cluster::Reset, 1)
CEREAL_CLASS_VERSION(herd::cluster::Stop, 1)
