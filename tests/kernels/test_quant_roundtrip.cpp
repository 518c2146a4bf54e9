// quantize_row -> dequantize_row on seeded random data. For every element we read the grid its
// block defines straight from the stored bytes (step h, lowest level lo, highest level hi) and
// require round-to-nearest on that grid: |x - x^| <= max(h/2, dist(x, [lo, hi])), with the
// clamped distance itself at most one step. The step is then bounded by what the block's data
// needs (the "sensible scale" check), derived per format from the quantizer's construction.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/fp16.h"
#include "kernels/quant.h"

namespace herd {
namespace {

float f16_at(const uint8_t* p) { return f16_to_f32(static_cast<uint16_t>(p[0] | (p[1] << 8))); }

struct Grid {
  float h;       // distance between adjacent levels (>= 0)
  float lo, hi;  // lowest and highest representable value
};

void kquant_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Grid of element i (within its block) from the block bytes.
Grid grid_of(DType t, const uint8_t* blk, int i) {
  auto sym = [](float d, int neg, int pos) {
    const float a = -static_cast<float>(neg) * d, b = static_cast<float>(pos) * d;
    return Grid{std::fabs(d), std::min(a, b), std::max(a, b)};
  };
  switch (t) {
    case DType::Q4_0: return sym(f16_at(blk), 8, 7);
    case DType::Q5_0: return sym(f16_at(blk), 16, 15);
    case DType::Q8_0: return sym(f16_at(blk), 128, 127);
    case DType::Q4_1:
    case DType::Q5_1: {
      const float d = f16_at(blk), m = f16_at(blk + 2);
      const float top = t == DType::Q4_1 ? 15.0f : 31.0f;
      return Grid{d, m, top * d + m};
    }
    case DType::Q4_K:
    case DType::Q5_K: {
      int sc, m;
      kquant_scale_min(blk + 4, i / 32, &sc, &m);
      const float step = f16_at(blk) * static_cast<float>(sc), off = f16_at(blk + 2) * static_cast<float>(m);
      const float top = t == DType::Q4_K ? 15.0f : 31.0f;
      return Grid{std::fabs(step), -off, step * top - off};
    }
    case DType::Q6_K: return sym(f16_at(blk + 208) * static_cast<float>(static_cast<int8_t>(blk[192 + i / 16])), 32, 31);
    case DType::Q2_K: {  // scales[s] = sc | m << 4 per 16 values; x = d·sc·q − dmin·m, q in [0, 3]
      const float step = f16_at(blk + 80) * static_cast<float>(blk[i / 16] & 15);
      const float off = f16_at(blk + 82) * static_cast<float>(blk[i / 16] >> 4);
      return Grid{std::fabs(step), -off, 3 * step - off};
    }
    case DType::Q3_K: {  // 6-bit code: low 4 bits in scales[s % 8] (nibble s / 8), high 2 in scales[8 + s % 4]
      const uint8_t* sc = blk + 96;
      const int s = i / 16;
      const int code = ((sc[s % 8] >> (4 * (s / 8))) & 15) | (((sc[8 + s % 4] >> (2 * (s / 4))) & 3) << 4);
      return sym(f16_at(blk + 108) * static_cast<float>(code - 32), 4, 3);
    }
    default: return Grid{0, 0, 0};
  }
}

// Data shapes that stress different parts of the quantizers.
enum class Dist { Normal, Positive, Negative, MixedMagnitude, WithZerosAndConstants };

std::vector<float> make_data(Dist dist, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    switch (dist) {
      case Dist::Normal: x[i] = normal(rng); break;
      case Dist::Positive: x[i] = 1.0f + uni(rng); break;
      case Dist::Negative: x[i] = -3.0f + 0.5f * uni(rng); break;
      case Dist::MixedMagnitude: x[i] = normal(rng); break;
      case Dist::WithZerosAndConstants: x[i] = normal(rng); break;
    }
  }
  if (dist == Dist::MixedMagnitude)  // every 16 values their own magnitude, 1e-4 .. 1e2
    for (int64_t g = 0; g < n / 16; ++g) {
      const float s = std::pow(10.0f, -4.0f + 6.0f * uni(rng));
      for (int64_t i = 16 * g; i < 16 * g + 16; ++i) x[i] *= s;
    }
  if (dist == Dist::WithZerosAndConstants) {
    std::fill(x.begin(), x.begin() + std::min<int64_t>(n, 256), 0.0f);  // an all-zero (super-)block
    if (n >= 512) std::fill(x.begin() + 256, x.begin() + 512, 0.75f);  // a constant one
    if (n >= 768) x[600] = 50.0f;                                       // an outlier
  }
  return x;
}

// Float rounding in quantizer and dequantizer is a few ulps of the magnitudes involved.
float slack(float x, const Grid& g) { return std::ldexp(std::fabs(x) + std::fabs(g.lo) + std::fabs(g.hi), -20); }

void check_grid_rounding(DType t, const std::vector<float>& x, const std::vector<uint8_t>& q,
                         const std::vector<float>& y, const std::string& what) {
  const int64_t bs = block_size(t);
  for (size_t i = 0; i < x.size(); ++i) {
    const uint8_t* blk = q.data() + (i / bs) * block_bytes(t);
    const Grid g = grid_of(t, blk, static_cast<int>(i % bs));
    const float dist = x[i] < g.lo ? g.lo - x[i] : (x[i] > g.hi ? x[i] - g.hi : 0.0f);
    const float err = std::fabs(x[i] - y[i]);
    ASSERT_LE(dist, g.h + slack(x[i], g)) << what << " element " << i << ": value clamped by more than a step";
    ASSERT_LE(err, std::max(g.h / 2, dist) + slack(x[i], g))
        << what << " element " << i << " x=" << x[i] << " y=" << y[i] << " step=" << g.h;
  }
}

// Sensible scales: the step of each (sub-)block is no larger than its data requires, per format.
void check_step_bounds(DType t, const std::vector<float>& x, const std::vector<uint8_t>& q, const std::string& what) {
  const float rel = 1.0f + std::ldexp(1.0f, -9);  // f16 rounding of scales (2^-11) with margin
  const float tiny = std::ldexp(1.0f, -23);       // f16 subnormal spacing, with margin
  const int64_t bs = block_size(t);
  for (size_t b = 0; b < x.size() / bs; ++b) {
    const float* xb = x.data() + b * bs;
    const uint8_t* blk = q.data() + b * block_bytes(t);
    auto amax_of = [](const float* v, int n) {
      float a = 0;
      for (int i = 0; i < n; ++i) a = std::max(a, std::fabs(v[i]));
      return a;
    };
    const std::string where = what + " block " + std::to_string(b);
    switch (t) {
      case DType::Q4_0: EXPECT_LE(std::fabs(f16_at(blk)), amax_of(xb, 32) / 8 * rel + tiny) << where; break;
      case DType::Q5_0: EXPECT_LE(std::fabs(f16_at(blk)), amax_of(xb, 32) / 16 * rel + tiny) << where; break;
      case DType::Q8_0: EXPECT_LE(f16_at(blk), amax_of(xb, 32) / 127 * rel + tiny) << where; break;
      case DType::Q4_1:
      case DType::Q5_1: {
        const auto [mn, mx] = std::minmax_element(xb, xb + 32);
        const float top = t == DType::Q4_1 ? 15.0f : 31.0f;
        // m is *mn rounded down to f16 (at most one f16 ulp, |mn| 2^-10, lower).
        EXPECT_LE(f16_at(blk), (*mx - *mn + std::fabs(*mn) * std::ldexp(1.0f, -10)) / top * rel + tiny) << where;
        EXPECT_LE(f16_at(blk + 2), *mn) << where;
        break;
      }
      case DType::Q4_K:
      case DType::Q5_K: {
        // Offsets: dmin <= (largest needed offset) / 63; steps: d <= (largest needed span) / (63 top);
        // each sub-block step = d * ceil(need / d) <= need + d.
        const float top = t == DType::Q4_K ? 15.0f : 31.0f;
        const float d = f16_at(blk), dmin = f16_at(blk + 2);
        float max_off = 0, max_span = 0, span[8];
        for (int s = 0; s < 8; ++s) {
          const auto [mn, mx] = std::minmax_element(xb + 32 * s, xb + 32 * s + 32);
          const float lo = std::min(*mn, 0.0f);
          max_off = std::max(max_off, -lo);
          span[s] = *mx - lo;
          max_span = std::max(max_span, span[s]);
        }
        EXPECT_LE(dmin, max_off / 63 * rel + tiny) << where;
        EXPECT_LE(d, (max_span + dmin) / (63 * top) * rel * rel + tiny) << where;
        for (int s = 0; s < 8; ++s)
          EXPECT_LE(grid_of(t, blk, 32 * s).h, ((span[s] + dmin) / top + d) * rel + tiny) << where << " sub " << s;
        break;
      }
      case DType::Q6_K: {
        const float d = f16_at(blk + 208);
        float max_a = 0;
        for (int s = 0; s < 16; ++s) max_a = std::max(max_a, amax_of(xb + 16 * s, 16));
        EXPECT_LE(d, max_a / (32 * 127) * rel + tiny) << where;
        for (int s = 0; s < 16; ++s)
          EXPECT_LE(grid_of(t, blk, 16 * s).h, (amax_of(xb + 16 * s, 16) / 32 + d) * rel + tiny) << where;
        break;
      }
      case DType::Q2_K: {
        // As Q4_K with 4-bit codes and levels [0, 3] per sub-block of 16.
        const float d = f16_at(blk + 80), dmin = f16_at(blk + 82);
        float max_off = 0, max_span = 0, span[16];
        for (int s = 0; s < 16; ++s) {
          const auto [mn, mx] = std::minmax_element(xb + 16 * s, xb + 16 * s + 16);
          const float lo = std::min(*mn, 0.0f);
          max_off = std::max(max_off, -lo);
          span[s] = *mx - lo;
          max_span = std::max(max_span, span[s]);
        }
        EXPECT_LE(dmin, max_off / 15 * rel + tiny) << where;
        EXPECT_LE(d, (max_span + dmin) / (15 * 3) * rel * rel + tiny) << where;
        for (int s = 0; s < 16; ++s)
          EXPECT_LE(grid_of(t, blk, 16 * s).h, ((span[s] + dmin) / 3 + d) * rel + tiny) << where << " sub " << s;
        break;
      }
      case DType::Q3_K: {
        // As Q6_K: max |x| on level -4, |sc - 32| <= 31.
        const float d = f16_at(blk + 108);
        float max_a = 0;
        for (int s = 0; s < 16; ++s) max_a = std::max(max_a, amax_of(xb + 16 * s, 16));
        EXPECT_LE(d, max_a / (4 * 31) * rel + tiny) << where;
        for (int s = 0; s < 16; ++s)
          EXPECT_LE(grid_of(t, blk, 16 * s).h, (amax_of(xb + 16 * s, 16) / 4 + d) * rel + tiny) << where;
        break;
      }
      default: break;
    }
  }
}

class QuantRoundTrip : public ::testing::TestWithParam<DType> {};

TEST_P(QuantRoundTrip, NearestLevelOnASensibleGrid) {
  const DType t = GetParam();
  const int64_t n = 1024;  // 4 super-blocks, 32 small blocks
  for (Dist dist : {Dist::Normal, Dist::Positive, Dist::Negative, Dist::MixedMagnitude, Dist::WithZerosAndConstants}) {
    for (uint32_t seed : {1u, 2u, 3u}) {
      const auto x = make_data(dist, n, seed * 7919u + static_cast<uint32_t>(dist));
      std::vector<uint8_t> q(row_bytes(t, n));
      std::vector<float> y(n);
      quantize_row(t, x.data(), q.data(), n);
      dequantize_row(t, q.data(), y.data(), n);
      const std::string what = std::string(dtype_name(t)) + " dist " + std::to_string(static_cast<int>(dist)) +
                               " seed " + std::to_string(seed);
      switch (t) {
        case DType::F32: ASSERT_EQ(std::memcmp(x.data(), y.data(), n * sizeof(float)), 0) << what; break;
        case DType::F16:
        case DType::BF16: {
          const int mant_bits = t == DType::F16 ? 10 : 7;
          for (int64_t i = 0; i < n; ++i) {  // half an ulp, relative, or half the f16 subnormal spacing
            const float bound = std::max(std::ldexp(std::fabs(x[i]), -mant_bits - 1),
                                         t == DType::F16 ? std::ldexp(1.0f, -25) : 0.0f);
            ASSERT_LE(std::fabs(x[i] - y[i]), bound) << what << " element " << i;
          }
          break;
        }
        default:
          check_grid_rounding(t, x, q, y, what);
          check_step_bounds(t, x, q, what);
      }
      // All-zero data must come back exactly zero.
      if (dist == Dist::WithZerosAndConstants) {
        for (int64_t i = 0; i < 256; ++i) ASSERT_EQ(y[i], 0.0f) << what << " element " << i;
      }
    }
  }
}

// Coarse overall quality: RMS error of standard-normal data against the uniform-rounding value
// h / sqrt(12) with h the typical step (amax of a block of normals ~ 2.5 .. 4 sigma): catches a
// quantizer that is valid but wastes levels (e.g. a step twice too large).
class QuantRmsError : public ::testing::TestWithParam<DType> {};

TEST_P(QuantRmsError, OnNormalData) {
  const DType t = GetParam();
  const int64_t n = 256 * 64;
  const auto x = make_data(Dist::Normal, n, 42);
  std::vector<uint8_t> q(row_bytes(t, n));
  std::vector<float> y(n);
  quantize_row(t, x.data(), q.data(), n);
  dequantize_row(t, q.data(), y.data(), n);
  double se = 0;
  for (int64_t i = 0; i < n; ++i) se += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
  const double rms = std::sqrt(se / static_cast<double>(n));
  // levels across a block's range; worst-case range ~ 2 * 4.5 sigma over the block size used.
  double levels = 0;
  switch (t) {
    case DType::Q2_K: levels = 3; break;
    case DType::Q3_K: levels = 7; break;
    case DType::Q4_0: case DType::Q4_1: case DType::Q4_K: levels = 15; break;
    case DType::Q5_0: case DType::Q5_1: case DType::Q5_K: levels = 31; break;
    case DType::Q6_K: levels = 63; break;
    case DType::Q8_0: levels = 254; break;
    default: break;
  }
  const double bound = 9.0 / levels / std::sqrt(12.0);
  EXPECT_LE(rms, bound) << dtype_name(t);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, QuantRoundTrip, ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::Q4_0,
                                                                      DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0,
                                                                      DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K,
                                                                      DType::Q6_K),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });
INSTANTIATE_TEST_SUITE_P(QuantTypes, QuantRmsError, ::testing::Values(DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                                                                      DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K,
                                                                      DType::Q5_K, DType::Q6_K),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace herd
