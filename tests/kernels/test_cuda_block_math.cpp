// The CUDA backend's block math (kernels/cuda/block_math.h, hd_fp16.h), compiled by g++ here: the
// same HERD_HD functions matmul.cu's kernels are thin loops over, checked against the CPU
// definitions. No GPU is needed (or used): this proves the math and the index mappings, not that
// the kernels run.
//
// Bounds used below (u = 2^-24, the f32 unit roundoff):
//  * dequant_block, the f16/bf16 conversions and quantize_act_block32: bit-exact (same formulas,
//    same operation order, one rounding per operation on both sides; this file is compiled with
//    -ffp-contract=off like the CPU reference quant code).
//  * dot_row_q8 vs a double-precision sum of (dequantized weight) x (dequantized q8 activation):
//    the integer dots are exact (each |partial sum| < 2^24, block_math.h says why per type), so
//    the only error is f32 rounding: per 32-value unit at most 4 rounded operations on terms of
//    magnitude <= Σ_c (|d_w q_w| + |offset|)·|x_q| <= Σ_c 4 M_c amax_c (M_c = max |w| of c's weight
//    block: for quantize_row's blocks |d_w q_w| and the Q4_1/K-quant offsets are each <= 2 M, as
//    tests/kernels/simd_test_bodies.h derives), then cols/32 - 1 f32 additions in any order (lanes,
//    butterfly). γ_{cols/32 + 3} <= (cols/32 + 16) · 2u: the same f32 bound the SIMD tests use.
//  * dot_row_q8 vs the reference backend's matmul (double, unquantized x): that f32 bound plus the
//    activation quantization error Σ_c (d_exact (1/2 + 3e-5) + 127 |d - d_exact|) |w_c| of
//    simd_test_bodies.h (d_exact = amax_group / 127, d the stored scale): |x - d q| <= d/2 for
//    round-to-nearest q, plus the f32 roundings of 127/amax and x·(127/amax) (< 2e-5 d at |q| <=
//    127), plus 127 |d - d_exact| when d is f16-rounded (kActF16x32).
//  * the kernels' summation sequences: a decode lane is dot_row_q8_lanes(lane, 32) and the warp
//    sum warp_tree_sum (checked within the f32 bound); a dp4a tile thread and an mma warp (emulated
//    here with the fragment layout of the PTX ISA, staging included) give dot_row_q8's bits exactly.
//  * float family vs the reference matmul: products of f16/bf16-rounded values are exact in f32
//    (11 + 11 and 8 + 8 significant bits), F32 products round once; a sum of n terms in any order
//    is within (n - 1) u Σ|terms| (first order), n <= cols/32 + 1 per lane then 5 butterfly levels:
//    |y - y_ref| <= 2 (cols/32 + 8) u Σ|w x'|  (sequential: 2 (cols + 2) u Σ|w x'|).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/reference_backend.h"
#include "kernels/cuda/block_math.h"
#include "kernels/dtype.h"
#include "kernels/fp16.h"
#include "kernels/quant.h"
#if defined(__x86_64__) || defined(_M_X64)
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/x86/x86_kernels.h"
#elif defined(__aarch64__)
#include "kernels/cpu/arm/arm_kernels.h"
#include "kernels/cpu/cpu_backend.h"
#endif
#include "kernels/cpu/simd_table.h"

namespace herd {
namespace {

namespace hd = herd::cuda;
constexpr double kU = 1.0 / (1 << 24);

static_assert(hd::tid::kF32 == static_cast<uint32_t>(DType::F32) && hd::tid::kF16 == static_cast<uint32_t>(DType::F16) &&
              hd::tid::kBF16 == static_cast<uint32_t>(DType::BF16) && hd::tid::kQ4_0 == static_cast<uint32_t>(DType::Q4_0) &&
              hd::tid::kQ4_1 == static_cast<uint32_t>(DType::Q4_1) && hd::tid::kQ5_0 == static_cast<uint32_t>(DType::Q5_0) &&
              hd::tid::kQ5_1 == static_cast<uint32_t>(DType::Q5_1) && hd::tid::kQ8_0 == static_cast<uint32_t>(DType::Q8_0) &&
              hd::tid::kQ2_K == static_cast<uint32_t>(DType::Q2_K) && hd::tid::kQ3_K == static_cast<uint32_t>(DType::Q3_K) &&
              hd::tid::kQ4_K == static_cast<uint32_t>(DType::Q4_K) && hd::tid::kQ5_K == static_cast<uint32_t>(DType::Q5_K) &&
              hd::tid::kQ6_K == static_cast<uint32_t>(DType::Q6_K));
static_assert(hd::kActF32x32 == simd::kActF32x32 && hd::kActF16x32 == simd::kActF16x32 &&
              hd::kActF32x256 == simd::kActF32x256);

uint32_t raw(DType t) { return static_cast<uint32_t>(t); }
uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

TEST(cuda_block_math, BlockTableMatchesDtypeH) {
  for (const auto& d : kDTypes) {
    EXPECT_EQ(hd::block_values(raw(d.type)), d.block_size) << d.name;
    EXPECT_EQ(static_cast<size_t>(hd::block_bytes(raw(d.type))), d.block_bytes) << d.name;
    EXPECT_EQ(hd::is_q8_type(raw(d.type)), d.block_size >= 32) << d.name;
  }
  EXPECT_EQ(hd::block_values(4), 0);  // ids herd does not know
  EXPECT_EQ(hd::block_bytes(99), 0);
  EXPECT_FALSE(hd::is_q8_type(99));
  EXPECT_FALSE(hd::is_float_type(99));
}

// ---- f16 / bf16 ----

TEST(cuda_block_math, F16Bf16ToF32AllInputs) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const auto x = static_cast<uint16_t>(h);
    ASSERT_EQ(bits(hd::hd_f16_to_f32(x)), bits(f16_to_f32(x))) << std::hex << h;
    ASSERT_EQ(bits(hd::hd_bf16_to_f32(x)), bits(bf16_to_f32(x))) << std::hex << h;
  }
}

TEST(cuda_block_math, F32ToF16Bf16MatchesFp16H) {
  auto check = [](float f) {
    ASSERT_EQ(hd::hd_f32_to_f16(f), f32_to_f16(f)) << std::hexfloat << f;
    ASSERT_EQ(hd::hd_f32_to_bf16(f), f32_to_bf16(f)) << std::hexfloat << f;
  };
  // Every 16-bit value and the f32 values around it and half-way to its neighbours (the ties and
  // the rounding boundaries of both formats).
  for (uint32_t h = 0; h < 65536; ++h) {
    for (float base : {f16_to_f32(static_cast<uint16_t>(h)), bf16_to_f32(static_cast<uint16_t>(h))}) {
      const uint32_t b = bits(base);
      for (int64_t delta : {-0x1001LL, -0x1000LL, -0xFFFLL, -0x8000LL, -1LL, 0LL, 1LL, 0xFFFLL, 0x1000LL, 0x1001LL,
                            0x7FFFLL, 0x8000LL, 0x8001LL}) {
        const uint32_t v = static_cast<uint32_t>(static_cast<int64_t>(b) + delta);
        float f;
        std::memcpy(&f, &v, 4);
        check(f);
      }
    }
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t v = rng();
    float f;
    std::memcpy(&f, &v, 4);
    check(f);
  }
}

// ---- dequant_block ----

// Byte offsets of the f16 scale fields of each block type (dtype.h's layouts).
std::vector<int> scale_offsets(DType t) {
  switch (t) {
    case DType::Q4_0: case DType::Q5_0: case DType::Q8_0: return {0};
    case DType::Q4_1: case DType::Q5_1: case DType::Q4_K: case DType::Q5_K: return {0, 2};
    case DType::Q2_K: return {80, 82};
    case DType::Q3_K: return {108};
    case DType::Q6_K: return {208};
    default: return {};
  }
}

TEST(cuda_block_math, DequantBlockBitExactEveryType) {
  std::mt19937 rng(11);
  // Extreme f16 scales: max, smallest subnormal, largest subnormal, smallest normal, negative,
  // zero, ±inf and a NaN, and random bit patterns (the payload bytes are random throughout).
  const uint16_t special[] = {0x7BFF, 0x0001, 0x03FF, 0x0400, 0xFBFF, 0x0000, 0x8000, 0x3C00, 0x7C00, 0xFC00, 0x7E01};
  for (const auto& dt : kDTypes) {
    const int bb = static_cast<int>(dt.block_bytes), bv = static_cast<int>(dt.block_size);
    const int n_blocks = 300;
    std::vector<uint8_t> src(static_cast<size_t>(bb * n_blocks));
    for (auto& b : src) b = static_cast<uint8_t>(rng());
    const auto offs = scale_offsets(dt.type);
    for (int b = 0; b < n_blocks; ++b)
      for (size_t k = 0; k < offs.size(); ++k) {
        const uint16_t h = b < 200 ? special[(b + 3 * k) % std::size(special)] : static_cast<uint16_t>(rng());
        src[static_cast<size_t>(b * bb + offs[k])] = static_cast<uint8_t>(h & 0xFF);
        src[static_cast<size_t>(b * bb + offs[k] + 1)] = static_cast<uint8_t>(h >> 8);
      }
    std::vector<float> ref(static_cast<size_t>(bv * n_blocks)), got(ref.size(), -1.0f);
    dequantize_row(dt.type, src.data(), ref.data(), bv * n_blocks);
    for (int b = 0; b < n_blocks; ++b) hd::dequant_block(raw(dt.type), src.data() + b * bb, got.data() + b * bv);
    for (size_t i = 0; i < ref.size(); ++i)
      ASSERT_EQ(bits(got[i]), bits(ref[i])) << dt.name << " value " << i << ": " << got[i] << " vs " << ref[i];
  }
}

// ---- activation quantization ----

std::vector<float> make_x(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = normal(rng);
  for (int64_t i = 5; i < n; i += 97) x[static_cast<size_t>(i)] *= 20.0f;  // outliers: uneven blocks
  return x;
}

// x (cols values) -> q, d, s the way the quantize_act kernel does it: its work items (one scale
// group each: act_group_of), the group's amax, then its blocks.
void hd_quantize_row(const float* x, int64_t cols, int mode, int8_t* q, float* d, int16_t* s) {
  for (int64_t i = 0; i < hd::act_groups_per_row(cols, mode); ++i) {
    int64_t t, b0, b1;
    hd::act_group_of(i, cols, mode, &t, &b0, &b1);
    EXPECT_EQ(t, 0);
    float amax = 0.0f;
    for (int64_t b = b0; b < b1; ++b) amax = std::max(amax, hd::amax_block32(x + 32 * b));
    for (int64_t b = b0; b < b1; ++b) hd::quantize_act_block32(x + 32 * b, amax, mode, q + 32 * b, d + b, s + 2 * b);
  }
}

// Rows with the awkward cases: an all-zero block, a block of tiny values (127/amax overflows to
// inf: the x86 tables give -128 for the nonzero values; NEON saturates +inf to 127 instead, so
// Arm hosts leave that block out), huge values, exact-half products, plus random rows.
std::vector<float> act_test_row(int64_t cols, uint32_t seed) {
  auto x = make_x(cols, seed);
  for (int i = 0; i < 32; ++i) x[static_cast<size_t>(32 + i)] = 0.0f;
#if !defined(__aarch64__)
  for (int i = 0; i < 32; ++i) x[static_cast<size_t>(64 + i)] = static_cast<float>(i % 3 - 1) * 1e-39f * static_cast<float>(i);
#endif
  for (int i = 0; i < 32; ++i) x[static_cast<size_t>(96 + i)] = 1e30f * static_cast<float>(i - 16);
  // 127 · k / 254 = k / 2: ties for odd k (amax 254 makes 127/amax exactly 0.5).
  for (int i = 0; i < 32; ++i) x[static_cast<size_t>(128 + i)] = static_cast<float>(i == 0 ? 254 : i - 16);
  return x;
}

void expect_same_act(const std::vector<int8_t>& qa, const std::vector<float>& da, const std::vector<int16_t>& sa,
                     const std::vector<int8_t>& qb, const std::vector<float>& db, const std::vector<int16_t>& sb,
                     const char* what, int mode) {
  for (size_t i = 0; i < qa.size(); ++i) ASSERT_EQ(qa[i], qb[i]) << what << " mode " << mode << " q " << i;
  for (size_t i = 0; i < da.size(); ++i) ASSERT_EQ(bits(da[i]), bits(db[i])) << what << " mode " << mode << " d " << i;
  for (size_t i = 0; i < sa.size(); ++i) ASSERT_EQ(sa[i], sb[i]) << what << " mode " << mode << " s " << i;
}

TEST(cuda_block_math, QuantizeActMatchesCpuTablesAndFormula) {
  const int64_t cols = 256 * 3;
  int tables = 0;
  for (int mode : {hd::kActF32x32, hd::kActF16x32, hd::kActF32x256}) {
    for (uint32_t seed : {1u, 2u, 3u}) {
      const auto x = act_test_row(cols, seed);
      std::vector<int8_t> q(cols), q2(cols);
      std::vector<float> d(cols / 32), d2(cols / 32);
      std::vector<int16_t> s(cols / 16), s2(cols / 16);
      hd_quantize_row(x.data(), cols, mode, q.data(), d.data(), s.data());
      // The formula simd_test_bodies.h emulates (and the tables' comment states), in plain code.
      const int64_t group = mode == hd::kActF32x256 ? 256 : 32;
      for (int64_t g = 0; g < cols / group; ++g) {
        float a = 0;
        for (int64_t i = 0; i < group; ++i) a = std::max(a, std::fabs(x[static_cast<size_t>(group * g + i)]));
        float dg = a / 127.0f;
        if (mode == hd::kActF16x32) dg = f16_to_f32(f32_to_f16(dg));
        const float sc = a > 0 ? 127.0f / a : 0.0f;
        for (int64_t i = 0; i < group; ++i) {
          const int64_t c = group * g + i;
          // cvtps2dq: nearest-even, INT_MIN when out of int32 range; then saturation to int8.
          const float p = x[static_cast<size_t>(c)] * sc;
          const float v = std::isfinite(p) && std::fabs(p) < 2147483648.0f ? std::nearbyint(p) : -128.0f;
          q2[static_cast<size_t>(c)] = static_cast<int8_t>(std::clamp(v, -128.0f, 127.0f));
          d2[static_cast<size_t>(c / 32)] = dg;
        }
      }
      for (int64_t h = 0; h < cols / 16; ++h) {
        int sum = 0;
        for (int i = 0; i < 16; ++i) sum += q2[static_cast<size_t>(16 * h + i)];
        s2[static_cast<size_t>(h)] = static_cast<int16_t>(sum);
      }
      expect_same_act(q, d, s, q2, d2, s2, "formula", mode);
      // The CPU kernel tables this host runs.
      std::vector<const simd::Kernels*> ks;
#if defined(__x86_64__) || defined(_M_X64)
      if (cpu_supports_isa("avx2")) ks.push_back(&x86::kernels_avx2());
      if (cpu_supports_isa("avx512")) ks.push_back(&x86::kernels_avx512());
#elif defined(__aarch64__)
      ks.push_back(&arm::kernels_neon());
      if (cpu_supports_isa("neon-dotprod")) ks.push_back(&arm::kernels_neon_dotprod());
#endif
      for (const simd::Kernels* k : ks) {
        std::fill(q2.begin(), q2.end(), 0);
        k->quantize_act(x.data(), cols, q2.data(), d2.data(), s2.data(), mode);
        expect_same_act(q, d, s, q2, d2, s2, k->name, mode);
        ++tables;
      }
    }
  }
  if (tables == 0) GTEST_SKIP() << "no CPU kernel table on this host: checked against the plain formula only";
}

// ---- quantized dot products ----

struct QMatrix {
  DType type;
  int64_t rows, cols;
  size_t stride;
  std::vector<uint8_t> bytes;
  std::vector<float> deq;
  const uint8_t* row(int64_t r) const { return bytes.data() + r * stride; }
};

// Rows of quantize_row blocks (the 4 M bound holds for them, see the top): some off-centre (mins),
// some scaled by 1e-3 or 1e3 (small and large scales). Stride not a multiple of 4 (byte loads).
QMatrix make_matrix(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  QMatrix m{t, rows, cols, row_bytes(t, cols) + 7, {}, {}};
  m.bytes.assign(m.stride * rows, 0xCD);
  m.deq.resize(static_cast<size_t>(rows * cols));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<float> src(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = r % 5 == 1 ? 1e-3f : (r % 5 == 2 ? 1e3f : 1.0f);
    for (auto& v : src) v = scale * (normal(rng) + (r % 3 == 0 ? 0.3f : 0.0f));
    quantize_row(t, src.data(), m.bytes.data() + r * m.stride, cols);
    dequantize_row(t, m.bytes.data() + r * m.stride, m.deq.data() + r * cols, cols);
  }
  return m;
}

struct Act {
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int16_t> s;
  std::vector<float> amax;  // per 32: amax of its scale group
};
Act quantize_tokens(const std::vector<float>& x, int64_t n_tokens, int64_t cols, int mode) {
  Act a{std::vector<int8_t>(static_cast<size_t>(n_tokens * cols)), std::vector<float>(static_cast<size_t>(n_tokens * cols / 32)),
        std::vector<int16_t>(static_cast<size_t>(n_tokens * cols / 16)), std::vector<float>(static_cast<size_t>(n_tokens * cols / 32))};
  for (int64_t t = 0; t < n_tokens; ++t) {
    hd_quantize_row(x.data() + t * cols, cols, mode, a.q.data() + t * cols, a.d.data() + t * cols / 32,
                    a.s.data() + t * cols / 16);
    const int64_t g = hd::act_group_blocks(mode), nb = cols / 32;
    for (int64_t g0 = 0; g0 < nb; g0 += g) {
      float amax = 0.0f;
      for (int64_t b = g0; b < std::min(nb, g0 + g); ++b) amax = std::max(amax, hd::amax_block32(x.data() + t * cols + 32 * b));
      for (int64_t b = g0; b < std::min(nb, g0 + g); ++b) a.amax[static_cast<size_t>(t * nb + b)] = amax;
    }
  }
  return a;
}

// The decode warp: 32 lanes over the units, then the butterfly.
float warp_dot_q8(const QMatrix& m, int64_t r, const Act& a, int64_t t) {
  float lanes[32];
  const int64_t c = m.cols;
  for (int l = 0; l < 32; ++l)
    lanes[l] = hd::dot_row_q8_lanes(raw(m.type), m.row(r), a.q.data() + t * c, a.d.data() + t * c / 32,
                                    a.s.data() + t * c / 16, c, l, 32);
  return hd::warp_tree_sum(lanes);
}

class CudaDotQ8 : public ::testing::TestWithParam<DType> {};

TEST_P(CudaDotQ8, WithinF32BoundOfDequantizedProductAndQuantizationBoundOfReference) {
  const DType t = GetParam();
  const int64_t bs = block_size(t);
  const int64_t rows = 11, n_tokens = 3;
  // One block, one super-block's worth (256) and a few (7 blocks / 3 super-blocks).
  std::vector<int64_t> col_sizes = bs == 32 ? std::vector<int64_t>{32, 256, 32 * 7} : std::vector<int64_t>{256, 256 * 3};
  bool any_difference = false;
  for (int64_t cols : col_sizes) {
    const QMatrix m = make_matrix(t, rows, cols, 12 + static_cast<uint32_t>(cols));
    const auto x = make_x(n_tokens * cols, 200 + static_cast<uint32_t>(cols));
    std::vector<float> yref(static_cast<size_t>(n_tokens * rows));
    ReferenceBackend ref;
    ref.matmul(WeightMatrix{t, m.bytes.data(), rows, cols, m.stride}, x.data(), n_tokens, cols, yref.data(), rows);
    for (int mode : {hd::kActF32x32, hd::kActF16x32, hd::kActF32x256}) {
      if (mode == hd::kActF32x256 && cols % 256 != 0) continue;
      const Act a = quantize_tokens(x, n_tokens, cols, mode);
      for (int64_t tk = 0; tk < n_tokens; ++tk) {
        const int8_t* q = a.q.data() + tk * cols;
        const float* d = a.d.data() + tk * cols / 32;
        const int16_t* s = a.s.data() + tk * cols / 16;
        for (int64_t r = 0; r < rows; ++r) {
          const float* w = m.deq.data() + r * cols;
          double exact = 0, f32_mag = 0, quant_bound = 0;
          for (int64_t c = 0; c < cols; ++c) {
            exact += double(w[c]) * (double(d[c / 32]) * q[c]);
            double mw = 0;
            for (int64_t i = c / bs * bs; i < (c / bs + 1) * bs; ++i) mw = std::max(mw, double(std::fabs(w[i])));
            const double amax = a.amax[static_cast<size_t>(tk * cols / 32 + c / 32)];
            f32_mag += 4.0 * mw * std::max(amax, 127.0 * d[c / 32]);
            const double d_exact = amax / 127.0;
            quant_bound += (d_exact * (0.5 + 3e-5) + 127.0 * std::fabs(double(d[c / 32]) - d_exact)) * std::fabs(w[c]);
          }
          const double f32_bound = static_cast<double>(cols / 32 + 16) * 2.0 * kU * f32_mag;
          const float y = hd::dot_row_q8(raw(t), m.row(r), q, d, s, cols);
          ASSERT_LE(std::fabs(double(y) - exact), f32_bound)
              << dtype_name(t) << " cols " << cols << " mode " << mode << " t " << tk << " r " << r << ": " << y << " vs " << exact;
          ASSERT_EQ(bits(y), bits(hd::dot_row_q8_lanes(raw(t), m.row(r), q, d, s, cols, 0, 1)))
              << "dot_row_q8 is the one-lane sequence";
          const float yw = warp_dot_q8(m, r, a, tk);
          ASSERT_LE(std::fabs(double(yw) - exact), f32_bound) << dtype_name(t) << " (warp) cols " << cols << " r " << r;
          const double yr = yref[static_cast<size_t>(tk * rows + r)];
          ASSERT_LE(std::fabs(double(y) - yr), quant_bound + f32_bound)
              << dtype_name(t) << " vs reference, cols " << cols << " mode " << mode << " t " << tk << " r " << r;
          any_difference |= double(y) != yr;
        }
      }
    }
  }
  EXPECT_TRUE(any_difference) << "8-bit results equal the reference bits: quantization not applied?";
}

// The prefill tile kernel's thread: the activations staged kTileUnits units at a time through the
// stage_* mapping into tile-local arrays, each unit through dot_unit_q8 in unit order. Must give
// dot_row_q8's bits exactly (same operations, same order), for every (row, token) of every tile.
TEST_P(CudaDotQ8, TileEmulationGivesDotRowBits) {
  const DType t = GetParam();
  const int64_t rows = 70, n_tokens = 35, cols = block_size(t) == 32 ? 32 * 9 : 256 * 2;
  const QMatrix m = make_matrix(t, rows, cols, 5);
  const auto x = make_x(n_tokens * cols, 6);
  const Act a = quantize_tokens(x, n_tokens, cols, hd::kActF16x32);
  const int64_t nu = cols / 32;
  const int upb = hd::units_per_block(raw(t)), bb = hd::block_bytes(raw(t));
  std::vector<int> produced(static_cast<size_t>(rows * n_tokens), 0);
  for (int64_t bx = 0; bx < hd::tile_grid_x(rows); ++bx)
    for (int64_t by = 0; by < hd::tile_grid_y(n_tokens); ++by) {
      const int64_t row0 = hd::tile_row0(bx), tok0 = hd::tile_tok0(by);
      std::vector<float> acc(static_cast<size_t>(hd::kTileThreads * hd::kTileTokensPerThread), 0.0f);
      for (int64_t u0 = 0; u0 < nu; u0 += hd::kTileUnits) {
        int32_t sq[hd::kTileTokens][hd::kStageQWords];
        float sd[hd::kTileTokens][hd::kStageD];
        int16_t ss[hd::kTileTokens][hd::kStageS];
        std::memset(sq, 0x55, sizeof sq);  // garbage: every slot the threads read must be staged
        for (int th = 0; th < hd::kTileThreads; ++th) {
          for (int e = th; e < hd::kTileTokens * hd::kStageQWords; e += hd::kTileThreads) {
            const int tt = hd::stage_token(e, hd::kStageQWords), w = hd::stage_slot(e, hd::kStageQWords);
            const int64_t tok = tok0 + tt, u = u0 + w / 8;
            int32_t v = 0;
            if (tok < n_tokens && u < nu) std::memcpy(&v, a.q.data() + tok * cols + 32 * u + 4 * (w % 8), 4);
            sq[tt][w] = v;
          }
          for (int e = th; e < hd::kTileTokens * hd::kStageD; e += hd::kTileThreads) {
            const int tt = hd::stage_token(e, hd::kStageD), k = hd::stage_slot(e, hd::kStageD);
            const int64_t tok = tok0 + tt, u = u0 + k;
            sd[tt][k] = tok < n_tokens && u < nu ? a.d[static_cast<size_t>(tok * nu + u)] : 0.0f;
          }
          for (int e = th; e < hd::kTileTokens * hd::kStageS; e += hd::kTileThreads) {
            const int tt = hd::stage_token(e, hd::kStageS), k = hd::stage_slot(e, hd::kStageS);
            const int64_t tok = tok0 + tt, h = 2 * u0 + k;
            ss[tt][k] = tok < n_tokens && h < 2 * nu ? a.s[static_cast<size_t>(tok * 2 * nu + h)] : int16_t{0};
          }
        }
        const int64_t nu_chunk = std::min<int64_t>(hd::kTileUnits, nu - u0);
        for (int th = 0; th < hd::kTileThreads; ++th) {
          const int64_t r = row0 + hd::tile_row(th);
          if (r >= rows) continue;
          for (int64_t k = 0; k < nu_chunk; ++k) {
            const int64_t u = u0 + k;
            const uint8_t* blk = m.row(r) + (u / upb) * bb;
            for (int j = 0; j < hd::kTileTokensPerThread; ++j) {
              const int tt = hd::tile_token(th, j);
              float& acc_j = acc[static_cast<size_t>(th * hd::kTileTokensPerThread + j)];
              acc_j = hd::hd_add(acc_j, hd::dot_unit_q8(raw(t), blk, static_cast<int>(u % upb),
                                                       reinterpret_cast<const int8_t*>(&sq[tt][8 * k]), sd[tt][k], &ss[tt][2 * k]));
            }
          }
        }
      }
      for (int th = 0; th < hd::kTileThreads; ++th)
        for (int j = 0; j < hd::kTileTokensPerThread; ++j) {
          const int64_t r = row0 + hd::tile_row(th), tok = tok0 + hd::tile_token(th, j);
          if (r >= rows || tok >= n_tokens) continue;
          ++produced[static_cast<size_t>(tok * rows + r)];
          const float want = hd::dot_row_q8(raw(t), m.row(r), a.q.data() + tok * cols, a.d.data() + tok * nu,
                                            a.s.data() + tok * 2 * nu, cols);
          ASSERT_EQ(bits(acc[static_cast<size_t>(th * hd::kTileTokensPerThread + j)]), bits(want))
              << dtype_name(t) << " r " << r << " tok " << tok;
        }
    }
  for (int p : produced) ASSERT_EQ(p, 1);
}

// mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 as the PTX ISA defines it, on the 32 lanes'
// registers (lane = 4g + t): A[g + 8i][4t + b] = byte b of a[lane][i], B[4t + b][g] = byte b of
// b[lane], D = A·B, d[lane][j] = D[g + 8(j / 2)][2t + j % 2].
void mma_m16n8k16_s8(const int (&a)[32][2], const int (&b)[32], int (&d)[32][4]) {
  auto byte = [](int w, int k) { return static_cast<int>(static_cast<int8_t>(static_cast<uint32_t>(w) >> (8 * k))); };
  int A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int k = 0; k < 4; ++k) {
      A[g][4 * t + k] = byte(a[lane][0], k);
      A[g + 8][4 * t + k] = byte(a[lane][1], k);
      B[4 * t + k][g] = byte(b[lane], k);
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int j = 0; j < 4; ++j) {
      const int row = g + 8 * (j / 2), col = 2 * t + j % 2;
      int sum = 0;
      for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
      d[lane][j] = sum;
    }
  }
}

// The tensor-core prefill kernel (matmul.cu, tile_mma_kernel) emulated warp by warp with the mma
// above: each (row, token) of every tile produced once, with dot_row_q8's bits.
TEST_P(CudaDotQ8, MmaTileEmulationGivesDotRowBits) {
  const DType t = GetParam();
  const int64_t rows = 70, n_tokens = 35, cols = block_size(t) == 32 ? 32 * 9 : 256 * 2;
  const QMatrix m = make_matrix(t, rows, cols, 15);
  const auto x = make_x(n_tokens * cols, 16);
  const Act a = quantize_tokens(x, n_tokens, cols, block_size(t) == 32 ? hd::kActF16x32 : hd::kActF32x256);
  const int64_t nu = cols / 32;
  const int upb = hd::units_per_block(raw(t)), bb = hd::block_bytes(raw(t));
  std::vector<int> produced(static_cast<size_t>(rows * n_tokens), 0);
  for (int64_t bx = 0; bx < hd::tile_grid_x(rows); ++bx)
    for (int64_t by = 0; by < hd::tile_grid_y(n_tokens); ++by) {
      const int64_t row0 = hd::tile_row0(bx), tok0 = hd::tile_tok0(by);
      for (int warp = 0; warp < hd::kMmaWarps; ++warp) {
        float acc[32][2][4] = {};
        for (int64_t u = 0; u < nu; ++u) {
          // The staged activations of unit u: token tt's 8 words (zeros past n_tokens).
          auto act_word = [&](int tt, int wd) {
            int32_t v = 0;
            if (tok0 + tt < n_tokens) std::memcpy(&v, a.q.data() + (tok0 + tt) * cols + 32 * u + 4 * wd, 4);
            return v;
          };
          const int64_t off = (u / upb) * bb;
          const int sub = static_cast<int>(u % upb);
          auto wrow = [&](int lane, int i) {
            const int64_t r = row0 + hd::mma_a_row(warp, lane, i);
            return m.row(r < rows ? r : 0) + off;
          };
          int dot[2][2][32][4];
          for (int half = 0; half < 2; ++half)
            for (int nt = 0; nt < 2; ++nt) {
              int fa[32][2], fb[32];
              for (int lane = 0; lane < 32; ++lane) {
                fa[lane][0] = hd::unit_word(raw(t), wrow(lane, 0), sub, hd::mma_word(lane, half));
                fa[lane][1] = hd::unit_word(raw(t), wrow(lane, 1), sub, hd::mma_word(lane, half));
                fb[lane] = act_word(hd::mma_b_token(warp, lane, nt), hd::mma_word(lane, half));
              }
              mma_m16n8k16_s8(fa, fb, dot[nt][half]);
            }
          for (int lane = 0; lane < 32; ++lane)
            for (int nt = 0; nt < 2; ++nt)
              for (int c = 0; c < 4; ++c) {
                const int64_t tok = tok0 + hd::mma_c_token(warp, lane, nt, c);
                const float da = tok < n_tokens ? a.d[static_cast<size_t>(tok * nu + u)] : 0.0f;
                const int16_t zero[2] = {0, 0};
                const int16_t* s = tok < n_tokens ? a.s.data() + tok * 2 * nu + 2 * u : zero;
                acc[lane][nt][c] = hd::hd_add(acc[lane][nt][c], hd::unit_scale(raw(t), wrow(lane, c >> 1), sub, dot[nt][0][lane][c],
                                                                               dot[nt][1][lane][c], da, s));
              }
        }
        for (int lane = 0; lane < 32; ++lane)
          for (int nt = 0; nt < 2; ++nt)
            for (int c = 0; c < 4; ++c) {
              const int64_t r = row0 + hd::mma_c_row(warp, lane, c), tok = tok0 + hd::mma_c_token(warp, lane, nt, c);
              if (r >= rows || tok >= n_tokens) continue;
              ++produced[static_cast<size_t>(tok * rows + r)];
              const float want = hd::dot_row_q8(raw(t), m.row(r), a.q.data() + tok * cols, a.d.data() + tok * nu,
                                                a.s.data() + tok * 2 * nu, cols);
              ASSERT_EQ(bits(acc[lane][nt][c]), bits(want)) << dtype_name(t) << " r " << r << " tok " << tok;
            }
      }
    }
  for (int p : produced) ASSERT_EQ(p, 1);
}

INSTANTIATE_TEST_SUITE_P(cuda_block_math, CudaDotQ8,
                         ::testing::Values(DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2_K,
                                           DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K),
                         [](const ::testing::TestParamInfo<DType>& i) { return std::string(dtype_name(i.param)); });

// ---- float family ----

TEST(cuda_block_math, FloatRowDotWithinSummationBoundOfReference) {
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    for (int64_t cols : {1, 33, 101, 263}) {
      const int64_t rows = 5, n_tokens = 2;
      std::vector<float> src = make_x(rows * cols, 31);
      const size_t stride = row_bytes(t, cols) + 3;
      std::vector<uint8_t> w(stride * rows);
      std::vector<float> wdeq(static_cast<size_t>(rows * cols));
      for (int64_t r = 0; r < rows; ++r) {
        quantize_row(t, src.data() + r * cols, w.data() + r * stride, cols);
        dequantize_row(t, w.data() + r * stride, wdeq.data() + r * cols, cols);
      }
      const auto x = make_x(n_tokens * cols, 32);
      std::vector<float> yref(static_cast<size_t>(n_tokens * rows));
      ReferenceBackend ref;
      ref.matmul(WeightMatrix{t, w.data(), rows, cols, stride}, x.data(), n_tokens, cols, yref.data(), rows);
      for (int64_t tk = 0; tk < n_tokens; ++tk)
        for (int64_t r = 0; r < rows; ++r) {
          double mag = 0;
          for (int64_t c = 0; c < cols; ++c)
            mag += std::fabs(double(wdeq[r * cols + c]) * hd::round_activation(raw(t), x[tk * cols + c]));
          float lanes[32];
          for (int l = 0; l < 32; ++l)
            lanes[l] = hd::dot_row_f_lanes(raw(t), w.data() + r * stride, x.data() + tk * cols, cols, l, 32);
          const float yw = hd::warp_tree_sum(lanes);
          const float ys = hd::dot_row_f_lanes(raw(t), w.data() + r * stride, x.data() + tk * cols, cols, 0, 1);
          const double yr = yref[static_cast<size_t>(tk * rows + r)];
          ASSERT_LE(std::fabs(yw - yr), 2.0 * static_cast<double>(cols / 32 + 8) * kU * mag)
              << dtype_name(t) << " cols " << cols << " r " << r;
          ASSERT_LE(std::fabs(ys - yr), 2.0 * static_cast<double>(cols + 2) * kU * mag)
              << dtype_name(t) << " cols " << cols << " r " << r;
        }
    }
  }
}

// ---- index mappings ----

TEST(cuda_block_math, DecodeMappingCoversEveryOutputOnce) {
  for (int64_t rows : {1, 3, 4, 5, 63, 64, 65, 203})
    for (int64_t n_tokens : {1, 2, 7, 8, 9, 17}) {
      std::vector<int> count(static_cast<size_t>(rows * n_tokens), 0);
      for (int64_t bx = 0; bx < hd::decode_grid_x(rows); ++bx)
        for (int64_t by = 0; by < hd::decode_grid_y(n_tokens); ++by)
          for (int w = 0; w < hd::kDecodeWarps; ++w) {
            const int64_t r = hd::decode_row(bx, w);
            if (r >= rows) continue;
            for (int j = 0; j < hd::decode_tokens(by, n_tokens); ++j) {
              const int64_t tok = hd::decode_token0(by) + j;
              ASSERT_LT(tok, n_tokens);
              ++count[static_cast<size_t>(tok * rows + r)];
            }
          }
      for (size_t i = 0; i < count.size(); ++i) ASSERT_EQ(count[i], 1) << "rows " << rows << " n_tokens " << n_tokens << " i " << i;
    }
}

TEST(cuda_block_math, TileMappingCoversEveryOutputOnce) {
  for (int64_t rows : {1, 5, 63, 64, 65, 130, 203})
    for (int64_t n_tokens : {1, 9, 31, 32, 33, 70}) {
      std::vector<int> count(static_cast<size_t>(rows * n_tokens), 0);
      for (int64_t bx = 0; bx < hd::tile_grid_x(rows); ++bx)
        for (int64_t by = 0; by < hd::tile_grid_y(n_tokens); ++by)
          for (int th = 0; th < hd::kTileThreads; ++th)
            for (int j = 0; j < hd::kTileTokensPerThread; ++j) {
              const int64_t r = hd::tile_row0(bx) + hd::tile_row(th), tok = hd::tile_tok0(by) + hd::tile_token(th, j);
              if (r >= rows || tok >= n_tokens) continue;
              ++count[static_cast<size_t>(tok * rows + r)];
            }
      for (size_t i = 0; i < count.size(); ++i) ASSERT_EQ(count[i], 1) << "rows " << rows << " n_tokens " << n_tokens << " i " << i;
    }
  // Staging: every (token, slot) of each staged array loaded by exactly one thread.
  for (int per_token : {hd::kStageQWords, hd::kStageD, hd::kStageS}) {
    std::vector<int> count(static_cast<size_t>(hd::kTileTokens * per_token), 0);
    for (int th = 0; th < hd::kTileThreads; ++th)
      for (int e = th; e < hd::kTileTokens * per_token; e += hd::kTileThreads)
        ++count[static_cast<size_t>(hd::stage_token(e, per_token) * per_token + hd::stage_slot(e, per_token))];
    for (int c : count) ASSERT_EQ(c, 1) << "per_token " << per_token;
  }
}

// The quantize_act kernel's work items: every (token, 32-value block) in exactly one group, the
// groups of kActF32x256 being the CPU tables' (8 blocks from a multiple of 8, the last one shorter).
TEST(cuda_block_math, ActGroupsCoverEveryBlockOnce) {
  for (int mode : {hd::kActF32x32, hd::kActF16x32, hd::kActF32x256})
    for (int64_t cols : {32, 64, 256, 288, 32 * 17, 1024})
      for (int64_t n_tokens : {1, 3}) {
        const int64_t nb = cols / 32;
        std::vector<int> count(static_cast<size_t>(n_tokens * nb), 0);
        for (int64_t i = 0; i < n_tokens * hd::act_groups_per_row(cols, mode); ++i) {
          int64_t t, b0, b1;
          hd::act_group_of(i, cols, mode, &t, &b0, &b1);
          ASSERT_LT(t, n_tokens);
          ASSERT_EQ(b0 % hd::act_group_blocks(mode), 0);
          ASSERT_TRUE(b1 > b0 && b1 <= nb && (b1 - b0 == hd::act_group_blocks(mode) || b1 == nb));
          for (int64_t b = b0; b < b1; ++b) ++count[static_cast<size_t>(t * nb + b)];
        }
        for (int c : count) ASSERT_EQ(c, 1) << "mode " << mode << " cols " << cols;
      }
}

// q8_act_bytes / q8_act_view's layout: parts 16-byte aligned, disjoint, each big enough.
TEST(cuda_block_math, Q8ActLayoutAlignedAndDisjoint) {
  for (int64_t n : {1, 3, 7, 512})
    for (int64_t cols : {32, 96, 576, 4096}) {
      uint64_t off_d = 0, off_s = 0;
      const uint64_t total = hd::q8_act_layout(n, cols, &off_d, &off_s);
      EXPECT_EQ(off_d % 16, 0u);
      EXPECT_EQ(off_s % 16, 0u);
      EXPECT_EQ(total % 16, 0u);
      EXPECT_GE(off_d, static_cast<uint64_t>(n * cols));
      EXPECT_GE(off_s - off_d, static_cast<uint64_t>(n * cols / 32 * 4));
      EXPECT_GE(total - off_s, static_cast<uint64_t>(n * cols / 16 * 2));
      EXPECT_LT(total, static_cast<uint64_t>(n * cols + n * cols / 8 + n * cols / 8 + 48));
    }
}

TEST(cuda_block_math, ElementGridCoversAndStaysInCudaLimits) {
  for (int64_t total : {0LL, 1LL, 255LL, 256LL, 257LL, 100000LL, 1LL << 40}) {
    const int64_t g = hd::elem_grid(total);
    EXPECT_GE(g, 1);
    EXPECT_LE(g, 65535);
    EXPECT_TRUE(g * hd::kElemThreads >= total || g == hd::kElemMaxBlocks) << total;  // grid-stride covers the rest
  }
}

}  // namespace
}  // namespace herd
