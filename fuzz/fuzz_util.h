// Small helpers shared by the libFuzzer harnesses (fuzz/README in the top-level README's Tests).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace herd::fuzz {

// Reads the input as a sequence of fields: take(n) gives the next n bytes (fewer at the end),
// rest() everything left.
struct Input {
  const uint8_t* p;
  size_t n;
  uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  uint16_t u16() { return static_cast<uint16_t>(byte() | (byte() << 8)); }
  std::string take(size_t k) {
    k = k < n ? k : n;
    std::string s(reinterpret_cast<const char*>(p), k);
    p += k;
    n -= k;
    return s;
  }
  std::string rest() { return take(n); }
  bool empty() const { return n == 0; }
};

// fuzz_lane's sealed mode (transport/tcp_lane.h): the harness's lane receives with kLaneKeyIn;
// make_seeds seals its sealed seeds with that key as the sender's.
inline constexpr uint8_t kLaneKeyIn[32] = {2};
inline constexpr uint8_t kLaneKeyOut[32] = {1};

// A path under the shared test material or the source tree (compile definitions from fuzz/CMakeLists.txt).
inline std::string shared_path(const char* rel) { return std::string(HERD_SHARED_DIR) + "/" + rel; }
inline std::string source_path(const char* rel) { return std::string(HERD_SOURCE_DIR) + "/" + rel; }

}  // namespace herd::fuzz
