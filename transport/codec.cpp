#include "transport/codec.h"

#include <bit>
#include <cstring>

namespace herd::transport {

static_assert(std::endian::native == std::endian::little, "the wire format is little endian; add byte swaps");

size_t wire_dtype_size(WireDType t) {
  switch (t) {
    case WireDType::F32: return 4;
    case WireDType::F16: return 2;
    case WireDType::I32: return 4;
    case WireDType::U8: return 1;
  }
  return 0;
}

const char* wire_dtype_name(WireDType t) {
  switch (t) {
    case WireDType::F32: return "f32";
    case WireDType::F16: return "f16";
    case WireDType::I32: return "i32";
    case WireDType::U8: return "u8";
  }
  return "?";
}

int64_t Tensor::n_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

template <typename T>
void put(std::string& s, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  s.append(b, sizeof(T));
}

template <typename T>
T get(const std::string& s, size_t off) {
  T v;
  std::memcpy(&v, s.data() + off, sizeof(T));
  return v;
}

// Copies (const Message) or moves (Message&&) the payload and tensor bytes into the frames.
template <class M, class Take>
std::vector<std::string> encode_frames_impl(M& m, Take take) {
  if (m.payload.size() > kMaxPayloadBytes) throw ProtocolError("payload too large to send");
  if (m.tensors.size() > kMaxTensors) throw ProtocolError("too many tensors to send");
  std::vector<std::string> frames;
  frames.reserve(2 + 2 * m.tensors.size());
  std::string env;
  put<uint32_t>(env, kFrameMagic);
  put<uint16_t>(env, kWireVersion);
  put<uint16_t>(env, m.type);
  put<uint32_t>(env, static_cast<uint32_t>(m.tensors.size()));
  frames.push_back(std::move(env));
  frames.push_back(take(m.payload));
  for (auto& t : m.tensors) {
    if (t.shape.size() > kMaxTensorRank) throw ProtocolError("tensor rank too large to send");
    if (t.data.size() != static_cast<uint64_t>(t.n_elements()) * wire_dtype_size(t.dtype))
      throw ProtocolError("tensor data size does not match its shape");
    std::string h;
    put<uint8_t>(h, static_cast<uint8_t>(t.dtype));
    put<uint8_t>(h, static_cast<uint8_t>(t.shape.size()));
    put<uint16_t>(h, 0);
    put<uint32_t>(h, 0);
    for (int64_t d : t.shape) put<int64_t>(h, d);
    put<uint64_t>(h, t.data.size());
    frames.push_back(std::move(h));
    frames.push_back(take(t.data));
  }
  return frames;
}

}  // namespace

std::vector<std::string> encode_frames(const Message& m) {
  return encode_frames_impl(m, [](const std::string& s) { return s; });
}

std::vector<std::string> encode_frames(Message&& m) {
  return encode_frames_impl(m, [](std::string& s) { return std::move(s); });
}

Message decode_frames(std::vector<std::string>&& frames) {
  if (frames.size() < 2) throw ProtocolError("message has " + std::to_string(frames.size()) + " frames (need >= 2)");
  const std::string& env = frames[0];
  if (env.size() != kEnvelopeBytes)
    throw ProtocolError("envelope is " + std::to_string(env.size()) + " bytes (expected " +
                        std::to_string(kEnvelopeBytes) + ")");
  if (get<uint32_t>(env, 0) != kFrameMagic) throw ProtocolError("bad magic in envelope (not a herd peer?)");
  const uint16_t version = get<uint16_t>(env, 4);
  if (version != kWireVersion)
    throw ProtocolError("wire version " + std::to_string(version) + " (this build speaks " +
                        std::to_string(kWireVersion) + ")");
  Message m;
  m.type = get<uint16_t>(env, 6);
  const uint32_t n_tensors = get<uint32_t>(env, 8);
  if (n_tensors > kMaxTensors) throw ProtocolError("envelope announces " + std::to_string(n_tensors) + " tensors");
  if (frames.size() != 2 + 2 * static_cast<size_t>(n_tensors))
    throw ProtocolError("envelope announces " + std::to_string(n_tensors) + " tensors but the message has " +
                        std::to_string(frames.size()) + " frames");
  if (frames[1].size() > kMaxPayloadBytes) throw ProtocolError("payload of " + std::to_string(frames[1].size()) + " bytes");
  m.payload = std::move(frames[1]);
  for (uint32_t i = 0; i < n_tensors; ++i) {
    const std::string& h = frames[2 + 2 * i];
    std::string& data = frames[3 + 2 * i];
    const std::string what = "tensor " + std::to_string(i) + ": ";
    if (h.size() < 16) throw ProtocolError(what + "header of " + std::to_string(h.size()) + " bytes");
    Tensor t;
    const uint8_t dtype = get<uint8_t>(h, 0), rank = get<uint8_t>(h, 1);
    if (dtype > static_cast<uint8_t>(WireDType::U8)) throw ProtocolError(what + "unknown dtype " + std::to_string(dtype));
    if (rank > kMaxTensorRank) throw ProtocolError(what + "rank " + std::to_string(rank));
    if (get<uint16_t>(h, 2) != 0 || get<uint32_t>(h, 4) != 0) throw ProtocolError(what + "reserved header bytes set");
    if (h.size() != 16 + 8 * static_cast<size_t>(rank))
      throw ProtocolError(what + "header of " + std::to_string(h.size()) + " bytes for rank " + std::to_string(rank));
    t.dtype = static_cast<WireDType>(dtype);
    uint64_t n_elem = 1;
    for (size_t d = 0; d < rank; ++d) {
      const int64_t dim = get<int64_t>(h, 8 + 8 * d);
      if (dim < 0 || static_cast<uint64_t>(dim) > kMaxTensorBytes)
        throw ProtocolError(what + "dimension " + std::to_string(d) + " is " + std::to_string(dim));
      n_elem *= static_cast<uint64_t>(dim);
      if (n_elem > kMaxTensorBytes) throw ProtocolError(what + "too many elements");
      t.shape.push_back(dim);
    }
    const uint64_t n_bytes = get<uint64_t>(h, 8 + 8 * static_cast<size_t>(rank));
    if (n_bytes != n_elem * wire_dtype_size(t.dtype))
      throw ProtocolError(what + "header says " + std::to_string(n_bytes) + " bytes but the shape needs " +
                          std::to_string(n_elem * wire_dtype_size(t.dtype)));
    if (data.size() != n_bytes)
      throw ProtocolError(what + "data frame is " + std::to_string(data.size()) + " bytes, header says " +
                          std::to_string(n_bytes));
    t.data = std::move(data);
    m.tensors.push_back(std::move(t));
  }
  return m;
}

}  // namespace herd::transport
