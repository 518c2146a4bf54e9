// The NCCL bootstrap: how rank 0's ncclUniqueId reaches the other ranks of a group. NCCL needs every
// rank to call ncclCommInitRank with the same 128-byte id, which rank 0 makes (ncclGetUniqueId) and
// someone else must carry; herd carries it over a group it already has (any Comm: MPI, herd's ring,
// inproc) or over its control channel, as the message below. Host-only: no nccl.h here (the id is
// 128 opaque bytes, NCCL_UNIQUE_ID_BYTES), so this is built and tested on every host.
//
// The message, 152 bytes, little-endian:
//   magic "HNID" | version u16 (1) | reserved u16 (0) | group tag u64 | nranks u32 | rank u32 | id[128]
// The group tag names the group the id is for (nccl_group_tag), so two groups bootstrapping on one
// host (or a stale message from an earlier group) are never mixed up: a receiver refuses an id for
// another tag or another group size.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace herd {

class Comm;

constexpr size_t kNcclIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES (nccl_comm.cpp checks they agree)
using NcclId = std::array<uint8_t, kNcclIdBytes>;

constexpr uint32_t kNcclIdMagic = 0x44494E48;  // "HNID" as little-endian bytes
constexpr uint16_t kNcclIdVersion = 1;
constexpr size_t kNcclIdMessageBytes = 4 + 2 + 2 + 8 + 4 + 4 + kNcclIdBytes;  // 152

struct NcclIdMessage {
  uint64_t group_tag = 0;
  int nranks = 0;  // the size of the group the id is for
  int rank = 0;    // the sender's rank in it (0 for the id rank 0 made)
  NcclId id{};
};

// A group's tag from a string naming it (its members' addresses and a generation, say): FNV-1a 64.
uint64_t nccl_group_tag(std::string_view group_name);

std::string encode_nccl_id(const NcclIdMessage& m);

// Decodes and checks `bytes` as a message for the receiver's group (tag, nranks): returns "" and
// fills *out, or the reason it is refused (truncated, oversize, wrong magic or version, nonzero
// reserved bits, nranks < 1 or not the receiver's group size, rank outside 0..nranks-1, another
// group's tag). Never reads outside `bytes`.
std::string decode_nccl_id(std::string_view bytes, uint64_t expect_tag, int expect_nranks, NcclIdMessage* out);

// The encoded message as f32 values for Comm::broadcast, losslessly: each float holds one 16-bit
// little-endian pair of bytes as the integer 0..65535, which f32 represents exactly (24-bit
// significand) and which is never a NaN, infinity or denormal, so a transport that copies floats
// by value (or converts them) still delivers every bit. 152 bytes -> 76 floats.
constexpr size_t kNcclIdFloats = kNcclIdMessageBytes / 2;
std::vector<float> pack_bytes_f32(std::string_view bytes);  // bytes.size() must be even
// "" and *out, or why a float is not such an integer.
std::string unpack_bytes_f32(const float* f, size_t n, std::string* out);

// Rank 0's *id to every rank of `over` (a broadcast of the packed message from rank 0). On rank 0
// *id is the input; on the others it is filled. Every rank checks what arrived against its own
// group_tag and over.size(), so ranks that disagree on the group all fail, naming the difference.
// Returns "" or the error (the Comm's own, or the message's). root_error: rank 0 could not make an
// id (ncclGetUniqueId failed): it still takes part, and every rank then fails saying so, at once
// rather than after a timeout.
std::string exchange_nccl_id(Comm& over, uint64_t group_tag, NcclId* id, const std::string& root_error = "");

}  // namespace herd
