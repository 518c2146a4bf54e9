// The CUDA backend's per-block math and index mapping, as HERD_HD functions (kernels/cuda/hd.h):
// matmul.cu's kernels are thin loops over these, and tests/kernels/test_cuda_block_math.cpp
// compiles the very same code with g++ and checks it against the CPU definitions:
//   - dequant_block: one block of any of the 13 dtypes -> f32, bit-exact with dequantize_row
//     (same formulas, same operation order, each product/sum one rounded f32 op: hd_fp16.h);
//   - quantize_act_block32: 32 activations -> 8-bit levels q, scale d, Σq per 16, bit-exact with
//     the CPU kernel tables' quantize_act (kernels/cpu/simd_table.h, Q8Act and ActScale);
//   - dot_unit_q8: one 32-value unit of a quantized weight row (a whole Q4_0..Q8_0 block, or one of
//     the 8 sub-blocks of a K-quant super-block) times one Q8 activation block: unit_word gives the
//     weight levels 4 at a time, integer dots of 4 bytes (dot4_i8 = __dp4a on the device; the
//     tensor-core kernel feeds the same words to mma.sync), then unit_scale the float part;
//     dot_block_q8 / dot_row_q8 / dot_row_q8_lanes sum a block's, a row's, a warp lane's units;
//   - dot_row_f_lanes: the F32/F16/BF16 row dot with x rounded to f16/bf16 first (backend.h);
//   - the index mappings: decode (warp per row), prefill tiles (thread per row x 8 tokens; or 8
//     warps of m16n8k16 mma), activation staging, quantize_act work items, the Q8 buffer layout.
// Finite inputs are assumed (as on the CPU fast path). Nothing here allocates, throws or needs
// more than <cstdint>.
#pragma once

#include <cstdint>

#include "kernels/cuda/hd.h"
#include "kernels/cuda/hd_fp16.h"

namespace herd::cuda {

// Raw GGUF type ids (kernels/dtype.h's DType values; the CPU test static_asserts they agree).
namespace tid {
inline constexpr uint32_t kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ2_K = 10,
                          kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kBF16 = 30;
}

// simd::ActScale (kernels/cpu/simd_table.h), same values.
inline constexpr int kActF32x32 = 0, kActF16x32 = 1, kActF32x256 = 2;

// Values per block and bytes per block (dtype.h's table); 0 for an id herd does not know.
HERD_HD int block_values(uint32_t type) {
  switch (type) {
    case tid::kF32: case tid::kF16: case tid::kBF16: return 1;
    case tid::kQ4_0: case tid::kQ4_1: case tid::kQ5_0: case tid::kQ5_1: case tid::kQ8_0: return 32;
    case tid::kQ2_K: case tid::kQ3_K: case tid::kQ4_K: case tid::kQ5_K: case tid::kQ6_K: return 256;
    default: return 0;
  }
}
HERD_HD int block_bytes(uint32_t type) {
  switch (type) {
    case tid::kF32: return 4;
    case tid::kF16: case tid::kBF16: return 2;
    case tid::kQ4_0: return 18;
    case tid::kQ4_1: return 20;
    case tid::kQ5_0: return 22;
    case tid::kQ5_1: return 24;
    case tid::kQ8_0: return 34;
    case tid::kQ2_K: return 84;
    case tid::kQ3_K: return 110;
    case tid::kQ4_K: return 144;
    case tid::kQ5_K: return 176;
    case tid::kQ6_K: return 210;
    default: return 0;
  }
}
// The types dot_unit_q8 knows (every quantized type): the ones matmul_q8 runs.
HERD_HD bool is_q8_type(uint32_t type) { return block_values(type) >= 32; }
HERD_HD bool is_float_type(uint32_t type) { return block_values(type) == 1; }

// ---------------------------------------------------------------------------------------------
// Integer helpers.

// acc + Σ_k a.byte[k] * b.byte[k] over the 4 bytes as signed int8: __dp4a on the device.
HERD_HD int dot4_i8(int a, int b, int acc) {
#if defined(__CUDA_ARCH__)
  return __dp4a(a, b, acc);
#else
  const uint32_t ua = static_cast<uint32_t>(a), ub = static_cast<uint32_t>(b);
  for (int k = 0; k < 4; ++k)
    acc += static_cast<int>(static_cast<int8_t>(static_cast<uint8_t>(ua >> (8 * k)))) *
           static_cast<int>(static_cast<int8_t>(static_cast<uint8_t>(ub >> (8 * k))));
  return acc;
#endif
}

// 4 consecutive int8 activation levels as one int (byte k = q[k]). q must be 4-byte aligned on the
// device (Q8 activation rows are: ldq is a multiple of 32 and the buffers are 16-byte aligned).
HERD_HD int act4(const int8_t* q) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const int*>(q);
#else
  return static_cast<int>(load_u32(reinterpret_cast<const uint8_t*>(q)));
#endif
}
HERD_HD int w4(const uint8_t* p, int shift, uint32_t mask) { return static_cast<int>((load_u32(p) >> shift) & mask); }

// Bits 0..3 of h to bit 4 of bytes 0..3 (the fifth bit of 4 consecutive Q5_0/Q5_1 levels).
HERD_HD uint32_t spread4_bit4(uint32_t h) {
  return ((h & 1u) << 4) | ((h & 2u) << 11) | ((h & 4u) << 18) | ((h & 8u) << 25);
}

// Q4_K / Q5_K: the 6-bit scale and min of sub-block j (layout in kernels/cpu/quant_kquants.cpp).
HERD_HD void unpack_scale_min(const uint8_t* scales, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = (scales[j + 4] & 15) | ((scales[j - 4] >> 6) << 4);
    *m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
  }
}
// Q3_K: the 6-bit code of sub-block s (of 16), before the -32 (kernels/cpu/quant_kquants_low.cpp).
HERD_HD int q3k_scale(const uint8_t* sc, int s) {
  const int lo = s < 8 ? sc[s] & 0xF : sc[s - 8] >> 4;
  const int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
  return lo | (hi << 4);
}

// ---------------------------------------------------------------------------------------------
// Dequantization: block -> block_values(type) floats, the formulas and operation order of
// kernels/cpu/quant_legacy.cpp, quant_kquants.cpp, quant_kquants_low.cpp and quant_row.cpp.
// Unknown type: writes nothing.
HERD_HD void dequant_block(uint32_t type, const uint8_t* b, float* out) {
  switch (type) {
    case tid::kF32: out[0] = bits_f32(load_u32(b)); return;
    case tid::kF16: out[0] = load_f16(b); return;
    case tid::kBF16: out[0] = hd_bf16_to_f32(load_u16(b)); return;
    case tid::kQ4_0: {
      const float d = load_f16(b);
      for (int j = 0; j < 16; ++j) {
        out[j] = hd_mul(static_cast<float>((b[2 + j] & 0xF) - 8), d);
        out[j + 16] = hd_mul(static_cast<float>((b[2 + j] >> 4) - 8), d);
      }
      return;
    }
    case tid::kQ4_1: {
      const float d = load_f16(b), m = load_f16(b + 2);
      for (int j = 0; j < 16; ++j) {
        out[j] = hd_add(hd_mul(static_cast<float>(b[4 + j] & 0xF), d), m);
        out[j + 16] = hd_add(hd_mul(static_cast<float>(b[4 + j] >> 4), d), m);
      }
      return;
    }
    case tid::kQ5_0: case tid::kQ5_1: {
      const bool affine = type == tid::kQ5_1;
      const float d = load_f16(b), m = affine ? load_f16(b + 2) : 0.0f;
      const uint32_t qh = load_u32(b + (affine ? 4 : 2));
      const uint8_t* qs = b + (affine ? 8 : 6);
      for (int j = 0; j < 16; ++j) {
        const int lo = (qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
        const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
        if (affine) {
          out[j] = hd_add(hd_mul(static_cast<float>(lo), d), m);
          out[j + 16] = hd_add(hd_mul(static_cast<float>(hi), d), m);
        } else {
          out[j] = hd_mul(static_cast<float>(lo - 16), d);
          out[j + 16] = hd_mul(static_cast<float>(hi - 16), d);
        }
      }
      return;
    }
    case tid::kQ8_0: {
      const float d = load_f16(b);
      for (int j = 0; j < 32; ++j) out[j] = hd_mul(static_cast<float>(static_cast<int8_t>(b[2 + j])), d);
      return;
    }
    case tid::kQ2_K: {
      const uint8_t* qs = b + 16;
      const float d = load_f16(b + 80), dmin = load_f16(b + 82);
      for (int s = 0; s < 16; ++s) {
        const float dl = hd_mul(d, static_cast<float>(b[s] & 0xF)), ml = hd_mul(dmin, static_cast<float>(b[s] >> 4));
        for (int i = 0; i < 16; ++i) {
          const int e = 16 * s + i;
          const int q = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
          out[e] = hd_sub(hd_mul(dl, static_cast<float>(q)), ml);
        }
      }
      return;
    }
    case tid::kQ3_K: {
      const uint8_t* hmask = b;
      const uint8_t* qs = b + 32;
      const uint8_t* scales = b + 96;
      const float d = load_f16(b + 108);
      for (int s = 0; s < 16; ++s) {
        const float dl = hd_mul(d, static_cast<float>(q3k_scale(scales, s) - 32));
        for (int i = 0; i < 16; ++i) {
          const int e = 16 * s + i;
          const int low = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
          const int hbit = (hmask[e % 32] >> (e / 32)) & 1;
          out[e] = hd_mul(dl, static_cast<float>(low - (hbit ? 0 : 4)));
        }
      }
      return;
    }
    case tid::kQ4_K: case tid::kQ5_K: {
      const bool five = type == tid::kQ5_K;
      const float d = load_f16(b), dmin = load_f16(b + 2);
      const uint8_t* scales = b + 4;
      const uint8_t* qh = b + 16;
      const uint8_t* qs = b + (five ? 48 : 16);
      for (int c = 0; c < 4; ++c) {
        int sc0, m0, sc1, m1;
        unpack_scale_min(scales, 2 * c, &sc0, &m0);
        unpack_scale_min(scales, 2 * c + 1, &sc1, &m1);
        const float d0 = hd_mul(d, static_cast<float>(sc0)), o0 = hd_mul(dmin, static_cast<float>(m0));
        const float d1 = hd_mul(d, static_cast<float>(sc1)), o1 = hd_mul(dmin, static_cast<float>(m1));
        for (int l = 0; l < 32; ++l) {
          int q0 = qs[32 * c + l] & 0xF, q1 = qs[32 * c + l] >> 4;
          if (five) {
            q0 |= ((qh[l] >> (2 * c)) & 1) << 4;
            q1 |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
          }
          out[64 * c + l] = hd_sub(hd_mul(d0, static_cast<float>(q0)), o0);
          out[64 * c + 32 + l] = hd_sub(hd_mul(d1, static_cast<float>(q1)), o1);
        }
      }
      return;
    }
    case tid::kQ6_K: {
      const uint8_t* ql = b;
      const uint8_t* qh = b + 128;
      const uint8_t* scales = b + 192;
      const float d = load_f16(b + 208);
      for (int h = 0; h < 2; ++h)
        for (int k = 0; k < 4; ++k)
          for (int l = 0; l < 32; ++l) {
            const uint8_t lbyte = ql[64 * h + l + 32 * (k & 1)];
            const int low = k < 2 ? (lbyte & 0xF) : (lbyte >> 4);
            const int high = (qh[32 * h + l] >> (2 * k)) & 3;
            const float ds = hd_mul(d, static_cast<float>(static_cast<int8_t>(scales[8 * h + 2 * k + l / 16])));
            out[128 * h + 32 * k + l] = hd_mul(ds, static_cast<float>((low | (high << 4)) - 32));
          }
      return;
    }
    default: return;
  }
}

// ---------------------------------------------------------------------------------------------
// Activation quantization (simd::Q8Act): one block of 32 values.

HERD_HD float abs_f32(float v) { return bits_f32(f32_bits(v) & 0x7FFFFFFFu); }

// max |x[i]| over 32 values (order-free: max is exact).
HERD_HD float amax_block32(const float* x) {
  float m = 0.0f;
  for (int i = 0; i < 32; ++i) {
    const float a = abs_f32(x[i]);
    m = a > m ? a : m;
  }
  return m;
}

// Round to nearest, ties to even, then saturate to int8 exactly as the x86 tables do (cvtps2dq,
// then the saturating packs): a product that is NaN, infinite or outside int32 converts to INT_MIN
// there, so -128 (possible only when 127 / amax overflows, amax < 3.7e-37: the NEON tables give
// +127 for +inf instead; such a block's values are ~1e-37 · q either way).
// v + 1.5·2^23 - 1.5·2^23 is v rounded to an integer in the nearest-even mode for |v| < 2^22.
HERD_HD int round_to_i8(float v) {
  if (!(v >= -2147483648.0f && v < 2147483648.0f)) return -128;
  if (v >= 127.5f) return 127;
  if (v <= -128.5f) return -128;
  return static_cast<int>(hd_sub(hd_add(v, 12582912.0f), 12582912.0f));
}

// x[0..32) -> q[0..32), *d, s[0..2) (Σq of each 16) for one ActScale. `amax` is max|x| of the
// scale group: this block's own (amax_block32) for kActF32x32 / kActF16x32, the max over the
// block's group of 8 (256 values, or fewer at a row's end) for kActF32x256. Bit-exact with the
// CPU tables: d = amax / 127 (f16-rounded for kActF16x32), q = rne(x · (127 / amax)).
HERD_HD void quantize_act_block32(const float* x, float amax, int mode, int8_t* q, float* d, int16_t* s) {
  float dg = hd_div(amax, 127.0f);
  if (mode == kActF16x32) dg = hd_f16_to_f32(hd_f32_to_f16(dg));
  const float scale = amax > 0.0f ? hd_div(127.0f, amax) : 0.0f;
  *d = dg;
  int s0 = 0, s1 = 0;
  for (int i = 0; i < 32; ++i) {
    const int v = round_to_i8(hd_mul(x[i], scale));
    q[i] = static_cast<int8_t>(v);
    if (i < 16) s0 += v; else s1 += v;
  }
  s[0] = static_cast<int16_t>(s0);
  s[1] = static_cast<int16_t>(s1);
}

// Blocks of 32 sharing one amax under `mode` (8 for kActF32x256, else 1).
HERD_HD int act_group_blocks(int mode) { return mode == kActF32x256 ? 8 : 1; }
// Scale groups of one row of cols values (the last one shorter when cols / 32 is not a multiple).
HERD_HD int64_t act_groups_per_row(int64_t cols, int mode) {
  const int64_t g = act_group_blocks(mode);
  return (cols / 32 + g - 1) / g;
}
// Work item i of the quantize_act kernel (i < n_tokens · act_groups_per_row): token *t, blocks
// [*b0, *b1) of 32 values, which share one amax.
HERD_HD void act_group_of(int64_t i, int64_t cols, int mode, int64_t* t, int64_t* b0, int64_t* b1) {
  const int64_t per_row = act_groups_per_row(cols, mode), g = act_group_blocks(mode), nb = cols / 32;
  *t = i / per_row;
  *b0 = (i % per_row) * g;
  *b1 = *b0 + g < nb ? *b0 + g : nb;
}

// Layout of a Q8 activation buffer for n_tokens rows of cols values (cols a multiple of 32): q
// [n_tokens, cols] int8 at 0, d [n_tokens, cols / 32] f32 at *off_d, s [n_tokens, cols / 16] int16
// at *off_s, each part starting 16-byte aligned; returns the total bytes.
HERD_HD uint64_t up16(uint64_t n) { return (n + 15u) / 16u * 16u; }
HERD_HD uint64_t q8_act_layout(int64_t n_tokens, int64_t cols, uint64_t* off_d, uint64_t* off_s) {
  const uint64_t n = static_cast<uint64_t>(n_tokens), c = static_cast<uint64_t>(cols);
  *off_d = up16(n * c);
  *off_s = *off_d + up16(n * (c / 32u) * 4u);
  return *off_s + up16(n * (c / 16u) * 2u);
}

// ---------------------------------------------------------------------------------------------
// Quantized dot products: unit u of a row = values [32u, 32u + 32), weight block u / units_per_block
// (sub-block u % units_per_block), activation block u (q: 32 levels, da: its scale, s: its 2 Σq).
// The integer part is exact (|partial sums| < 2^24, see each case); the float part is a few
// rounded products per unit: da · (dw · I) forms, which the test bounds.

HERD_HD int units_per_block(uint32_t type) { return block_values(type) / 32; }

// A unit's dot is split in two so the dp4a path and the tensor-core (mma) path share every
// format-specific line:
//   unit_word(type, blk, sub, i): the weight levels of values 4i..4i+3 of the unit (i < 8) as 4
//     int8 in one int, byte k = value 4i + k. Levels are the stored codes (Q4_0 0..15, Q5_x 0..31,
//     Q8_0 -127..127, Q2_K 0..3, Q3_K 0..7 = low2 | hbit << 2, Q4_K 0..15, Q5_K 0..31, Q6_K 0..63),
//     the format's offset (-8, -16, -4, -32, the mins) being applied through Σq_a in unit_scale;
//   unit_scale(type, blk, sub, dlo, dhi, da, s): the unit's float contribution from the exact
//     integer dots of its two halves (dlo = Σ over values 0..15 of level · q_a, dhi over 16..31),
//     the activation scale da and the two Σq_a s[0], s[1].
HERD_HD int unit_word(uint32_t type, const uint8_t* blk, int sub, int i) {
  switch (type) {
    case tid::kQ4_0: case tid::kQ4_1: {  // value j < 16: low nibble of qs[j]; j >= 16: high nibble of qs[j - 16]
      const uint8_t* qs = blk + (type == tid::kQ4_1 ? 4 : 2);
      return w4(qs + 4 * (i & 3), i < 4 ? 0 : 4, 0x0F0F0F0Fu);
    }
    case tid::kQ5_0: case tid::kQ5_1: {  // plus bit j of qh as bit 4
      const bool affine = type == tid::kQ5_1;
      const uint32_t qh = load_u32(blk + (affine ? 4 : 2));
      return w4(blk + (affine ? 8 : 6) + 4 * (i & 3), i < 4 ? 0 : 4, 0x0F0F0F0Fu) |
             static_cast<int>(spread4_bit4((qh >> (4 * i)) & 0xFu));
    }
    case tid::kQ8_0: return w4(blk + 2 + 4 * i, 0, 0xFFFFFFFFu);
    case tid::kQ2_K: case tid::kQ3_K: {  // 2 bits at 2·(sub % 4) of qs[32·(sub / 4) + l]; Q3_K: hmask[l] bit sub
      const int lo = w4(blk + (type == tid::kQ2_K ? 16 : 32) + 32 * (sub / 4) + 4 * i, 2 * (sub % 4), 0x03030303u);
      return type == tid::kQ2_K ? lo : lo | (w4(blk + 4 * i, sub, 0x01010101u) << 2);
    }
    case tid::kQ4_K: case tid::kQ5_K: {  // sub-block sub: nibble (sub & 1) of qs[32·(sub / 2) + l]; Q5_K: qh[l] bit sub
      const bool five = type == tid::kQ5_K;
      const int lo = w4(blk + (five ? 48 : 16) + 32 * (sub / 2) + 4 * i, 4 * (sub & 1), 0x0F0F0F0Fu);
      return five ? lo | (w4(blk + 16 + 4 * i, sub, 0x01010101u) << 4) : lo;
    }
    case tid::kQ6_K: {  // sub = 4h + k: ql[64h + 32(k & 1) + l] nibble k / 2, qh[32h + l] bits 2k..2k+1
      const int h = sub / 4, k = sub % 4;
      return w4(blk + 64 * h + 32 * (k & 1) + 4 * i, k < 2 ? 0 : 4, 0x0F0F0F0Fu) |
             (w4(blk + 128 + 32 * h + 4 * i, 2 * k, 0x03030303u) << 4);
    }
    default: return 0;
  }
}

// |integer terms| < 2^24 for every type: Q8_0 32·127·127; Q6_K 2·128·64·16·127 (level 0..63,
// minus 32·Σq_a); Q4_K/Q5_K 63·31·32·127; Q3_K 2·32·8·16·127; Q2_K 2·15·3·16·127.
HERD_HD float unit_scale(uint32_t type, const uint8_t* blk, int sub, int dlo, int dhi, float da, const int16_t* s) {
  const int s01 = s[0] + s[1], dsum = dlo + dhi;
  switch (type) {
    case tid::kQ4_0: return hd_mul(hd_mul(load_f16(blk), da), static_cast<float>(dsum - 8 * s01));
    case tid::kQ5_0: return hd_mul(hd_mul(load_f16(blk), da), static_cast<float>(dsum - 16 * s01));
    case tid::kQ4_1: case tid::kQ5_1:  // x = q·d + m
      return hd_add(hd_mul(hd_mul(load_f16(blk), da), static_cast<float>(dsum)),
                    hd_mul(hd_mul(load_f16(blk + 2), da), static_cast<float>(s01)));
    case tid::kQ8_0: return hd_mul(hd_mul(load_f16(blk), da), static_cast<float>(dsum));
    case tid::kQ2_K: {  // x = (d·sc)·q - dmin·m per 16
      const int sc0 = blk[2 * sub], sc1 = blk[2 * sub + 1];
      const int isum = (sc0 & 0xF) * dlo + (sc1 & 0xF) * dhi;
      const int msum = (sc0 >> 4) * s[0] + (sc1 >> 4) * s[1];
      return hd_mul(da, hd_sub(hd_mul(load_f16(blk + 80), static_cast<float>(isum)),
                               hd_mul(load_f16(blk + 82), static_cast<float>(msum))));
    }
    case tid::kQ3_K: {  // x = d·(sc - 32)·(level - 4) per 16
      const uint8_t* scales = blk + 96;
      const int isum = (q3k_scale(scales, 2 * sub) - 32) * (dlo - 4 * s[0]) +
                       (q3k_scale(scales, 2 * sub + 1) - 32) * (dhi - 4 * s[1]);
      return hd_mul(hd_mul(load_f16(blk + 108), da), static_cast<float>(isum));
    }
    case tid::kQ4_K: case tid::kQ5_K: {  // x = (d·sc)·q - dmin·m per 32
      int sc, m;
      unpack_scale_min(blk + 4, sub, &sc, &m);
      return hd_mul(da, hd_sub(hd_mul(load_f16(blk), static_cast<float>(sc * dsum)),
                               hd_mul(load_f16(blk + 2), static_cast<float>(m * s01))));
    }
    case tid::kQ6_K: {  // x = d·sc·(level - 32) per 16
      const uint8_t* scales = blk + 192;
      const int isum = static_cast<int8_t>(scales[2 * sub]) * (dlo - 32 * s[0]) +
                       static_cast<int8_t>(scales[2 * sub + 1]) * (dhi - 32 * s[1]);
      return hd_mul(hd_mul(load_f16(blk + 208), da), static_cast<float>(isum));
    }
    default: return 0.0f;
  }
}

// One unit against one activation block q[32] (scale da, sums s[2]): dp4a over the 8 words.
HERD_HD float dot_unit_q8(uint32_t type, const uint8_t* blk, int sub, const int8_t* q, float da, const int16_t* s) {
  int dlo = 0, dhi = 0;
  for (int i = 0; i < 4; ++i) dlo = dot4_i8(unit_word(type, blk, sub, i), act4(q + 4 * i), dlo);
  for (int i = 4; i < 8; ++i) dhi = dot4_i8(unit_word(type, blk, sub, i), act4(q + 4 * i), dhi);
  return unit_scale(type, blk, sub, dlo, dhi, da, s);
}

// Σ over the units lane, lane + n_lanes, ... of one weight row (cols a multiple of 32, and of the
// block size) against one token's Q8 activations q[cols], d[cols/32], s[cols/16]; accumulated in
// f32 in that order. The decode kernel's lane `lane` of a warp computes exactly this.
HERD_HD float dot_row_q8_lanes(uint32_t type, const uint8_t* w_row, const int8_t* q, const float* d, const int16_t* s,
                               int64_t cols, int lane, int n_lanes) {
  const int upb = units_per_block(type);
  const int bb = block_bytes(type);
  if (upb <= 0) return 0.0f;
  float acc = 0.0f;
  for (int64_t u = lane; u < cols / 32; u += n_lanes)
    acc = hd_add(acc, dot_unit_q8(type, w_row + (u / upb) * bb, static_cast<int>(u % upb), q + 32 * u, d[u], s + 2 * u));
  return acc;
}
// acc + one whole weight block (1 unit, or the 8 of a K-quant super-block) against the matching
// activation blocks q[block_values], d[block_values / 32], s[block_values / 16], units in order.
HERD_HD float dot_block_q8(uint32_t type, const uint8_t* blk, const int8_t* q, const float* d, const int16_t* s,
                           float acc) {
  for (int k = 0; k < units_per_block(type); ++k) acc = hd_add(acc, dot_unit_q8(type, blk, k, q + 32 * k, d[k], s + 2 * k));
  return acc;
}
// The whole row, block after block (the same operations, in the same order, as
// dot_row_q8_lanes(..., 0, 1) and as one prefill tile thread).
HERD_HD float dot_row_q8(uint32_t type, const uint8_t* w_row, const int8_t* q, const float* d, const int16_t* s,
                         int64_t cols) {
  const int bv = block_values(type), bb = block_bytes(type);
  float acc = 0.0f;
  if (bv < 32) return acc;
  for (int64_t b = 0; b < cols / bv; ++b)
    acc = dot_block_q8(type, w_row + b * bb, q + b * bv, d + b * (bv / 32), s + b * (bv / 16), acc);
  return acc;
}

// ---------------------------------------------------------------------------------------------
// Float family: y = Σ w[c] · x'[c] with x' = x rounded to the weight's 16-bit type (F16/BF16;
// F32 as is), f32 products and sums (one rounding each) over c = lane, lane + n_lanes, ...

HERD_HD float float_weight(uint32_t type, const uint8_t* w_row, int64_t c) {
  if (type == tid::kF32) return bits_f32(load_u32(w_row + 4 * c));
  const uint16_t h = load_u16(w_row + 2 * c);
  return type == tid::kF16 ? hd_f16_to_f32(h) : hd_bf16_to_f32(h);
}
HERD_HD float round_activation(uint32_t type, float x) {
  if (type == tid::kF16) return hd_f16_to_f32(hd_f32_to_f16(x));
  if (type == tid::kBF16) return hd_bf16_to_f32(hd_f32_to_bf16(x));
  return x;
}
HERD_HD float dot_row_f_lanes(uint32_t type, const uint8_t* w_row, const float* x, int64_t cols, int lane, int n_lanes) {
  float acc = 0.0f;
  for (int64_t c = lane; c < cols; c += n_lanes)
    acc = hd_add(acc, hd_mul(float_weight(type, w_row, c), round_activation(type, x[c])));
  return acc;
}

// Pairwise sum of 32 lane values in the order the warp's __shfl_xor_sync butterfly adds them
// (offsets 16, 8, 4, 2, 1: lane i adds lane i ^ offset). The host test sums with this; the kernel
// does the shuffles. v is overwritten; the result is v[0] (every lane ends with the same value).
HERD_HD float warp_tree_sum(float* v) {
  for (int off = 16; off >= 1; off >>= 1)
    for (int i = 0; i < 32; ++i)
      if ((i & off) == 0) {
        const float a = v[i], b = v[i ^ off];
        v[i] = hd_add(a, b);
        v[i ^ off] = hd_add(b, a);
      }
  return v[0];
}

// ---------------------------------------------------------------------------------------------
// Index mappings. All counts are int64 on the host side; per-launch values fit CUDA's grid limits
// (checked by the launchers).

// Decode matvec: a thread block of kDecodeWarps warps; warp w of block b owns output row
// b · kDecodeWarps + w (nothing when that is >= rows) for the kDecodeTokens tokens of grid.y slice
// g: tokens [g · kDecodeTokens, min(n_tokens, (g + 1) · kDecodeTokens)). Its 32 lanes split the
// row's 32-value units round robin (dot_row_*_lanes with n_lanes = 32), then a butterfly sum.
inline constexpr int kDecodeWarps = 4;
inline constexpr int kDecodeThreads = 32 * kDecodeWarps;
inline constexpr int kDecodeTokens = 8;
// matmul_q8 runs the decode kernel up to this many tokens, the tile kernel above.
HERD_HD bool q8_uses_decode(int64_t n_tokens) { return n_tokens <= kDecodeTokens; }
HERD_HD int64_t decode_grid_x(int64_t rows) { return (rows + kDecodeWarps - 1) / kDecodeWarps; }
HERD_HD int64_t decode_grid_y(int64_t n_tokens) { return (n_tokens + kDecodeTokens - 1) / kDecodeTokens; }
HERD_HD int64_t decode_row(int64_t block_x, int warp) { return block_x * kDecodeWarps + warp; }
HERD_HD int64_t decode_token0(int64_t block_y) { return block_y * kDecodeTokens; }
// Tokens this slice computes: kDecodeTokens, fewer in the last slice.
HERD_HD int decode_tokens(int64_t block_y, int64_t n_tokens) {
  const int64_t left = n_tokens - decode_token0(block_y);
  return left <= 0 ? 0 : (left < kDecodeTokens ? static_cast<int>(left) : kDecodeTokens);
}

// Prefill tile: kTileRows output rows x kTileTokens tokens per thread block of kTileThreads
// threads. Thread t computes row row0 + tile_row(t) for the kTileTokensPerThread tokens
// tok0 + tile_token(t, j), j < kTileTokensPerThread (all threads of a warp share their tokens, so
// their shared-memory activation reads are broadcasts); outputs past rows / n_tokens are skipped.
// The activations are staged kTileUnits units (256 values) at a time: tile_stage_* say which
// thread loads what.
inline constexpr int kTileRows = 64;
inline constexpr int kTileTokens = 32;
inline constexpr int kTileThreads = 256;
inline constexpr int kTileTokensPerThread = kTileRows * kTileTokens / kTileThreads;  // 8
inline constexpr int kTileUnits = 8;
static_assert(kTileThreads % kTileRows == 0 && (kTileThreads / kTileRows) * kTileTokensPerThread == kTileTokens,
              "every (row, token) of a tile belongs to one thread");
HERD_HD int64_t tile_grid_x(int64_t rows) { return (rows + kTileRows - 1) / kTileRows; }
HERD_HD int64_t tile_grid_y(int64_t n_tokens) { return (n_tokens + kTileTokens - 1) / kTileTokens; }
HERD_HD int64_t tile_row0(int64_t block_x) { return block_x * kTileRows; }
HERD_HD int64_t tile_tok0(int64_t block_y) { return block_y * kTileTokens; }
HERD_HD int tile_row(int thread) { return thread % kTileRows; }
HERD_HD int tile_token(int thread, int j) { return (thread / kTileRows) * kTileTokensPerThread + j; }
// Staging of units [u0, u0 + kTileUnits) for the tile's tokens: kTileTokens x (kTileUnits · 8)
// int words of q, kTileTokens x kTileUnits scales, kTileTokens x 2·kTileUnits sums. Element e
// (e = thread, thread + kTileThreads, ...) of each array: token e / per_token, slot e % per_token.
inline constexpr int kStageQWords = kTileUnits * 8;
inline constexpr int kStageD = kTileUnits;
inline constexpr int kStageS = 2 * kTileUnits;
HERD_HD int stage_token(int e, int per_token) { return e / per_token; }
HERD_HD int stage_slot(int e, int per_token) { return e % per_token; }

// Prefill on tensor cores (matmul_q8's kQ8PrefillMma, sm_80+): the same tiles, threads and staging;
// warp w computes tile rows 16·(w % 4) .. +16 for tile tokens 16·(w / 4) .. +16 as two 16 x 8
// n-tiles, each unit through two mma.sync.m16n8k16.row.col.s32.s8.s8.s32 (its values 0..15 and
// 16..31: dlo and dhi), then unit_scale per (row, token), units in order: dot_row_q8's bits.
// Fragments of m16n8k16 .s8 (PTX ISA; lane = 4g + t, g = lane >> 2, t = lane & 3):
//   A 16 x 16 (row-major): a0 = row g, k 4t..4t+3 (4 int8); a1 = row g + 8, same k;
//   B 16 x 8 (col-major):  b0 = k 4t..4t+3 of column g;
//   C 16 x 8 (s32):        c0, c1 = row g, columns 2t, 2t+1; c2, c3 = row g + 8, columns 2t, 2t+1.
// So lane (g, t) passes word 4·half + t (unit_word / the staged activation words) of A-rows g, g + 8
// and of B-column (token) g.
inline constexpr int kMmaWarps = kTileThreads / 32;
static_assert(kMmaWarps == 8 && kTileRows == 4 * 16 && kTileTokens == 2 * 16, "mma warp grid: 4 x 16 rows, 2 x 16 tokens");
HERD_HD int mma_word(int lane, int half) { return 4 * half + (lane & 3); }
HERD_HD int mma_a_row(int warp, int lane, int a_reg) { return 16 * (warp % 4) + (lane >> 2) + 8 * a_reg; }
HERD_HD int mma_b_token(int warp, int lane, int n_tile) { return 16 * (warp / 4) + 8 * n_tile + (lane >> 2); }
HERD_HD int mma_c_row(int warp, int lane, int c_reg) { return mma_a_row(warp, lane, c_reg >> 1); }
HERD_HD int mma_c_token(int warp, int lane, int n_tile, int c_reg) {
  return 16 * (warp / 4) + 8 * n_tile + 2 * (lane & 3) + (c_reg & 1);
}

// Elementwise kernels (quantize_act groups, get_rows blocks): a 1-D grid-stride loop of
// kElemThreads-thread blocks over `total` items, the grid capped at kElemMaxBlocks.
inline constexpr int kElemThreads = 256;
inline constexpr int64_t kElemMaxBlocks = 65535;
HERD_HD int64_t elem_grid(int64_t total) {
  const int64_t b = (total + kElemThreads - 1) / kElemThreads;
  return b < 1 ? 1 : (b > kElemMaxBlocks ? kElemMaxBlocks : b);
}

}  // namespace herd::cuda
