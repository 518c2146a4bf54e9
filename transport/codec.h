// The frame layout every Link uses (one ZeroMQ multipart message, or one entry of an in-memory
// queue). All integers little endian.
//
//   frame 0  envelope  u32 magic 'HRD1' | u16 wire version | u16 message type | u32 n_tensors   (12 bytes)
//   frame 1  payload   cereal portable-binary body of the message type (<= kMaxPayloadBytes)
//   then per tensor:
//   header   u8 dtype | u8 rank | u16 0 | u32 0 | i64 dims[rank] | u64 n_bytes               (16 + 8*rank bytes)
//   data     exactly n_bytes = prod(dims) * dtype size bytes
//
// decode_frames checks every one of these (magic, version, frame count, dtype, rank, dims >= 0,
// no overflow, n_bytes vs dims vs the data frame's real size) and throws ProtocolError naming the
// field; nothing is trusted before it is checked.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "transport/link.h"

namespace herd::transport {

class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

constexpr uint32_t kFrameMagic = 0x31445248;  // "HRD1"
constexpr uint16_t kWireVersion = 1;
constexpr size_t kEnvelopeBytes = 12;
constexpr size_t kMaxPayloadBytes = 1 << 20;
constexpr size_t kMaxTensors = 4;
constexpr size_t kMaxTensorRank = 4;
constexpr uint64_t kMaxTensorBytes = uint64_t{1} << 32;  // 4 GiB per frame

std::vector<std::string> encode_frames(const Message& m);
// The same frames, moving the payload and tensor bytes out of `m` instead of copying them (a hop's
// hidden state is megabytes: the sender's only copy is the stage writing it into the Tensor).
std::vector<std::string> encode_frames(Message&& m);
Message decode_frames(std::vector<std::string>&& frames);  // throws ProtocolError

}  // namespace herd::transport
