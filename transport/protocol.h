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
#include <sstream>
#include <string>
#include <vector>

#include <cereal/archives/portable_binary.hpp>
#include <cereal/cereal.hpp>

#include "transport/codec.h"
#include "transport/link.h"

namespace herd::transport {

// 2: sampling on the last stage, weight transfer; 3: worker profile (WorkerProfile v2), Ping/Pong,
// Ready v2 (measured link to the next stage); 4: the data lane handshake (transport/zmq_link.h),
// which a link opens with before its Hello
constexpr uint32_t kProtocolVersion = 4;

enum class MsgType : uint16_t {
  Hello = 1, Assign = 2, Ready = 3, Error = 4, Forward = 5, Result = 6, Reset = 7, Stop = 8,
  WeightRequest = 9, WeightChunk = 10, Ping = 11, Pong = 12,
};
const char* msg_type_name(uint16_t type);

enum class Role : uint8_t { Coordinator = 0, Worker = 1, Upstream = 2 };

namespace detail {
// A string whose loaded length is checked against `max` before any allocation.
template <class Archive>
void bounded_string(Archive& ar, std::string& s, size_t max, const char* field) {
  uint64_t n = s.size();
  ar(n);
  if constexpr (Archive::is_loading::value) {
    if (n > max) throw ProtocolError(std::string(field) + " is " + std::to_string(n) + " bytes (max " + std::to_string(max) + ")");
    s.resize(n);
  }
  ar(cereal::binary_data(s.data(), n));
}
// A vector of i32 whose loaded length is checked against `max` before any allocation.
template <class Archive>
void bounded_i32s(Archive& ar, std::vector<int32_t>& v, size_t max, const char* field) {
  uint64_t n = v.size();
  ar(n);
  if constexpr (Archive::is_loading::value) {
    if (n > max) throw ProtocolError(std::string(field) + " has " + std::to_string(n) + " entries (max " + std::to_string(max) + ")");
    v.resize(n);
  }
  for (auto& x : v) ar(x);
}
template <class Archive>
void check_version(uint32_t version, uint32_t current, const char* type) {
  if constexpr (Archive::is_loading::value)
    if (version > current) throw ProtocolError(std::string(type) + " version " + std::to_string(version) + " is newer than this build");
}
}  // namespace detail

// Upper bounds a peer's numbers must stay within (a profile is planner input, not a size to allocate,
// but NaN, infinities and absurd values would turn a plan into nonsense).
constexpr double kMaxRateBps = 1e15;      // 1 PB/s: no memory or link is faster
constexpr double kMaxFlops = 1e18;
constexpr double kMaxSeconds = 60;         // an op overhead or a link latency
constexpr size_t kMaxProfileTypes = 64;    // matvec rates (GGUF type ids are < 64 today)
constexpr uint32_t kMaxGgufType = 1024;

namespace detail {
template <class Archive>
void bounded_number(Archive& ar, double& x, double max, const char* field) {
  ar(x);
  if constexpr (Archive::is_loading::value)
    if (!(x >= 0 && x <= max))  // also false for NaN
      throw ProtocolError(std::string(field) + " is " + std::to_string(x) + " (must be in 0.." + std::to_string(max) + ")");
}
}  // namespace detail

// What a worker tells the coordinator about itself. v1: threads and free RAM. v2 adds what the
// planner's cost model needs (partition/profile.h DeviceProfile), measured at the worker's start
// (partition/host_probe.h, `herd probe --quick` figures) or loaded from `herd worker --profile`.
// A v1 profile (all rates 0) still loads; the coordinator then assumes default rates.
struct MatvecRate {
  uint32_t type = 0;    // GGUF tensor type id
  double bytes_per_s = 0;
};
struct WorkerProfile {
  int32_t threads = 0;
  uint64_t free_ram_bytes = 0;
  // v2:
  uint64_t total_ram_bytes = 0;  // >= free_ram_bytes when both are known
  double read_bw_Bps = 0;        // streaming read bandwidth (0: not measured)
  double matmul_flops = 0;       // prefill matmul FLOP/s
  double op_overhead_s = 0;      // fixed cost of one kernel call
  double attn_Bps = 0;           // KV-cache bytes/s of decode attention
  std::vector<MatvecRate> matvec;  // weight bytes/s of a 1-token matvec, per type (each type once)
  std::string source;            // "measured at startup", "file /path/probe.json" (logs)
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 2, "WorkerProfile");
    ar(threads, free_ram_bytes);
    if (v < 2) return;
    ar(total_ram_bytes);
    if constexpr (A::is_loading::value)
      if (total_ram_bytes != 0 && free_ram_bytes > total_ram_bytes)
        throw ProtocolError("WorkerProfile: free RAM " + std::to_string(free_ram_bytes) + " exceeds total " +
                            std::to_string(total_ram_bytes));
    detail::bounded_number(ar, read_bw_Bps, kMaxRateBps, "WorkerProfile.read_bw_Bps");
    detail::bounded_number(ar, matmul_flops, kMaxFlops, "WorkerProfile.matmul_flops");
    detail::bounded_number(ar, op_overhead_s, kMaxSeconds, "WorkerProfile.op_overhead_s");
    detail::bounded_number(ar, attn_Bps, kMaxRateBps, "WorkerProfile.attn_Bps");
    uint64_t n = matvec.size();
    ar(n);
    if constexpr (A::is_loading::value) {
      if (n > kMaxProfileTypes)
        throw ProtocolError("WorkerProfile.matvec has " + std::to_string(n) + " entries (max " +
                            std::to_string(kMaxProfileTypes) + ")");
      matvec.resize(n);
    }
    for (size_t i = 0; i < matvec.size(); ++i) {
      auto& e = matvec[i];
      ar(e.type);
      detail::bounded_number(ar, e.bytes_per_s, kMaxRateBps, "WorkerProfile.matvec rate");
      if constexpr (A::is_loading::value) {
        if (e.type >= kMaxGgufType) throw ProtocolError("WorkerProfile.matvec: tensor type " + std::to_string(e.type));
        if (!(e.bytes_per_s > 0)) throw ProtocolError("WorkerProfile.matvec: rate of type " + std::to_string(e.type) + " is 0");
        for (size_t j = 0; j < i; ++j)
          if (matvec[j].type == e.type) throw ProtocolError("WorkerProfile.matvec: type " + std::to_string(e.type) + " twice");
      }
    }
    detail::bounded_string(ar, source, 1024, "WorkerProfile.source");
  }
};

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

// The model hash is the SHA-256 of the GGUF file's bytes [0, data_offset): header, metadata and
// tensor directory (names, shapes, types, offsets). Two files with the same hash have the same
// architecture, tokenizer and tensor layout; the weights themselves are not hashed (that would read
// the whole file) — see model_fingerprint() in transport/sha256.h.
struct Assign {
  static constexpr MsgType kType = MsgType::Assign;
  uint64_t session = 0;       // coordinator's assignment id (echoed in logs)
  std::string model_hash;     // hex sha256, see above
  std::string model_path;     // hint: where the coordinator's copy is (used when the worker has no -m)
  int64_t first_layer = 0;    // layer range [first_layer, end_layer)
  int64_t end_layer = 0;
  bool is_first = false;      // owns token_embd: takes token ids
  bool is_last = false;       // owns output: returns logits
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
    ar(first_layer, end_layer, is_first, is_last, n_ctx, dt);
    if (dt != static_cast<uint8_t>(WireDType::F32) && dt != static_cast<uint8_t>(WireDType::F16))
      throw ProtocolError("Assign: activation dtype " + std::to_string(dt) + " (must be f32 or f16)");
    act_dtype = static_cast<WireDType>(dt);
    detail::bounded_string(ar, next_address, 1024, "Assign.next_address");
    detail::bounded_string(ar, backend_isa, 32, "Assign.backend_isa");
    ar(exact);
    if (v >= 2) ar(file_size, header_bytes);
  }
};

// A measured link (transport/link_measure.h): one-way latency and bandwidth.
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

// The request's sampler (coordinator/sampler.h) for the last stage to apply to the last token's
// logits. The coordinator keeps the RNG: `draw` is the 64-bit value its Sampler::next_draw() gave
// for this step (0 when greedy), so the token stream for a seed is the same locally and on a
// cluster, and survives a restarted worker. `recent` is the repeat-penalty window, oldest first.
constexpr size_t kMaxSampleHistory = 1 << 16;
struct SampleSpec {
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repeat_penalty = 1.0f;
  int32_t repeat_last_n = 0;
  uint64_t draw = 0;
  std::vector<int32_t> recent;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "SampleSpec");
    ar(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, draw);
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

template <typename T>
Message pack(const T& body, std::vector<Tensor> tensors = {}) {
  std::ostringstream os;
  {
    cereal::PortableBinaryOutputArchive ar(os);
    ar(const_cast<T&>(body));
  }
  Message m;
  m.type = static_cast<uint16_t>(T::kType);
  m.payload = os.str();
  m.tensors = std::move(tensors);
  return m;
}

// Throws ProtocolError when the type differs, the payload is truncated, has trailing bytes or
// fails a field check.
template <typename T>
T unpack(const Message& m) {
  if (m.type != static_cast<uint16_t>(T::kType))
    throw ProtocolError(std::string("expected ") + msg_type_name(static_cast<uint16_t>(T::kType)) + ", got " +
                        msg_type_name(m.type));
  T body;
  std::istringstream is(m.payload);
  try {
    cereal::PortableBinaryInputArchive ar(is);
    ar(body);
  } catch (const ProtocolError&) {
    throw;
  } catch (const std::exception& e) {
    throw ProtocolError(std::string(msg_type_name(m.type)) + " payload: " + e.what());
  }
  if (is.peek() != std::char_traits<char>::eof())
    throw ProtocolError(std::string(msg_type_name(m.type)) + " payload has trailing bytes");
  return body;
}

}  // namespace herd::transport

CEREAL_CLASS_VERSION(herd::transport::WorkerProfile, 2)
CEREAL_CLASS_VERSION(herd::transport::Hello, 1)
CEREAL_CLASS_VERSION(herd::transport::Assign, 2)
CEREAL_CLASS_VERSION(herd::transport::Ready, 2)
CEREAL_CLASS_VERSION(herd::transport::LinkStats, 1)
CEREAL_CLASS_VERSION(herd::transport::Ping, 1)
CEREAL_CLASS_VERSION(herd::transport::Pong, 1)
CEREAL_CLASS_VERSION(herd::transport::ErrorMsg, 1)
CEREAL_CLASS_VERSION(herd::transport::SampleSpec, 1)
CEREAL_CLASS_VERSION(herd::transport::Forward, 2)
CEREAL_CLASS_VERSION(herd::transport::Result, 2)
CEREAL_CLASS_VERSION(herd::transport::WeightRequest, 1)
CEREAL_CLASS_VERSION(herd::transport::WeightChunk, 1)
CEREAL_CLASS_VERSION(herd::transport::Reset, 1)
CEREAL_CLASS_VERSION(herd::transport::Stop, 1)
