// Exact scalar conversions between f32 and the two 16-bit float formats GGUF stores:
//   f16  (IEEE 754 binary16: 1 sign, 5 exponent, 10 mantissa bits) — scales of every quant block;
//   bf16 (the top half of an f32: 1 sign, 8 exponent, 7 mantissa bits).
// Bit manipulation through std::bit_cast only, so no UB and no dependence on F16C or the FPU's
// rounding mode. f32 -> 16-bit rounds to nearest, ties to even; NaN stays NaN (quiet), overflow
// becomes infinity, tiny values become (correctly rounded) subnormals or signed zero.
#pragma once

#include <bit>
#include <cstdint>

namespace herd {

// binary16 bits -> f32. Exact: every f16 value is representable in f32.
constexpr float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) {  // inf / NaN: keep the payload in the top mantissa bits
    return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));
  }
  if (exp != 0) {  // normal: rebias 15 -> 127
    return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
  }
  if (mant == 0) return std::bit_cast<float>(sign);  // signed zero
  // Subnormal: value = mant * 2^-24. After k left shifts that bring the leading one to bit 10,
  // value = (mant / 1024) * 2^(-14 - k): a normal f32 with exponent -14 - k.
  uint32_t k = 0;
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    ++k;
  }
  const uint32_t f32_exp = 127u - 14u - k;
  return std::bit_cast<float>(sign | (f32_exp << 23) | ((mant & 0x3FFu) << 13));
}

// f32 -> binary16 bits, round to nearest, ties to even.
constexpr uint16_t f32_to_f16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t exp = (x >> 23) & 0xFFu;
  const uint32_t mant = x & 0x7FFFFFu;
  if (exp == 0xFF) {  // inf, or NaN forced quiet so a payload of only low bits stays NaN
    if (mant == 0) return static_cast<uint16_t>(sign | 0x7C00u);
    return static_cast<uint16_t>(sign | 0x7E00u | (mant >> 13));
  }
  const int e = static_cast<int>(exp) - 127;  // unbiased exponent
  if (e > 15) return static_cast<uint16_t>(sign | 0x7C00u);  // overflow (|f| >= 2^16)
  if (e >= -14) {
    // Normal range of f16. Keep 10 mantissa bits, round on the 13 dropped ones; a carry out of the
    // mantissa correctly bumps the exponent (and 65520 and above rounds up to infinity).
    uint32_t h = (static_cast<uint32_t>(e + 15) << 10) | (mant >> 13);
    const uint32_t rest = mant & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  if (e < -25) return sign;  // below half of the smallest subnormal (2^-25): rounds to zero
  // Subnormal result: value = full * 2^(e-23) with full = 1.mant as a 24-bit integer; the f16
  // subnormal unit is 2^-24, so the result is full >> shift rounded, shift = -e - 1 (14..24).
  const uint32_t full = mant | 0x800000u;
  const int shift = -e - 1;
  uint32_t h = full >> shift;
  const uint32_t rest = full & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (h & 1u))) ++h;  // may carry into the smallest normal: correct
  return static_cast<uint16_t>(sign | h);
}

// bf16 bits -> f32. Exact.
constexpr float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

// f32 -> bf16 bits, round to nearest, ties to even; NaN stays NaN (quiet).
constexpr uint16_t f32_to_bf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);
  const uint32_t rounded = x + 0x7FFFu + ((x >> 16) & 1u);  // overflow to inf is the right answer
  return static_cast<uint16_t>(rounded >> 16);
}

}  // namespace herd
