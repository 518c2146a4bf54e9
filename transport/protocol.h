// The herd wire protocol between a coordinator and its workers (and from one stage to the next).
// Each message is a cereal portable-binary payload (versioned per type with CEREAL_CLASS_VERSION)
// in the frame layout of transport/codec.h; tensors travel as raw frames beside it.
//
//   coordinator -> worker   Hello        worker -> coordinator  Hello (its profile)
//   coordinator -> worker   Assign       worker -> coordinator  Ready | Error
//   coordinator -> stage 0  Forward + tokens[n] (i32)
//   stage i -> stage i+1    Hello (role upstream) once, then Forward + hidden[n, n_embd] (f32|f16)
//   last stage -> coordinator Result + logits[n_rows, n_vocab] (f32)
//   any stage -> coordinator Error{request_id, message} when a Forward fails
//   coordinator -> worker   Reset (forget the KV cache) -> Ready;  Stop -> Ready, then the worker exits
//
// Every peer must open with a Hello whose protocol_version equals kProtocolVersion. Strings are
// bounded on load (a garbage length never allocates), and unpack() rejects trailing bytes.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>

#include <cereal/archives/portable_binary.hpp>
#include <cereal/cereal.hpp>

#include "transport/codec.h"
#include "transport/link.h"

namespace herd::transport {

constexpr uint32_t kProtocolVersion = 1;

enum class MsgType : uint16_t { Hello = 1, Assign = 2, Ready = 3, Error = 4, Forward = 5, Result = 6, Reset = 7, Stop = 8 };
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
template <class Archive>
void check_version(uint32_t version, uint32_t current, const char* type) {
  if constexpr (Archive::is_loading::value)
    if (version > current) throw ProtocolError(std::string(type) + " version " + std::to_string(version) + " is newer than this build");
}
}  // namespace detail

struct WorkerProfile {
  int32_t threads = 0;
  uint64_t free_ram_bytes = 0;
  template <class A> void serialize(A& ar, uint32_t v) { detail::check_version<A>(v, 1, "WorkerProfile"); ar(threads, free_ram_bytes); }
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
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "Assign");
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
  }
};

struct Ready {
  static constexpr MsgType kType = MsgType::Ready;
  std::string info;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "Ready");
    detail::bounded_string(ar, info, 4096, "Ready.info");
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

// + tensor 0: tokens i32 [n_tokens] (to the first stage) or hidden [n_tokens, n_embd] (f32|f16).
struct Forward {
  static constexpr MsgType kType = MsgType::Forward;
  uint64_t request_id = 0;
  int64_t pos0 = 0;
  int64_t n_tokens = 0;
  bool all_logits = false;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "Forward");
    ar(request_id, pos0, n_tokens, all_logits);
  }
};

// + tensor 0: logits f32 [n_rows, n_vocab] (n_rows = n_tokens when all_logits, else 1).
struct Result {
  static constexpr MsgType kType = MsgType::Result;
  uint64_t request_id = 0;
  int64_t n_rows = 0;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 1, "Result");
    ar(request_id, n_rows);
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

CEREAL_CLASS_VERSION(herd::transport::WorkerProfile, 1)
CEREAL_CLASS_VERSION(herd::transport::Hello, 1)
CEREAL_CLASS_VERSION(herd::transport::Assign, 1)
CEREAL_CLASS_VERSION(herd::transport::Ready, 1)
CEREAL_CLASS_VERSION(herd::transport::ErrorMsg, 1)
CEREAL_CLASS_VERSION(herd::transport::Forward, 1)
CEREAL_CLASS_VERSION(herd::transport::Result, 1)
CEREAL_CLASS_VERSION(herd::transport::Reset, 1)
CEREAL_CLASS_VERSION(herd::transport::Stop, 1)
