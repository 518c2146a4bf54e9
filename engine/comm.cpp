#include "engine/comm.h"

namespace herd {

void rank_order_sum(const float* const* parts, int n_parts, size_t n, float* out) {
  if (n_parts <= 0) return;
  if (out != parts[0])
    for (size_t i = 0; i < n; ++i) out[i] = parts[0][i];
  // One pass per part keeps each element's order ((p0 + p1) + p2) + ... and still vectorises
  // (across elements, never across parts). herd builds without -ffast-math, so the compiler may not
  // reassociate these additions.
  for (int p = 1; p < n_parts; ++p) {
    const float* src = parts[p];
    for (size_t i = 0; i < n; ++i) out[i] = out[i] + src[i];
  }
}

}  // namespace herd
