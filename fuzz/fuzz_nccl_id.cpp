// The NCCL bootstrap message (engine/nccl_bootstrap.h) on arbitrary bytes: decode_nccl_id against
// the group the first bytes choose, and unpack_bytes_f32 on the rest read as floats (what a
// broadcast delivers). Only error values may come out; an accepted message must re-encode to the
// same bytes (nothing in it is ignored).
//
// Input: bytes 0-1 = the receiver's nranks (1..65536), bytes 2-9 = its group tag, the rest = the message.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/nccl_bootstrap.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  herd::fuzz::Input in{data, size};
  const int nranks = 1 + in.u16();
  uint64_t tag = 0;
  const std::string t = in.take(8);
  std::memcpy(&tag, t.data(), t.size());
  const std::string msg = in.rest();
  herd::NcclIdMessage m;
  if (herd::decode_nccl_id(msg, tag, nranks, &m).empty() && herd::encode_nccl_id(m) != msg) std::abort();
  std::vector<float> f(msg.size() / sizeof(float));
  if (!f.empty()) std::memcpy(f.data(), msg.data(), f.size() * sizeof(float));
  std::string bytes;
  if (herd::unpack_bytes_f32(f.data(), f.size(), &bytes).empty() && herd::pack_bytes_f32(bytes) != f) std::abort();
  return 0;
}
