// The 256-value super-block formats: Q4_K, Q5_K, Q6_K.
//
// Q4_K {f16 d, dmin; u8 scales[12]; u8 qs[128]} and Q5_K {..., u8 qh[32], u8 qs[128]}:
//   8 sub-blocks of 32 values, each with a 6-bit scale sc and 6-bit min m:
//   x = (d * sc) * q - (dmin * m).
//   scales[12] packs 8 (sc, m) pairs: for j < 4, sc_j = scales[j] & 63, m_j = scales[j+4] & 63;
//   for j >= 4, sc_j = (scales[j+4] & 15) | (scales[j-4] >> 6) << 4,
//               m_j  = (scales[j+4] >> 4) | (scales[j]   >> 6) << 4.
//   qs is 4 chunks of 32 bytes; chunk c holds sub-block 2c in the low nibbles and 2c+1 in the
//   high nibbles (element l of each in byte l). Q5_K's fifth bit of element l of sub-block s is
//   bit s of qh[l].
// Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: 16 sub-blocks of 16, x = (d * sc) * (q - 32)
//   with q 6 bits. Two halves of 128 values; in half h, element 128h + 32k + l (k < 4, l < 32) has
//   its low 4 bits in ql[64h + l + 32(k & 1)] (low nibble for k < 2, high nibble for k >= 2),
//   its top 2 bits in bits 2k..2k+1 of qh[32h + l], and its scale in scales[8h + 2k + l / 16].
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/quant_impl.h"

namespace herd::quant {
namespace {

constexpr int kSuper = 256;

void unpack_scale_min(const uint8_t* scales, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = (scales[j + 4] & 15) | ((scales[j - 4] >> 6) << 4);
    *m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
  }
}

void pack_scale_min(const int* sc, const int* m, uint8_t* scales) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    scales[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
}

// Shared by Q4_K and Q5_K: x[256] -> levels q[256] in [0, 2^bits), 6-bit sc/m per sub-block of 32,
// f16 d/dmin. Per sub-block the grid starts at lo = -(dmin * m) <= min(x, 0) (offsets are
// non-negative multiples of dmin) and its step d * sc is the smallest that reaches max(x); both
// 6-bit codes are rounded *up* so the grid always covers the sub-block and each value is rounded
// to its nearest level (error <= step / 2).
void quantize_scale_min(const float* x, int bits, int* q, int* sc, int* m, uint16_t* dh, uint16_t* dminh) {
  const float top = static_cast<float>((1 << bits) - 1);
  float lo_need[8], hi[8];
  float max_off = 0.0f;
  for (int s = 0; s < 8; ++s) {
    const float* xs = x + 32 * s;
    float mn = 0.0f, mx = xs[0];
    for (int l = 0; l < 32; ++l) {
      mn = std::min(mn, xs[l]);
      mx = std::max(mx, xs[l]);
    }
    lo_need[s] = mn;
    hi[s] = mx;
    max_off = std::max(max_off, -mn);
  }
  *dminh = f16_ceil(max_off / 63.0f);
  const float dmin = f16_to_f32(*dminh);
  float lo[8], step_need[8], max_step = 0.0f;
  for (int s = 0; s < 8; ++s) {
    m[s] = dmin > 0.0f ? static_cast<int>(std::min(63.0f, std::ceil(-lo_need[s] / dmin))) : 0;
    lo[s] = -(dmin * static_cast<float>(m[s]));
    step_need[s] = std::max(0.0f, (hi[s] - lo[s]) / top);
    max_step = std::max(max_step, step_need[s]);
  }
  *dh = f16_ceil(max_step / 63.0f);
  const float d = f16_to_f32(*dh);
  for (int s = 0; s < 8; ++s) {
    sc[s] = d > 0.0f ? static_cast<int>(std::min(63.0f, std::ceil(step_need[s] / d))) : 0;
    const float step = d * static_cast<float>(sc[s]);
    const float offset = dmin * static_cast<float>(m[s]);
    for (int l = 0; l < 32; ++l)
      q[32 * s + l] = step > 0.0f ? nearest_level((x[32 * s + l] + offset) / step, 0, static_cast<int>(top)) : 0;
  }
}

}  // namespace

void dequantize_q4_k(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 144, dst += kSuper) {
    const float d = load_f16(src), dmin = load_f16(src + 2);
    const uint8_t* scales = src + 4;
    const uint8_t* qs = src + 16;
    for (int c = 0; c < 4; ++c) {
      int sc0, m0, sc1, m1;
      unpack_scale_min(scales, 2 * c, &sc0, &m0);
      unpack_scale_min(scales, 2 * c + 1, &sc1, &m1);
      const float d0 = d * static_cast<float>(sc0), o0 = dmin * static_cast<float>(m0);
      const float d1 = d * static_cast<float>(sc1), o1 = dmin * static_cast<float>(m1);
      for (int l = 0; l < 32; ++l) {
        dst[64 * c + l] = d0 * static_cast<float>(qs[32 * c + l] & 0xF) - o0;
        dst[64 * c + 32 + l] = d1 * static_cast<float>(qs[32 * c + l] >> 4) - o1;
      }
    }
  }
}

void dequantize_q5_k(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 176, dst += kSuper) {
    const float d = load_f16(src), dmin = load_f16(src + 2);
    const uint8_t* scales = src + 4;
    const uint8_t* qh = src + 16;
    const uint8_t* qs = src + 48;
    for (int c = 0; c < 4; ++c) {
      int sc0, m0, sc1, m1;
      unpack_scale_min(scales, 2 * c, &sc0, &m0);
      unpack_scale_min(scales, 2 * c + 1, &sc1, &m1);
      const float d0 = d * static_cast<float>(sc0), o0 = dmin * static_cast<float>(m0);
      const float d1 = d * static_cast<float>(sc1), o1 = dmin * static_cast<float>(m1);
      for (int l = 0; l < 32; ++l) {
        const int q0 = (qs[32 * c + l] & 0xF) | (((qh[l] >> (2 * c)) & 1) << 4);
        const int q1 = (qs[32 * c + l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
        dst[64 * c + l] = d0 * static_cast<float>(q0) - o0;
        dst[64 * c + 32 + l] = d1 * static_cast<float>(q1) - o1;
      }
    }
  }
}

void dequantize_q6_k(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 210, dst += kSuper) {
    const uint8_t* ql = src;
    const uint8_t* qh = src + 128;
    const uint8_t* scales = src + 192;
    const float d = load_f16(src + 208);
    for (int h = 0; h < 2; ++h) {
      for (int k = 0; k < 4; ++k) {
        for (int l = 0; l < 32; ++l) {
          const uint8_t lbyte = ql[64 * h + l + 32 * (k & 1)];
          const int low = k < 2 ? (lbyte & 0xF) : (lbyte >> 4);
          const int high = (qh[32 * h + l] >> (2 * k)) & 3;
          const int sc = static_cast<int8_t>(scales[8 * h + 2 * k + l / 16]);
          const float ds = d * static_cast<float>(sc);
          dst[128 * h + 32 * k + l] = ds * static_cast<float>((low | (high << 4)) - 32);
        }
      }
    }
  }
}

void quantize_q4_k(const float* src, uint8_t* dst, int64_t n_blocks) {
  int q[kSuper], sc[8], m[8];
  for (int64_t b = 0; b < n_blocks; ++b, src += kSuper, dst += 144) {
    uint16_t dh, dminh;
    quantize_scale_min(src, 4, q, sc, m, &dh, &dminh);
    store_f16_bits(dst, dh);
    store_f16_bits(dst + 2, dminh);
    pack_scale_min(sc, m, dst + 4);
    uint8_t* qs = dst + 16;
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
}

void quantize_q5_k(const float* src, uint8_t* dst, int64_t n_blocks) {
  int q[kSuper], sc[8], m[8];
  for (int64_t b = 0; b < n_blocks; ++b, src += kSuper, dst += 176) {
    uint16_t dh, dminh;
    quantize_scale_min(src, 5, q, sc, m, &dh, &dminh);
    store_f16_bits(dst, dh);
    store_f16_bits(dst + 2, dminh);
    pack_scale_min(sc, m, dst + 4);
    uint8_t* qh = dst + 16;
    uint8_t* qs = dst + 48;
    std::memset(qh, 0, 32);
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int q0 = q[64 * c + l], q1 = q[64 * c + 32 + l];
        qs[32 * c + l] = static_cast<uint8_t>((q0 & 0xF) | ((q1 & 0xF) << 4));
        qh[l] = static_cast<uint8_t>(qh[l] | (((q0 >> 4) & 1) << (2 * c)) | (((q1 >> 4) & 1) << (2 * c + 1)));
      }
    }
  }
}

// Q6_K: per sub-block of 16 a signed step s = -(signed max-abs) / 32, so the largest-magnitude
// value lands on level -32; the int8 scale is rounded away from zero so |d * sc| >= |s| and the
// grid reaches every value (only values of the other sign beyond 31.5 steps are clamped to 31).
void quantize_q6_k(const float* src, uint8_t* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += kSuper, dst += 210) {
    float s[16], max_s = 0.0f;
    for (int j = 0; j < 16; ++j) {
      s[j] = signed_max_abs(src + 16 * j, 16) / -32.0f;
      max_s = std::max(max_s, std::fabs(s[j]));
    }
    const uint16_t dh = f16_ceil(max_s / 127.0f);
    const float d = f16_to_f32(dh);
    uint8_t* ql = dst;
    uint8_t* qh = dst + 128;
    uint8_t* scales = dst + 192;
    std::memset(dst, 0, 192);
    int sc[16];
    for (int j = 0; j < 16; ++j) {
      const int mag = d > 0.0f ? static_cast<int>(std::min(127.0f, std::ceil(std::fabs(s[j]) / d))) : 0;
      sc[j] = s[j] < 0.0f ? -mag : mag;
      scales[j] = static_cast<uint8_t>(static_cast<int8_t>(sc[j]));
    }
    store_f16_bits(dst + 208, dh);
    for (int h = 0; h < 2; ++h) {
      for (int k = 0; k < 4; ++k) {
        for (int l = 0; l < 32; ++l) {
          const int i = 128 * h + 32 * k + l;
          const float ds = d * static_cast<float>(sc[i / 16]);
          const int q = (ds != 0.0f ? nearest_level(src[i] / ds, -32, 31) : 0) + 32;
          uint8_t& lbyte = ql[64 * h + l + 32 * (k & 1)];
          lbyte = static_cast<uint8_t>(lbyte | (k < 2 ? (q & 0xF) : ((q & 0xF) << 4)));
          qh[32 * h + l] = static_cast<uint8_t>(qh[32 * h + l] | ((q >> 4) << (2 * k)));
        }
      }
    }
  }
}

}  // namespace herd::quant
