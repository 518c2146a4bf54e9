// Arm NEON backend matmul vs the scalar reference, for every DType × table (baseline NEON with
// vmull_s8, ARMv8.2 dotprod with vdotq_s32) × path. Built only for AArch64 (natively, or by the
// tests/neon cross build that runs it under qemu-aarch64 with and without dotprod). The bounds are
// test_simd_matmul.cpp's, whose derivation holds unchanged for these kernels (same activation
// quantization formula, exact integer dots, f32 scale products summed in sequences of at most
// cols/32 + 8 per lane):
//
//
// Exact path: the only difference from the reference is f32 accumulation (with FMA, in a fixed
// order) instead of double, so |y - y_ref| <= 2 (cols + 8) 2^-24 Σ|w·x| (a standard γ_n bound with
// a factor 2 of slack for the final reductions).
//
// Fast path (8-bit activations). Derivation of the bound: per scale group g (32 values, or 256
// for K-quant weights), d = amax_g / 127 and q_i = round(x_i · 127 / amax_g), so
// |x_i - d q_i| <= d / 2, plus the f32 rounding of x_i · (127 / amax_g) and of d (each <= 2^-24
// relative, times |q| <= 127 levels: < 2e-5 d). For the 32-value formats the stored scale d' is d
// rounded to f16 (llama.cpp's Q8_0), which adds |d' - d| · |q| <= 127 |d' - d|. The integer dots
// are exact, so
//   |y_fast - y_ref| <= Σ_i (d_i (1/2 + 3e-5) + 127 |d'_i - d_i|) |w_i|  +  f32 error of the scale products.
// The f32 part: every term the kernel adds is a (scale × integer) of magnitude at most
// 4 · M_i · amax_g per element (M_i = max |w| over i's weight block: |d_w q_w| and the Q4_1/K-quant
// offsets are each <= 2 M_i), summed in sequences of at most cols/32 + 8, so
// (cols/32 + 16) 2^-23 Σ_i 4 M_i amax_g. A second, much tighter check emulates the quantization in
// scalar code (same formula, same rounding) and needs only that f32 term: it pins the unpacking of
// every format exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/reference_backend.h"
#include "kernels/fp16.h"
#include "kernels/quant.h"

namespace herd {
namespace {

constexpr double kU = 1.0 / (1 << 24);  // f32 unit roundoff

struct Matrix {
  DType type;
  int64_t rows, cols;
  size_t stride;
  std::vector<uint8_t> bytes;
  std::vector<float> deq;  // [rows, cols]
  WeightMatrix view() const { return WeightMatrix{type, bytes.data(), rows, cols, stride}; }
};

Matrix make_matrix(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  Matrix m{t, rows, cols, row_bytes(t, cols) + 7, {}, {}};
  m.bytes.assign(m.stride * rows, 0xCD);
  m.deq.resize(static_cast<size_t>(rows * cols));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<float> src(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : src) v = normal(rng) + (r % 3 == 0 ? 0.3f : 0.0f);  // some rows off-centre (mins)
    quantize_row(t, src.data(), m.bytes.data() + r * m.stride, cols);
    dequantize_row(t, m.bytes.data() + r * m.stride, m.deq.data() + r * cols, cols);
  }
  return m;
}

std::vector<float> make_x(int64_t n_tokens, int64_t ld, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n_tokens * ld));
  for (auto& v : x) v = normal(rng);
  for (int64_t i = 5; i < static_cast<int64_t>(x.size()); i += 97) x[i] *= 20.0f;  // outliers: uneven blocks
  return x;
}

float seen(DType t, float v) {
  if (t == DType::F16) return f16_to_f32(f32_to_f16(v));
  if (t == DType::BF16) return bf16_to_f32(f32_to_bf16(v));
  return v;
}

int64_t cols_for(DType t) { return block_size(t) == 1 ? 101 : (block_size(t) == 32 ? 32 * 7 : 256 * 2); }

bool has_fast_kernel(DType t) { return t != DType::F32 && t != DType::F16 && t != DType::BF16; }

struct Param {
  const char* isa;
  DType type;
};

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  std::string n = std::string(info.param.isa) + "_" + std::string(dtype_name(info.param.type));
  for (auto& ch : n)
    if (ch == '-') ch = '_';
  return n;
}

std::vector<Param> all_params() {
  std::vector<Param> p;
  for (const char* isa : {"neon", "neon-dotprod"})
    for (const auto& d : kDTypes) p.push_back({isa, d.type});
  return p;
}

#define REQUIRE_ISA(isa)      \
  if (cpu_supports_isa(isa)) { \
  } else                       \
    GTEST_SKIP() << "this CPU cannot run the " << (isa) << " kernels: " << cpu_backend_description()

std::vector<float> run(const char* isa, bool exact, int threads, const Matrix& m, const std::vector<float>& x,
                       int64_t n_tokens, int64_t ldx, int64_t ldy) {
  CpuBackendOptions o;
  o.isa = isa;
  o.exact = exact;
  auto be = make_cpu_backend(o);
  be->set_threads(threads);
  std::vector<float> y(static_cast<size_t>(n_tokens * ldy), -777.0f);
  be->matmul(m.view(), x.data(), n_tokens, ldx, y.data(), ldy);
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t r = m.rows; r < ldy; ++r) EXPECT_EQ(y[t * ldy + r], -777.0f) << "padding overwritten";
  return y;
}

class NeonMatmul : public ::testing::TestWithParam<Param> {};

TEST_P(NeonMatmul, ExactPathWithinF32Bound) {
  const auto [isa, t] = GetParam();
  REQUIRE_ISA(isa);
  const int64_t rows = 37, cols = cols_for(t), ldx = cols + 3, ldy = rows + 5;
  const Matrix m = make_matrix(t, rows, cols, 11);
  for (int64_t n_tokens = 1; n_tokens <= 9; ++n_tokens) {
    const auto x = make_x(n_tokens, ldx, 100 + static_cast<uint32_t>(n_tokens));
    const auto y = run(isa, true, 1, m, x, n_tokens, ldx, ldy);
    std::vector<float> yref(static_cast<size_t>(n_tokens * ldy));
    ReferenceBackend ref;
    ref.matmul(m.view(), x.data(), n_tokens, ldx, yref.data(), ldy);
    for (int64_t tk = 0; tk < n_tokens; ++tk)
      for (int64_t r = 0; r < rows; ++r) {
        double mag = 0;
        for (int64_t c = 0; c < cols; ++c) mag += std::fabs(double(m.deq[r * cols + c]) * seen(t, x[tk * ldx + c]));
        const double tol = 2.0 * static_cast<double>(cols + 8) * kU * mag + 1e-30;
        ASSERT_LE(std::fabs(double(y[tk * ldy + r]) - yref[tk * ldy + r]), tol)
            << isa << " " << dtype_name(t) << " n_tokens " << n_tokens << " t " << tk << " r " << r;
      }
  }
}

TEST_P(NeonMatmul, FastPathWithinActivationQuantizationBound) {
  const auto [isa, t] = GetParam();
  REQUIRE_ISA(isa);
  const int64_t rows = 37, cols = cols_for(t), ldx = cols + 3, ldy = rows + 5;
  const int64_t wblock = block_size(t);
  const Matrix m = make_matrix(t, rows, cols, 12);
  bool any_difference = false;
  for (int64_t n_tokens = 1; n_tokens <= 9; ++n_tokens) {
    const auto x = make_x(n_tokens, ldx, 200 + static_cast<uint32_t>(n_tokens));
    const auto y = run(isa, false, 1, m, x, n_tokens, ldx, ldy);
    if (!has_fast_kernel(t)) {  // F32/F16/BF16 take the exact path in both modes: same bits
      EXPECT_EQ(y, run(isa, true, 1, m, x, n_tokens, ldx, ldy));
      continue;
    }
    std::vector<float> yref(static_cast<size_t>(n_tokens * ldy));
    ReferenceBackend ref;
    ref.matmul(m.view(), x.data(), n_tokens, ldx, yref.data(), ldy);
    for (int64_t tk = 0; tk < n_tokens; ++tk) {
      // Scalar emulation of the activation quantization (same formula and rounding as the kernel):
      // llama.cpp's scales, f16-rounded per 32 values for the 32-value formats, one f32 per 256
      // for the K-quants (NeonBackend's act_scale_mode).
      const float* xt = x.data() + tk * ldx;
      const bool k_quant = block_size(t) == 256;
      const int64_t group = k_quant ? 256 : 32;
      std::vector<double> xq(static_cast<size_t>(cols));
      std::vector<float> amax(static_cast<size_t>(cols / 32));  // amax of the scale group of each 32
      std::vector<double> elem_err(static_cast<size_t>(cols / 32));  // bound on |x - d q| per element
      for (int64_t g = 0; g < cols / group; ++g) {
        float a = 0;
        for (int64_t i = 0; i < group; ++i) a = std::max(a, std::fabs(xt[group * g + i]));
        const float d_exact = a / 127.0f, s = a > 0 ? 127.0f / a : 0.0f;
        const float d = k_quant ? d_exact : f16_to_f32(f32_to_f16(d_exact));
        for (int64_t i = 0; i < group; ++i) {
          xq[group * g + i] = double(d) * std::nearbyint(xt[group * g + i] * s);
          amax[(group * g + i) / 32] = a;
          elem_err[(group * g + i) / 32] = d_exact * (0.5 + 3e-5) + 127.0 * std::fabs(double(d) - d_exact);
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        const float* w = m.deq.data() + r * cols;
        double emul = 0, quant_bound = 0, f32_mag = 0;
        for (int64_t b = 0; b < cols / 32; ++b) {
          double sum_w = 0;
          for (int i = 0; i < 32; ++i) sum_w += std::fabs(w[32 * b + i]);
          quant_bound += elem_err[b] * sum_w;
        }
        for (int64_t c = 0; c < cols; ++c) {
          emul += double(w[c]) * xq[c];
          double mw = 0;
          for (int64_t i = c / wblock * wblock; i < (c / wblock + 1) * wblock; ++i) mw = std::max(mw, double(std::fabs(w[i])));
          f32_mag += 4.0 * mw * amax[c / 32];
        }
        const double f32_bound = static_cast<double>(cols / 32 + 16) * 2.0 * kU * f32_mag;
        const double yv = y[tk * ldy + r];
        ASSERT_LE(std::fabs(yv - emul), f32_bound) << isa << " " << dtype_name(t) << " (emulated) t " << tk << " r " << r;
        ASSERT_LE(std::fabs(yv - yref[tk * ldy + r]), quant_bound + f32_bound)
            << isa << " " << dtype_name(t) << " n_tokens " << n_tokens << " t " << tk << " r " << r;
        any_difference |= yv != yref[tk * ldy + r];
      }
    }
  }
  if (has_fast_kernel(t)) {
    EXPECT_TRUE(any_difference) << "fast path gave reference bits: 8-bit path not taken?";
  }
}

// Any thread count, and any batch size, gives the same bits (each y[t][r] is one thread's fixed
// instruction sequence). Rows 203 = 12 full tiles + 11: uneven thread chunks.
TEST_P(NeonMatmul, BitIdenticalAcrossThreadsAndBatchSizes) {
  const auto [isa, t] = GetParam();
  REQUIRE_ISA(isa);
  const int64_t rows = 203, cols = cols_for(t), ldx = cols, ldy = rows;
  const Matrix m = make_matrix(t, rows, cols, 13);
  const int64_t n_tokens = 7;
  const auto x = make_x(n_tokens, ldx, 300);
  for (bool exact : {true, false}) {
    const auto y1 = run(isa, exact, 1, m, x, n_tokens, ldx, ldy);
    EXPECT_EQ(y1, run(isa, exact, 2, m, x, n_tokens, ldx, ldy)) << "2 threads, exact " << exact;
    EXPECT_EQ(y1, run(isa, exact, 3, m, x, n_tokens, ldx, ldy)) << "3 threads, exact " << exact;
    for (int64_t tk = 0; tk < n_tokens; ++tk) {  // token tk alone
      const std::vector<float> xt(x.begin() + tk * ldx, x.begin() + (tk + 1) * ldx);
      const auto y_one = run(isa, exact, 2, m, xt, 1, ldx, ldy);
      ASSERT_EQ(0, std::memcmp(y_one.data(), y1.data() + tk * ldy, rows * sizeof(float))) << "token " << tk;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, NeonMatmul, ::testing::ValuesIn(all_params()), param_name);

// The baseline and dotprod tables run the same arithmetic (SDOT only replaces an exact integer
// vmull_s8 + pairwise-add sequence with the same lane layout), so they agree bit for bit.
TEST(NeonMatmulIsa, BaselineAndDotprodIdentical) {
  REQUIRE_ISA("neon");
  REQUIRE_ISA("neon-dotprod");
  for (const auto& d : kDTypes) {
    const int64_t rows = 40, cols = cols_for(d.type);
    const Matrix m = make_matrix(d.type, rows, cols, 14);
    const auto x = make_x(3, cols, 400);
    for (bool exact : {true, false})
      EXPECT_EQ(run("neon", exact, 1, m, x, 3, cols, rows), run("neon-dotprod", exact, 1, m, x, 3, cols, rows))
          << d.name << " exact " << exact;
  }
}

// What "auto" picks follows the CPU's HWCAP_ASIMDDP. The qemu runner (tests/neon/run_cross_tests.sh)
// sets HERD_NEON_EXPECT_DOTPROD to what the emulated CPU model has, so both code paths are known to
// have run.
TEST(NeonBackendFactory, IsaSelectionAndErrors) {
  ASSERT_TRUE(cpu_supports_isa("neon")) << cpu_backend_description();
  const bool dot = cpu_supports_isa("neon-dotprod");
  std::printf("%s\n", cpu_backend_description().c_str());
  if (const char* want = std::getenv("HERD_NEON_EXPECT_DOTPROD")) {
    EXPECT_EQ(dot, std::string(want) == "1") << "HWCAP dotprod detection vs the emulated CPU: "
                                             << cpu_backend_description();
  }
  EXPECT_EQ(cpu_best_isa(), dot ? "neon-dotprod" : "neon");
  if (std::getenv("HERD_CPU_ISA") == nullptr) {
    EXPECT_EQ(make_cpu_backend(CpuBackendOptions{false, "auto"})->name(), dot ? "cpu-neon-dotprod-q8" : "cpu-neon-q8");
  }
  EXPECT_EQ(make_cpu_backend(CpuBackendOptions{true, "neon"})->name(), "cpu-neon-exact");
  EXPECT_EQ(make_cpu_backend(CpuBackendOptions{false, "scalar"})->name(), "cpu-reference");
  if (!dot) {
    EXPECT_THROW(make_cpu_backend(CpuBackendOptions{false, "neon-dotprod"}), std::runtime_error);
  }
  EXPECT_THROW(make_cpu_backend(CpuBackendOptions{false, "avx2"}), std::runtime_error);
  EXPECT_THROW(make_cpu_backend(CpuBackendOptions{false, "sve"}), std::invalid_argument);
}

}  // namespace
}  // namespace herd
