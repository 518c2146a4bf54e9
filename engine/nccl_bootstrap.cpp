#include "engine/nccl_bootstrap.h"

#include <cmath>
#include <cstring>

#include "engine/comm.h"

namespace herd {
namespace {

void put(std::string& s, size_t at, const void* v, size_t n) { std::memcpy(s.data() + at, v, n); }
template <class T>
T get(std::string_view s, size_t at) {
  T v;
  std::memcpy(&v, s.data() + at, sizeof v);
  return v;
}

std::string hex64(uint64_t v) {
  static const char* d = "0123456789abcdef";
  std::string s = "0x";
  for (int i = 15; i >= 0; --i) s += d[(v >> (4 * i)) & 15];
  return s;
}

}  // namespace

uint64_t nccl_group_tag(std::string_view group_name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : group_name) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

std::string encode_nccl_id(const NcclIdMessage& m) {
  std::string s(kNcclIdMessageBytes, '\0');
  const uint32_t magic = kNcclIdMagic, nranks = static_cast<uint32_t>(m.nranks), rank = static_cast<uint32_t>(m.rank);
  const uint16_t version = kNcclIdVersion, reserved = 0;
  put(s, 0, &magic, 4);
  put(s, 4, &version, 2);
  put(s, 6, &reserved, 2);
  put(s, 8, &m.group_tag, 8);
  put(s, 16, &nranks, 4);
  put(s, 20, &rank, 4);
  put(s, 24, m.id.data(), kNcclIdBytes);
  return s;
}

std::string decode_nccl_id(std::string_view b, uint64_t expect_tag, int expect_nranks, NcclIdMessage* out) {
  const std::string what = "NCCL id message: ";
  if (b.size() < kNcclIdMessageBytes)
    return what + "truncated: " + std::to_string(b.size()) + " bytes, expected " + std::to_string(kNcclIdMessageBytes);
  if (b.size() > kNcclIdMessageBytes)
    return what + "oversize: " + std::to_string(b.size()) + " bytes, expected " + std::to_string(kNcclIdMessageBytes);
  if (get<uint32_t>(b, 0) != kNcclIdMagic) return what + "wrong magic (not an NCCL id message)";
  const uint16_t version = get<uint16_t>(b, 4);
  if (version != kNcclIdVersion)
    return what + "unsupported version " + std::to_string(version) + " (this herd reads version " +
           std::to_string(kNcclIdVersion) + ")";
  if (get<uint16_t>(b, 6) != 0) return what + "reserved bits set";
  const uint64_t tag = get<uint64_t>(b, 8);
  const uint32_t nranks = get<uint32_t>(b, 16), rank = get<uint32_t>(b, 20);
  // 1 << 20 ranks: far beyond any group, and keeps the value an int.
  if (nranks < 1 || nranks > (1u << 20)) return what + "nranks " + std::to_string(nranks) + " is not a group size";
  if (rank >= nranks)
    return what + "rank " + std::to_string(rank) + " outside the group of nranks " + std::to_string(nranks);
  if (static_cast<int>(nranks) != expect_nranks)
    return what + "nranks mismatch: the id is for a group of " + std::to_string(nranks) + ", this rank's group has " +
           std::to_string(expect_nranks);
  if (tag != expect_tag) return what + "group tag mismatch: the id is for group " + hex64(tag) + ", this rank is in " + hex64(expect_tag);
  out->group_tag = tag;
  out->nranks = static_cast<int>(nranks);
  out->rank = static_cast<int>(rank);
  std::memcpy(out->id.data(), b.data() + 24, kNcclIdBytes);
  return "";
}

std::vector<float> pack_bytes_f32(std::string_view bytes) {
  std::vector<float> f(bytes.size() / 2);
  for (size_t i = 0; i < f.size(); ++i) {
    const unsigned lo = static_cast<unsigned char>(bytes[2 * i]), hi = static_cast<unsigned char>(bytes[2 * i + 1]);
    f[i] = static_cast<float>(lo | (hi << 8));
  }
  return f;
}

std::string unpack_bytes_f32(const float* f, size_t n, std::string* out) {
  out->assign(2 * n, '\0');
  for (size_t i = 0; i < n; ++i) {
    const float v = f[i];
    // Exactly an integer 0..65535 (NaN fails every comparison, so it is refused here too).
    if (!(v >= 0.0f && v <= 65535.0f) || std::floor(v) != v)
      return "NCCL id message: float " + std::to_string(i) + " is not a packed byte pair";
    const unsigned u = static_cast<unsigned>(v);
    (*out)[2 * i] = static_cast<char>(u & 0xff);
    (*out)[2 * i + 1] = static_cast<char>(u >> 8);
  }
  return "";
}

std::string exchange_nccl_id(Comm& over, uint64_t group_tag, NcclId* id, const std::string& root_error) {
  const int me = over.rank(), n = over.size();
  std::vector<float> buf(kNcclIdFloats, 0.0f);  // all zeros: no magic, refused by every receiver
  if (me == 0 && root_error.empty()) {
    NcclIdMessage m;
    m.group_tag = group_tag;
    m.nranks = n;
    m.rank = 0;
    m.id = *id;
    buf = pack_bytes_f32(encode_nccl_id(m));
  }
  if (std::string e = over.broadcast(buf.data(), buf.size(), 0); !e.empty()) return "NCCL id exchange: " + e;
  std::string why, bytes;
  NcclIdMessage got;
  if (me != 0) {
    why = unpack_bytes_f32(buf.data(), buf.size(), &bytes);
    if (why.empty()) why = decode_nccl_id(bytes, group_tag, n, &got);
    if (why.empty() && got.rank != 0) why = "NCCL id message: sent by rank " + std::to_string(got.rank) + ", not rank 0";
  }
  // Every rank learns whether all accepted it: a rank that refused adds 1, a rank 0 without an id
  // 65536 (integers far below 2^24: the f32 sum is exact in any order).
  constexpr float kRootFailed = 65536.0f;
  float refused = me == 0 && !root_error.empty() ? kRootFailed : why.empty() ? 0.0f : 1.0f;
  if (std::string e = over.all_reduce_sum(&refused, 1); !e.empty()) return "NCCL id exchange: " + e;
  if (refused >= kRootFailed)
    return me == 0 ? "NCCL id exchange: rank 0 made no id: " + root_error
                   : "NCCL id exchange: rank 0 made no id (its error says why)";
  if (!why.empty()) return "rank " + std::to_string(me) + ": " + why;
  if (refused != 0.0f)
    return "NCCL id exchange: " + std::to_string(static_cast<int>(refused)) + " rank(s) of " + std::to_string(n) +
           " refused rank 0's id (another group tag or group size there)";
  if (me != 0) *id = got.id;
  return "";
}

}  // namespace herd
