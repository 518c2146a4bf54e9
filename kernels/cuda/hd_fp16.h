// f16 / bf16 <-> f32 conversions and the few float primitives the CUDA block math is built on, as
// HERD_HD functions (kernels/cuda/hd.h): the GPU kernels and the CPU test compile this same code.
// The conversions are kernels/fp16.h's algorithms line for line (round to nearest even, NaN stays
// a quiet NaN, overflow to infinity, correctly rounded subnormals), with a bit cast that nvcc's
// device side accepts in place of std::bit_cast; test_cuda_block_math checks them bit for bit
// against kernels/fp16.h on all 65536 16-bit inputs and on f32 edge cases.
//
// hd_mul / hd_add / hd_sub are one rounded f32 operation each on both sides: on the device the
// _rn intrinsics, which nvcc never contracts into an FMA; on the host plain operators, and the
// files that include this header are compiled with -ffp-contract=off (the CPU reference quant code
// is compiled that way too). That is what lets dequant_block be bit-exact with dequantize_row.
#pragma once

#include <cstdint>

#include "kernels/cuda/hd.h"

namespace herd::cuda {

HERD_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  __builtin_memcpy(&u, &f, sizeof u);
  return u;
#endif
}

HERD_HD float bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
#endif
}

HERD_HD float hd_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
HERD_HD float hd_add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
HERD_HD float hd_sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
// IEEE division, correctly rounded (the device default, made explicit so -use_fast_math cannot change it).
HERD_HD float hd_div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// binary16 bits -> f32 (exact).
HERD_HD float hd_f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return bits_f32(sign | 0x7F800000u | (mant << 13));
  if (exp != 0) return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return bits_f32(sign);
  uint32_t k = 0;  // subnormal: shift the leading one up to bit 10
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    ++k;
  }
  return bits_f32(sign | ((127u - 14u - k) << 23) | ((mant & 0x3FFu) << 13));
}

// f32 -> binary16 bits, round to nearest, ties to even.
HERD_HD uint16_t hd_f32_to_f16(float f) {
  const uint32_t x = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t exp = (x >> 23) & 0xFFu;
  const uint32_t mant = x & 0x7FFFFFu;
  if (exp == 0xFF) {
    if (mant == 0) return static_cast<uint16_t>(sign | 0x7C00u);
    return static_cast<uint16_t>(sign | 0x7E00u | (mant >> 13));
  }
  const int e = static_cast<int>(exp) - 127;
  if (e > 15) return static_cast<uint16_t>(sign | 0x7C00u);
  if (e >= -14) {
    uint32_t h = (static_cast<uint32_t>(e + 15) << 10) | (mant >> 13);
    const uint32_t rest = mant & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  if (e < -25) return sign;
  const uint32_t full = mant | 0x800000u;
  const int shift = -e - 1;
  uint32_t h = full >> shift;
  const uint32_t rest = full & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

HERD_HD float hd_bf16_to_f32(uint16_t b) { return bits_f32(static_cast<uint32_t>(b) << 16); }

HERD_HD uint16_t hd_f32_to_bf16(float f) {
  const uint32_t x = f32_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);
  const uint32_t rounded = x + 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

// Little-endian loads from byte pointers with no alignment assumption (GGUF blocks are 18, 22,
// 110... bytes: their fields are not aligned in general).
HERD_HD uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
HERD_HD uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
HERD_HD float load_f16(const uint8_t* p) { return hd_f16_to_f32(load_u16(p)); }

}  // namespace herd::cuda
