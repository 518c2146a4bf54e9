// Internal to kernels/cpu: the per-type block codecs behind dequantize_row / quantize_row, and
// the little helpers they share. Each function works on whole blocks; `src`/`dst` bytes are laid
// out exactly as the GGUF block structs in dtype.h (little-endian, no padding).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/fp16.h"

namespace herd::quant {

// ---- codecs (n_blocks blocks of block_size(type) values each) ----
void dequantize_q4_0(const uint8_t* src, float* dst, int64_t n_blocks);
void dequantize_q4_1(const uint8_t* src, float* dst, int64_t n_blocks);
void dequantize_q5_0(const uint8_t* src, float* dst, int64_t n_blocks);
void dequantize_q5_1(const uint8_t* src, float* dst, int64_t n_blocks);
void dequantize_q8_0(const uint8_t* src, float* dst, int64_t n_blocks);
void dequantize_q2_k(const uint8_t* src, float* dst, int64_t n_blocks);
void dequantize_q3_k(const uint8_t* src, float* dst, int64_t n_blocks);
void dequantize_q4_k(const uint8_t* src, float* dst, int64_t n_blocks);
void dequantize_q5_k(const uint8_t* src, float* dst, int64_t n_blocks);
void dequantize_q6_k(const uint8_t* src, float* dst, int64_t n_blocks);

void quantize_q4_0(const float* src, uint8_t* dst, int64_t n_blocks);
void quantize_q4_1(const float* src, uint8_t* dst, int64_t n_blocks);
void quantize_q5_0(const float* src, uint8_t* dst, int64_t n_blocks);
void quantize_q5_1(const float* src, uint8_t* dst, int64_t n_blocks);
void quantize_q8_0(const float* src, uint8_t* dst, int64_t n_blocks);
void quantize_q2_k(const float* src, uint8_t* dst, int64_t n_blocks);
void quantize_q3_k(const float* src, uint8_t* dst, int64_t n_blocks);
void quantize_q4_k(const float* src, uint8_t* dst, int64_t n_blocks);
void quantize_q5_k(const float* src, uint8_t* dst, int64_t n_blocks);
void quantize_q6_k(const float* src, uint8_t* dst, int64_t n_blocks);

// ---- shared helpers ----

// Little-endian f16 at p (GGUF is little-endian whatever the host is).
inline float load_f16(const uint8_t* p) { return f16_to_f32(static_cast<uint16_t>(p[0] | (p[1] << 8))); }
inline void store_f16_bits(uint8_t* p, uint16_t h) {
  p[0] = static_cast<uint8_t>(h & 0xFF);
  p[1] = static_cast<uint8_t>(h >> 8);
}

inline constexpr float kF16Max = 65504.0f;

// Next f16 towards +inf / -inf (finite inputs only; ±0 handled).
inline uint16_t f16_next_up(uint16_t h) {
  if (h == 0x8000u) return 0x0001u;
  return static_cast<uint16_t>((h & 0x8000u) ? h - 1 : h + 1);
}
inline uint16_t f16_next_down(uint16_t h) {
  if (h == 0x0000u) return 0x8001u;
  return static_cast<uint16_t>((h & 0x8000u) ? h + 1 : h - 1);
}

// Smallest f16 >= x (largest <= x), clamped to the finite range: a scale rounded this way
// keeps the block's extreme values inside the grid, so nothing is clamped by the f16 rounding.
inline uint16_t f16_ceil(float x) {
  x = x > kF16Max ? kF16Max : (x < -kF16Max ? -kF16Max : x);
  uint16_t h = f32_to_f16(x);
  if (f16_to_f32(h) < x) h = f16_next_up(h);
  return h;
}
inline uint16_t f16_floor(float x) {
  x = x > kF16Max ? kF16Max : (x < -kF16Max ? -kF16Max : x);
  uint16_t h = f32_to_f16(x);
  if (f16_to_f32(h) > x) h = f16_next_down(h);
  return h;
}

// Nearest integer level to v within [lo, hi] (ties to even); NaN maps to lo, never UB.
inline int nearest_level(float v, int lo, int hi) {
  const float c = v > static_cast<float>(hi) ? static_cast<float>(hi)
                                              : (v >= static_cast<float>(lo) ? v : static_cast<float>(lo));
  return static_cast<int>(std::nearbyint(c));
}

// The element of largest magnitude, with its sign (the first one on ties); 0 for an all-zero span.
inline float signed_max_abs(const float* x, int n) {
  float best = 0.0f, amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a > amax) {
      amax = a;
      best = x[i];
    }
  }
  return best;
}

}  // namespace herd::quant
