// The pieces every herd message is built from: the transport types a message travels in, field
// helpers that check a loaded value before it is used (a length before it allocates, a rate
// against a physical bound), and pack()/unpack() between a message struct and a transport Message.
// A peer's bytes are never trusted: every helper here throws ProtocolError on a bad value.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include <cereal/archives/portable_binary.hpp>
#include <cereal/cereal.hpp>

#include "transport/codec.h"
#include "transport/link.h"

namespace herd::cluster {

// The transport carries herd's messages; these are its types, named here so that protocol code
// reads as one vocabulary.
using transport::Message;
using transport::ProtocolError;
using transport::Tensor;
using transport::WireDType;

enum class MsgType : uint16_t {
  Hello = 1, Assign = 2, Ready = 3, Error = 4, Forward = 5, Result = 6, Reset = 7, Stop = 8,
  WeightRequest = 9, WeightChunk = 10, Ping = 11, Pong = 12, TpRing = 13, HopOffer = 14, HopAnswer = 15,
};
const char* msg_type_name(uint16_t type);

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
// A bool travels as one byte; loading it straight into a bool is undefined behaviour for any byte
// but 0 and 1 (UBSan: "not a valid value for type 'bool'"), so it is read as a u8 and checked.
template <class Archive>
void boolean(Archive& ar, bool& b, const char* field) {
  uint8_t x = b ? 1 : 0;
  ar(x);
  if constexpr (Archive::is_loading::value) {
    if (x > 1) throw ProtocolError(std::string(field) + " is " + std::to_string(x) + " (a bool is 0 or 1)");
    b = x == 1;
  }
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
constexpr int64_t kMaxSeqSlots = 4096;      // sequence slots of one stage (--parallel)

namespace detail {
template <class Archive>
void bounded_number(Archive& ar, double& x, double max, const char* field) {
  ar(x);
  if constexpr (Archive::is_loading::value)
    if (!(x >= 0 && x <= max))  // also false for NaN
      throw ProtocolError(std::string(field) + " is " + std::to_string(x) + " (must be in 0.." + std::to_string(max) + ")");
}
}  // namespace detail

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

}  // namespace herd::cluster
