// The herd wire protocol between a coordinator and its workers (and from one stage to the next).
// Each message is a cereal portable-binary payload (versioned per type with CEREAL_CLASS_VERSION)
// in the frame layout of transport/codec.h; tensors travel as raw frames beside it.
//
//   coordinator -> worker   Hello        worker -> coordinator  Hello (its profile: threads, free RAM,
//                                          and since v2 of WorkerProfile its measured rates)
//   coordinator -> worker   Ping{seq, bytes} + u8[bytes]  -> Pong{seq, bytes} + the same bytes
//                             (link measurement after the Hello: a few small ones, one ~1 MiB)
//   coordinator -> worker   Assign       worker -> coordinator  Ready | Error
//                             (Ready v2: the stage's measured link to the next stage)
//   coordinator -> stage 0  Forward + tokens[n] (i32)
//   stage i -> stage i+1    Hello (role upstream) once, Pings (its link measurement), then Forward + hidden[n, n_embd] (f32|f16)
//   last stage -> coordinator Result + logits[n_rows, n_vocab] (f32), or Result{token} when the
//                             Forward asked the last stage to sample (Forward.sample, generation)
//   worker -> coordinator   WeightRequest{offset, length} while assigning, when it has no copy of
//                             the model: coordinator -> worker WeightChunk{offset, crc32} + bytes (u8)
//   any stage -> coordinator Error{request_id, message} when a Forward fails
//   coordinator -> worker   Reset (forget the KV cache) -> Ready;  Stop -> Ready, then the worker exits
//
// Every peer must open with a Hello whose protocol_version equals kProtocolVersion. Strings are
// bounded on load (a garbage length never allocates), and unpack() rejects trailing bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cluster/wire.h"
#include "cluster/worker_profile.h"
#include "engine/sampler.h"
#include "model/weights.h"

namespace herd::cluster {

// 2: sampling on the last stage, weight transfer; 3: worker profile (WorkerProfile v2), Ping/Pong,
// Ready v2 (measured link to the next stage); 4: the data lane handshake (transport/zmq_link.h),
// which a link opens with before its Hello
constexpr uint32_t kProtocolVersion = 4;

enum class Role : uint8_t { Coordinator = 0, Worker = 1, Upstream = 2 };

struct Hello {
  static constexpr MsgType kType = MsgType::Hello;
  uint32_t protocol_version = kProtocolVersion;
  Role role = Role::Coordinator;
  WorkerProfile profile;  // meaningful when role == Worker
  std::string name;       // free text for logs (host name, "stage 1")
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "Hello");
    uint8_t r = static_cast<uint8_t>(role);
    ar(protocol_version, r, profile);
    if (r > static_cast<uint8_t>(Role::Upstream)) throw ProtocolError("Hello: unknown role " + std::to_string(r));
    role = static_cast<Role>(r);
    detail::bounded_string(ar, name, 256, "Hello.name");
  }
};

// A layer range any model could have: 0 <= first < end <= kMaxLayers, and the embedding on the
// stage that starts at layer 0 (and only there). Throws ProtocolError "Assign: layer range ...".
constexpr int64_t kMaxLayers = int64_t{1} << 16;
void check_layer_range(const model::LayerRange& r);

// The model hash is the SHA-256 of the GGUF file's bytes [0, data_offset): header, metadata and
// tensor directory (names, shapes, types, offsets). Two files with the same hash have the same
// architecture, tokenizer and tensor layout; the weights themselves are not hashed (that would read
// the whole file) — see cluster/model_fingerprint.h.
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
  WireDType act_dtype = WireDType::F32;  // hidden states between stages: F32 or F16
  std::string next_address;   // the next stage's listen address ("" when is_last)
  std::string backend_isa = "auto";  // CPU kernels the coordinator would use locally (same kernels = same bits)
  bool exact = false;                // f32 dot products (no 8-bit activation quantization)
  // For a worker without its own copy: the coordinator's file size and the bytes [0, header_bytes)
  // that model_hash covers (the worker fetches them, checks the hash, then fetches its tensors).
  uint64_t file_size = 0;
  uint64_t header_bytes = 0;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 2, "Assign");
    ar(session);
    detail::bounded_string(ar, model_hash, 128, "Assign.model_hash");
    detail::bounded_string(ar, model_path, 4096, "Assign.model_path");
    uint8_t dt = static_cast<uint8_t>(act_dtype);
    ar(layers.first, layers.end, layers.embedding, layers.output, n_ctx, dt);
    if constexpr (A::is_loading::value) check_layer_range(layers);
    if (dt != static_cast<uint8_t>(WireDType::F32) && dt != static_cast<uint8_t>(WireDType::F16))
      throw ProtocolError("Assign: activation dtype " + std::to_string(dt) + " (must be f32 or f16)");
    act_dtype = static_cast<WireDType>(dt);
    detail::bounded_string(ar, next_address, 1024, "Assign.next_address");
    detail::bounded_string(ar, backend_isa, 32, "Assign.backend_isa");
    ar(exact);
    if (v >= 2) ar(file_size, header_bytes);
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

struct Ready {
  static constexpr MsgType kType = MsgType::Ready;
  std::string info;
  // v2: after an Assign of a non-last stage, its measured link to the next stage.
  bool has_next_link = false;
  LinkStats next_link;
  Ready() = default;
  Ready(std::string info_) : info(std::move(info_)) {}  // NOLINT: Ready{"text"} as before v2
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 2, "Ready");
    detail::bounded_string(ar, info, 4096, "Ready.info");
    if (v >= 2) {
      ar(has_next_link);
      if (has_next_link) ar(next_link);
    }
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

// The request's sampler for the last stage to apply to the last token's logits: its parameters
// (engine/sampler.h SamplerParams, the seed excepted: it stays with the coordinator), the draw and
// the repeat-penalty window, from which the last stage builds its Sampler directly. The coordinator
// keeps the RNG: `draw` is the 64-bit value its Sampler::next_draw() gave for this step (0 when
// greedy), so the token stream for a seed is the same locally and on a cluster, and survives a
// restarted worker. `recent` is the repeat-penalty window, oldest first (bounded on load; the
// parameters themselves are checked where the Sampler is built, a bad one is an Error reply).
constexpr size_t kMaxSampleHistory = 1 << 16;
struct SampleSpec {
  SamplerParams params;
  uint64_t draw = 0;
  std::vector<int32_t> recent;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "SampleSpec");
    // Field by field, each with its wire width (SamplerParams' ints are i32 on the wire).
    int32_t top_k = params.top_k, repeat_last_n = params.repeat_last_n;
    ar(params.temperature, top_k, params.top_p, params.min_p, params.repeat_penalty, repeat_last_n, draw);
    params.top_k = top_k;
    params.repeat_last_n = repeat_last_n;
    detail::bounded_i32s(ar, recent, kMaxSampleHistory, "SampleSpec.recent");
  }
};

// + tensor 0: tokens i32 [n_tokens] (to the first stage) or hidden [n_tokens, n_embd] (f32|f16).
// sample: the last stage samples the last token's row with `sampling` and returns Result{token}
// (all_logits must be false).
struct Forward {
  static constexpr MsgType kType = MsgType::Forward;
  uint64_t request_id = 0;
  int64_t pos0 = 0;
  int64_t n_tokens = 0;
  bool all_logits = false;
  bool sample = false;
  SampleSpec sampling;
  Forward() = default;
  Forward(uint64_t request_id_, int64_t pos0_, int64_t n_tokens_, bool all_logits_)
      : request_id(request_id_), pos0(pos0_), n_tokens(n_tokens_), all_logits(all_logits_) {}
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 2, "Forward");
    ar(request_id, pos0, n_tokens, all_logits);
    if (v >= 2) {
      ar(sample);
      if (sample) ar(sampling);
      if (sample && all_logits) throw ProtocolError("Forward: sample and all_logits are exclusive");
    }
  }
};

// + tensor 0: logits f32 [n_rows, n_vocab] (n_rows = n_tokens when all_logits, else 1);
// or, when the Forward had `sample`, no tensor, n_rows = 0 and the sampled `token`.
struct Result {
  static constexpr MsgType kType = MsgType::Result;
  uint64_t request_id = 0;
  int64_t n_rows = 0;
  int32_t token = -1;
  Result() = default;
  Result(uint64_t request_id_, int64_t n_rows_, int32_t token_ = -1)
      : request_id(request_id_), n_rows(n_rows_), token(token_) {}
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 2, "Result");
    ar(request_id, n_rows);
    if (v >= 2) ar(token);
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

struct Reset {
  static constexpr MsgType kType = MsgType::Reset;
  template <class A> void serialize(A& ar, uint32_t v) { detail::check_version<A>(v, 1, "Reset"); }
};

struct Stop {
  static constexpr MsgType kType = MsgType::Stop;
  template <class A> void serialize(A& ar, uint32_t v) { detail::check_version<A>(v, 1, "Stop"); }
};

}  // namespace herd::cluster


CEREAL_CLASS_VERSION(herd::cluster::Hello, 1)
CEREAL_CLASS_VERSION(herd::cluster::Assign, 2)
CEREAL_CLASS_VERSION(herd::cluster::Ready, 2)
CEREAL_CLASS_VERSION(herd::cluster::LinkStats, 1)
CEREAL_CLASS_VERSION(herd::cluster::Ping, 1)
CEREAL_CLASS_VERSION(herd::cluster::Pong, 1)
CEREAL_CLASS_VERSION(herd::cluster::ErrorMsg, 1)
CEREAL_CLASS_VERSION(herd::cluster::SampleSpec, 1)
CEREAL_CLASS_VERSION(herd::cluster::Forward, 2)
CEREAL_CLASS_VERSION(herd::cluster::Result, 2)
CEREAL_CLASS_VERSION(herd::cluster::WeightRequest, 1)
CEREAL_CLASS_VERSION(herd::cluster::WeightChunk, 1)
CEREAL_CLASS_VERSION(herd::cluster::Reset, 1)
CEREAL_CLASS_VERSION(herd::cluster::Stop, 1)
