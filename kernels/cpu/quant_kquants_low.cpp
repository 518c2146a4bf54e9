// The 2- and 3-bit super-block formats: Q2_K and Q3_K (256 values, 16 sub-blocks of 16).
//
// Both keep their levels in the same 2-bit layout: qs is 2 chunks of 32 bytes; element
// 128n + 32j + l (n < 2, j < 4, l < 32) has its 2 low bits at bits 2j..2j+1 of qs[32n + l], and
// belongs to sub-block s = e / 16 (= 8n + 2j + l / 16).
//
// Q2_K {u8 scales[16]; u8 qs[64]; f16 d; f16 dmin} (84 bytes): scales[s] = sc_s | m_s << 4 (4 bits
//   each), x = (d · sc_s) · q − (dmin · m_s) with q in [0, 3].
// Q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d} (110 bytes): the third bit of element
//   128n + 32j + l is bit 4n + j of hmask[l]; x = (d · (sc_s − 32)) · (q − 4 · (1 − hbit)) with q the
//   2 low bits, i.e. x = (d · (sc_s − 32)) · (u − 4) for the 3-bit level u = q | hbit << 2.
//   The 16 6-bit scales sc_s: low 4 bits in scales[s % 8] (low nibble for s < 8, high nibble for
//   s >= 8), high 2 bits at bits 2(s / 4)..2(s / 4) + 1 of scales[8 + s % 4].
//
// (ggml's quants description, read for the format: block_q2_K / block_q3_K and their
// dequantize_row_* loops.)
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/quant_impl.h"

namespace herd::quant {
namespace {

constexpr int kSuper = 256;

// Bits 2j..2j+1 of qs[32n + l] and the element they belong to.
inline int low2(const uint8_t* qs, int e) { return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3; }

inline int q3k_scale(const uint8_t* sc, int s) {
  const int lo = s < 8 ? sc[s] & 0xF : sc[s - 8] >> 4;
  const int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
  return lo | (hi << 4);
}

}  // namespace

void dequantize_q2_k(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 84, dst += kSuper) {
    const uint8_t* scales = src;
    const uint8_t* qs = src + 16;
    const float d = load_f16(src + 80), dmin = load_f16(src + 82);
    for (int s = 0; s < 16; ++s) {
      const float dl = d * static_cast<float>(scales[s] & 0xF), ml = dmin * static_cast<float>(scales[s] >> 4);
      for (int i = 0; i < 16; ++i) {
        const int e = 16 * s + i;
        dst[e] = dl * static_cast<float>(low2(qs, e)) - ml;
      }
    }
  }
}

void dequantize_q3_k(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 110, dst += kSuper) {
    const uint8_t* hmask = src;
    const uint8_t* qs = src + 32;
    const uint8_t* scales = src + 96;
    const float d = load_f16(src + 108);
    for (int s = 0; s < 16; ++s) {
      const float dl = d * static_cast<float>(q3k_scale(scales, s) - 32);
      for (int i = 0; i < 16; ++i) {
        const int e = 16 * s + i;
        const int hbit = (hmask[e % 32] >> (e / 32)) & 1;  // bit 4n + j = e / 32
        dst[e] = dl * static_cast<float>(low2(qs, e) - (hbit ? 0 : 4));
      }
    }
  }
}

// Q2_K: the Q4_K construction (quant_kquants.cpp) on 16 sub-blocks of 16 with 4-bit codes and 2-bit
// levels. Per sub-block the grid starts at lo = -(dmin · m) <= min(x, 0) and its step d · sc is the
// smallest that reaches max(x); dmin = f16_ceil(max offset / 15), d = f16_ceil(max step / 15), and
// both codes are rounded up, so the grid covers the sub-block and every value goes to its nearest
// level (error <= step / 2). No iterative search (llama.cpp's make_qkx2 refines the scales by a
// weighted least-squares search and gets a lower error; herd synth only needs valid, sensible files).
void quantize_q2_k(const float* src, uint8_t* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += kSuper, dst += 84) {
    float lo_need[16], hi[16], max_off = 0.0f;
    for (int s = 0; s < 16; ++s) {
      float mn = 0.0f, mx = src[16 * s];
      for (int i = 0; i < 16; ++i) {
        mn = std::min(mn, src[16 * s + i]);
        mx = std::max(mx, src[16 * s + i]);
      }
      lo_need[s] = mn;
      hi[s] = mx;
      max_off = std::max(max_off, -mn);
    }
    const uint16_t dminh = f16_ceil(max_off / 15.0f);
    const float dmin = f16_to_f32(dminh);
    int m[16], sc[16];
    float step_need[16], max_step = 0.0f;
    for (int s = 0; s < 16; ++s) {
      m[s] = dmin > 0.0f ? static_cast<int>(std::min(15.0f, std::ceil(-lo_need[s] / dmin))) : 0;
      step_need[s] = std::max(0.0f, (hi[s] + dmin * static_cast<float>(m[s])) / 3.0f);
      max_step = std::max(max_step, step_need[s]);
    }
    const uint16_t dh = f16_ceil(max_step / 15.0f);
    const float d = f16_to_f32(dh);
    uint8_t* qs = dst + 16;
    std::memset(qs, 0, 64);
    for (int s = 0; s < 16; ++s) {
      sc[s] = d > 0.0f ? static_cast<int>(std::min(15.0f, std::ceil(step_need[s] / d))) : 0;
      dst[s] = static_cast<uint8_t>(sc[s] | (m[s] << 4));
      const float step = d * static_cast<float>(sc[s]), offset = dmin * static_cast<float>(m[s]);
      for (int i = 0; i < 16; ++i) {
        const int e = 16 * s + i;
        const int q = step > 0.0f ? nearest_level((src[e] + offset) / step, 0, 3) : 0;
        qs[32 * (e / 128) + e % 32] = static_cast<uint8_t>(qs[32 * (e / 128) + e % 32] | (q << (2 * ((e % 128) / 32))));
      }
    }
    store_f16_bits(dst + 80, dh);
    store_f16_bits(dst + 82, dminh);
  }
}

// Q3_K: as Q6_K (quant_kquants.cpp), symmetric per sub-block of 16: a signed step t = -(signed
// max-abs) / 4 puts the largest-magnitude value on level -4; d = f16_ceil(max |t| / 31) and the
// 6-bit signed scale sc - 32 is rounded away from zero (|d · (sc - 32)| >= |t|, and |t| / d <= 31
// so it fits either sign), so the grid reaches every value except those of the other sign beyond
// 3.5 steps, which are clamped to level 3 (at most one step away).
void quantize_q3_k(const float* src, uint8_t* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += kSuper, dst += 110) {
    float t[16], max_t = 0.0f;
    for (int s = 0; s < 16; ++s) {
      t[s] = signed_max_abs(src + 16 * s, 16) / -4.0f;
      max_t = std::max(max_t, std::fabs(t[s]));
    }
    const uint16_t dh = f16_ceil(max_t / 31.0f);
    const float d = f16_to_f32(dh);
    std::memset(dst, 0, 108);
    uint8_t* hmask = dst;
    uint8_t* qs = dst + 32;
    uint8_t* scales = dst + 96;
    for (int s = 0; s < 16; ++s) {
      const int mag = d > 0.0f ? static_cast<int>(std::min(31.0f, std::ceil(std::fabs(t[s]) / d))) : 0;
      const int sc = t[s] < 0.0f ? -mag : mag;  // in [-31, 31]
      const int code = sc + 32;                 // 6 bits
      scales[s % 8] = static_cast<uint8_t>(scales[s % 8] | ((code & 0xF) << (s < 8 ? 0 : 4)));
      scales[8 + s % 4] = static_cast<uint8_t>(scales[8 + s % 4] | ((code >> 4) << (2 * (s / 4))));
      const float ds = d * static_cast<float>(sc);
      for (int i = 0; i < 16; ++i) {
        const int e = 16 * s + i;
        const int u = (ds != 0.0f ? nearest_level(src[e] / ds, -4, 3) : 0) + 4;  // 3-bit level
        qs[32 * (e / 128) + e % 32] = static_cast<uint8_t>(qs[32 * (e / 128) + e % 32] | ((u & 3) << (2 * ((e % 128) / 32))));
        hmask[e % 32] = static_cast<uint8_t>(hmask[e % 32] | ((u >> 2) << (e / 32)));
      }
    }
    store_f16_bits(dst + 108, dh);
  }
}

}  // namespace herd::quant
