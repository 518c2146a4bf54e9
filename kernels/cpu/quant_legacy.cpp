// The 32-value block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//   Q4_0 {f16 d; u8 qs[16]}           x = (q - 8) * d
//   Q4_1 {f16 d, m; u8 qs[16]}        x = q * d + m
//   Q5_0 {f16 d; u8 qh[4]; u8 qs[16]} x = (q - 16) * d
//   Q5_1 {f16 d, m; u8 qh[4]; u8 qs[16]} x = q * d + m
//   Q8_0 {f16 d; i8 qs[32]}           x = q * d
// Nibble order: qs[j] & 0xF is element j, qs[j] >> 4 is element j + 16. The 5-bit formats keep
// the fifth bit of element j in bit j of the little-endian u32 qh.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/quant_impl.h"

namespace herd::quant {
namespace {

constexpr int kBlock = 32;

uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
void store_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// Packs 32 levels (each < 16) into 16 bytes: element j low nibble, element j + 16 high nibble.
void pack_nibbles(const int* q, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
}
// Fifth bits of 32 levels (each < 32) into a u32, element j at bit j.
uint32_t pack_high_bits(const int* q) {
  uint32_t qh = 0;
  for (int j = 0; j < kBlock; ++j) qh |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
  return qh;
}

// Symmetric 2^bits-level block: d = -(signed max-abs) / 2^(bits-1), so the largest-magnitude
// element lands exactly on the extra negative level and the grid is (q - 2^(bits-1)) * d.
// Returns the stored f16 scale bits; q[] gets levels in [0, 2^bits).
uint16_t quantize_symmetric(const float* x, int bits, int* q) {
  const int half = 1 << (bits - 1);
  const float m = signed_max_abs(x, kBlock);
  const uint16_t dh = f32_to_f16(std::clamp(m / static_cast<float>(-half), -kF16Max, kF16Max));
  const float d = f16_to_f32(dh);
  for (int j = 0; j < kBlock; ++j)
    q[j] = d != 0.0f ? nearest_level(x[j] / d, -half, half - 1) + half : half;
  return dh;
}

// Asymmetric block: x ~ q * d + m with m <= min(x) and m + (2^bits - 1) * d >= max(x) after the
// f16 rounding of both (m rounded down, d rounded up), so every value lies inside the grid.
void quantize_affine(const float* x, int bits, int* q, uint16_t* dh, uint16_t* mh) {
  const int top = (1 << bits) - 1;
  float mn = x[0], mx = x[0];
  for (int j = 1; j < kBlock; ++j) {
    mn = std::min(mn, x[j]);
    mx = std::max(mx, x[j]);
  }
  *mh = f16_floor(mn);
  const float m = f16_to_f32(*mh);
  *dh = f16_ceil((mx - m) / static_cast<float>(top));
  const float d = f16_to_f32(*dh);
  for (int j = 0; j < kBlock; ++j) q[j] = d > 0.0f ? nearest_level((x[j] - m) / d, 0, top) : 0;
}

}  // namespace

void dequantize_q4_0(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 18, dst += kBlock) {
    const float d = load_f16(src);
    const uint8_t* qs = src + 2;
    for (int j = 0; j < 16; ++j) {
      dst[j] = static_cast<float>((qs[j] & 0xF) - 8) * d;
      dst[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_q4_1(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 20, dst += kBlock) {
    const float d = load_f16(src), m = load_f16(src + 2);
    const uint8_t* qs = src + 4;
    for (int j = 0; j < 16; ++j) {
      dst[j] = static_cast<float>(qs[j] & 0xF) * d + m;
      dst[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
    }
  }
}

void dequantize_q5_0(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 22, dst += kBlock) {
    const float d = load_f16(src);
    const uint32_t qh = load_u32(src + 2);
    const uint8_t* qs = src + 6;
    for (int j = 0; j < 16; ++j) {
      const int lo = (qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
      dst[j] = static_cast<float>(lo - 16) * d;
      dst[j + 16] = static_cast<float>(hi - 16) * d;
    }
  }
}

void dequantize_q5_1(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 24, dst += kBlock) {
    const float d = load_f16(src), m = load_f16(src + 2);
    const uint32_t qh = load_u32(src + 4);
    const uint8_t* qs = src + 8;
    for (int j = 0; j < 16; ++j) {
      const int lo = (qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
      dst[j] = static_cast<float>(lo) * d + m;
      dst[j + 16] = static_cast<float>(hi) * d + m;
    }
  }
}

void dequantize_q8_0(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 34, dst += kBlock) {
    const float d = load_f16(src);
    for (int j = 0; j < kBlock; ++j) dst[j] = static_cast<float>(static_cast<int8_t>(src[2 + j])) * d;
  }
}

void quantize_q4_0(const float* src, uint8_t* dst, int64_t n_blocks) {
  int q[kBlock];
  for (int64_t b = 0; b < n_blocks; ++b, src += kBlock, dst += 18) {
    store_f16_bits(dst, quantize_symmetric(src, 4, q));
    pack_nibbles(q, dst + 2);
  }
}

void quantize_q4_1(const float* src, uint8_t* dst, int64_t n_blocks) {
  int q[kBlock];
  for (int64_t b = 0; b < n_blocks; ++b, src += kBlock, dst += 20) {
    uint16_t dh, mh;
    quantize_affine(src, 4, q, &dh, &mh);
    store_f16_bits(dst, dh);
    store_f16_bits(dst + 2, mh);
    pack_nibbles(q, dst + 4);
  }
}

void quantize_q5_0(const float* src, uint8_t* dst, int64_t n_blocks) {
  int q[kBlock];
  for (int64_t b = 0; b < n_blocks; ++b, src += kBlock, dst += 22) {
    store_f16_bits(dst, quantize_symmetric(src, 5, q));
    store_u32(dst + 2, pack_high_bits(q));
    pack_nibbles(q, dst + 6);
  }
}

void quantize_q5_1(const float* src, uint8_t* dst, int64_t n_blocks) {
  int q[kBlock];
  for (int64_t b = 0; b < n_blocks; ++b, src += kBlock, dst += 24) {
    uint16_t dh, mh;
    quantize_affine(src, 5, q, &dh, &mh);
    store_f16_bits(dst, dh);
    store_f16_bits(dst + 2, mh);
    store_u32(dst + 4, pack_high_bits(q));
    pack_nibbles(q, dst + 8);
  }
}

// Q8_0: symmetric over [-127, 127] (d = max-abs / 127, rounded up so no value is clamped).
void quantize_q8_0(const float* src, uint8_t* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += kBlock, dst += 34) {
    float amax = 0.0f;
    for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(src[j]));
    const uint16_t dh = f16_ceil(amax / 127.0f);
    const float d = f16_to_f32(dh);
    store_f16_bits(dst, dh);
    for (int j = 0; j < kBlock; ++j) {
      const int q = d > 0.0f ? nearest_level(src[j] / d, -127, 127) : 0;
      dst[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(q));
    }
  }
}

}  // namespace herd::quant
