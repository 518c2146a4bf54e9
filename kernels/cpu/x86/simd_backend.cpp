// SimdBackend: the x86 kernel tables run by KernelTableBackend (simd_driver.h), plus rope (this file
// is compiled for baseline x86-64).
#include "kernels/cpu/x86/simd_backend.h"

#include <cmath>
#include <vector>

namespace herd {

void SimdBackend::rope(float* x, int64_t n_tokens, int64_t ld_token, int64_t n_heads, int64_t head_dim,
                       const int32_t* pos, const RopeParams& p) {
  if (p.n_rot <= 0 || p.n_rot % 2 != 0 || p.n_rot > head_dim) fail("rope", "n_rot must be even and <= head_dim");
  if (n_tokens < 0 || n_heads < 0 || ld_token < n_heads * head_dim) fail("rope", "bad shape");
  const int64_t half = p.n_rot / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {  // exactly ReferenceBackend::rope's expressions
    double f = std::pow(static_cast<double>(p.freq_base), -2.0 * static_cast<double>(i) / static_cast<double>(p.n_rot));
    if (p.freq_factors) f /= static_cast<double>(p.freq_factors[i]);
    inv_freq[static_cast<size_t>(i)] = f;
  }
  const bool normal = p.mode == RopeMode::Normal;
  pool_.parallel_for(n_tokens, [&](int64_t tb, int64_t te) {
    thread_local std::vector<double> cs;  // cos, sin of each rotated pair of this token
    cs.resize(static_cast<size_t>(2 * half));
    for (int64_t t = tb; t < te; ++t) {
      const double position = static_cast<double>(pos[t]) * static_cast<double>(p.freq_scale);
      for (int64_t i = 0; i < half; ++i) {
        const double theta = position * inv_freq[static_cast<size_t>(i)];
        cs[static_cast<size_t>(2 * i)] = std::cos(theta);
        cs[static_cast<size_t>(2 * i + 1)] = std::sin(theta);
      }
      for (int64_t h = 0; h < n_heads; ++h) {
        float* head = x + t * ld_token + h * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const double c = cs[static_cast<size_t>(2 * i)], s = cs[static_cast<size_t>(2 * i + 1)];
          const int64_t a = normal ? 2 * i : i, b = normal ? 2 * i + 1 : i + half;
          const double x0 = head[a], x1 = head[b];
          head[a] = static_cast<float>(x0 * c - x1 * s);
          head[b] = static_cast<float>(x0 * s + x1 * c);
        }
      }
    }
  });
}

}  // namespace herd
