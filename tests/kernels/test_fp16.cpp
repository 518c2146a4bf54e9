// f16 / bf16 conversions: every f16 bit pattern, ties-to-even at every midpoint, and agreement
// with the hardware F16C conversions where the CPU has them.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "kernels/fp16.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HERD_TEST_F16C 1
__attribute__((target("f16c"))) static float hw_f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
__attribute__((target("f16c"))) static uint16_t hw_f32_to_f16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
static bool have_f16c() { return __builtin_cpu_supports("f16c"); }
#endif

namespace herd {
namespace {

// binary16 value from the definition: (-1)^s * 2^(e-15) * (1 + m/1024), subnormals 2^-14 * m/1024.
double f16_formula(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  const double mag = e == 0 ? std::ldexp(static_cast<double>(m), -24) : std::ldexp(1024.0 + m, e - 25);
  return s ? -mag : mag;
}

TEST(Fp16, EveryBitPatternMatchesTheDefinition) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    const float f = f16_to_f32(h);
    const int e = (h >> 10) & 31;
    if (e == 31) {
      if ((h & 1023) == 0) {
        EXPECT_TRUE(std::isinf(f)) << std::hex << h;
        EXPECT_EQ(std::signbit(f), (h >> 15) != 0) << std::hex << h;
      } else {
        EXPECT_TRUE(std::isnan(f)) << std::hex << h;
      }
      continue;
    }
    EXPECT_EQ(static_cast<double>(f), f16_formula(h)) << std::hex << h;
    EXPECT_EQ(std::signbit(f), (h >> 15) != 0) << std::hex << h;  // -0 stays -0
  }
}

TEST(Fp16, RoundTripIsIdentityForEveryNonNan) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    const bool nan = ((h >> 10) & 31) == 31 && (h & 1023) != 0;
    if (nan) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f16_to_f32(h))))) << std::hex << h;
    } else {
      EXPECT_EQ(f32_to_f16(f16_to_f32(h)), h) << std::hex << h;
    }
  }
}

// Between consecutive f16 values a < b the exact midpoint (representable in f32: 12 significant
// bits) must round to the one with an even bit pattern; one f32 ulp either side to the nearer.
TEST(Fp16, MidpointsRoundToEvenAndNeighboursToNearest) {
  for (uint16_t sign : {uint16_t{0}, uint16_t{0x8000}}) {
    for (uint32_t lo = 0; lo < 0x7BFF; ++lo) {  // 0x7BFF = 65504, the largest finite
      const auto a = static_cast<uint16_t>(sign | lo), b = static_cast<uint16_t>(sign | (lo + 1));
      const float fa = f16_to_f32(a), fb = f16_to_f32(b);
      const float mid = (fa + fb) / 2;
      ASSERT_EQ(static_cast<double>(mid), (static_cast<double>(fa) + fb) / 2) << "midpoint not exact";
      EXPECT_EQ(f32_to_f16(mid), (lo & 1) ? b : a) << std::hex << a;
      EXPECT_EQ(f32_to_f16(std::nextafter(mid, fa)), a) << std::hex << a;
      EXPECT_EQ(f32_to_f16(std::nextafter(mid, fb)), b) << std::hex << a;
    }
  }
}

TEST(Fp16, OverflowUnderflowAndSpecials) {
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(f32_to_f16(65519.996f), 0x7BFF);  // below the 65520 midpoint
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7C00);    // tie with odd 0x7BFF: rounds up to infinity
  EXPECT_EQ(f32_to_f16(1e10f), 0x7C00);
  EXPECT_EQ(f32_to_f16(-1e10f), 0xFC00);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);                        // tie with 0: even
  EXPECT_EQ(f32_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);  // just above
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_EQ(f32_to_f16(-std::ldexp(1.0f, -30)), 0x8000);  // signed zero
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(f32_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(f32_to_f16(0.1f), 0x2E66);
  // NaN with a payload only in the low 13 bits must not become infinity.
  const float low_nan = std::bit_cast<float>(0x7F800001u);
  ASSERT_TRUE(std::isnan(low_nan));
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(low_nan))));
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::numeric_limits<float>::quiet_NaN()))));
}

#ifdef HERD_TEST_F16C
TEST(Fp16, AgreesWithF16cHardware) {
  if (!have_f16c()) GTEST_SKIP() << "CPU has no F16C";
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    const float mine = f16_to_f32(h), hw = hw_f16_to_f32(h);
    if (std::isnan(hw)) {
      EXPECT_TRUE(std::isnan(mine));
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(mine), std::bit_cast<uint32_t>(hw)) << std::hex << h;
    }
  }
  std::mt19937 rng(1234);
  for (int i = 0; i < 2000000; ++i) {
    // Random bit patterns cover every exponent; bias half of them into f16's range.
    uint32_t bits = rng();
    if (i & 1) bits = (bits & 0x807FFFFFu) | ((100u + bits % 45u) << 23);
    const float f = std::bit_cast<float>(bits);
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), hw_f32_to_f16(f)) << std::hex << bits;
  }
}
#endif

TEST(Bf16, ToF32IsTheTopHalf) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const float f = bf16_to_f32(static_cast<uint16_t>(i));
    EXPECT_EQ(std::bit_cast<uint32_t>(f), i << 16);
  }
}

TEST(Bf16, FromF32RoundsToNearestEven) {
  auto bf = [](uint32_t bits) { return f32_to_bf16(std::bit_cast<float>(bits)); };
  EXPECT_EQ(bf(0x3F800000u), 0x3F80);  // 1.0 exact
  EXPECT_EQ(bf(0x3F808000u), 0x3F80);  // tie, even below
  EXPECT_EQ(bf(0x3F818000u), 0x3F82);  // tie, even above
  EXPECT_EQ(bf(0x3F808001u), 0x3F81);  // just above the tie
  EXPECT_EQ(bf(0x3F807FFFu), 0x3F80);  // just below
  EXPECT_EQ(bf(0xBF818000u), 0xBF82);  // negative tie
  EXPECT_EQ(bf(0x7F7FFFFFu), 0x7F80);  // FLT_MAX rounds to infinity
  EXPECT_EQ(bf(0x7F800000u), 0x7F80);
  EXPECT_TRUE(std::isnan(bf16_to_f32(bf(0x7F800001u))));  // low-payload NaN stays NaN
  EXPECT_TRUE(std::isnan(bf16_to_f32(bf(0xFFC00000u))));
  // Round trip of every non-NaN bf16 value.
  for (uint32_t i = 0; i < 65536; ++i) {
    const float f = bf16_to_f32(static_cast<uint16_t>(i));
    if (!std::isnan(f)) {
      EXPECT_EQ(f32_to_bf16(f), i);
    }
  }
}

}  // namespace
}  // namespace herd
