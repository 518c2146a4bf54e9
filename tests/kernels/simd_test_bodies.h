// Test bodies shared by the x86 SIMD (test_simd_*.cpp: avx2, avx512) and Arm NEON
// (test_neon_*.cpp: neon, neon-dotprod) backend tests, written once with their error bounds: each
// test file declares its gtest suites over its own ISA list and calls these with the ISA name.
//
// Matmul vs the scalar reference, for every DType × ISA × path.
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
//
// The bounds hold for both ISA families: same activation quantization formula, exact integer dots,
// f32 scale products summed in sequences of at most cols/32 + 8 per lane.
//
// Ops (attention, rmsnorm, silu_mul, add) against the double-precision reference, with bounds from
// f32 arithmetic (u = 2^-24), derived above each body.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/reference_backend.h"
#include "kernels/fp16.h"
#include "kernels/quant.h"

namespace herd::simd_test {

inline constexpr double kU = 1.0 / (1 << 24);  // f32 unit roundoff

struct Matrix {
  DType type;
  int64_t rows, cols;
  size_t stride;
  std::vector<uint8_t> bytes;
  std::vector<float> deq;  // [rows, cols]
  WeightMatrix view() const { return WeightMatrix{type, bytes.data(), rows, cols, stride}; }
};

inline Matrix make_matrix(DType t, int64_t rows, int64_t cols, uint32_t seed) {
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

inline std::vector<float> make_x(int64_t n_tokens, int64_t ld, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n_tokens * ld));
  for (auto& v : x) v = normal(rng);
  for (int64_t i = 5; i < static_cast<int64_t>(x.size()); i += 97) x[i] *= 20.0f;  // outliers: uneven blocks
  return x;
}

inline float seen(DType t, float v) {
  if (t == DType::F16) return f16_to_f32(f32_to_f16(v));
  if (t == DType::BF16) return bf16_to_f32(f32_to_bf16(v));
  return v;
}

inline int64_t cols_for(DType t) { return block_size(t) == 1 ? 101 : (block_size(t) == 32 ? 32 * 7 : 256 * 2); }

inline bool has_fast_kernel(DType t) { return t != DType::F32 && t != DType::F16 && t != DType::BF16; }

struct Param {
  const char* isa;
  DType type;
};

// A test-name-safe ISA name ("neon-dotprod" -> "neon_dotprod").
inline std::string isa_name(const char* isa) {
  std::string n = isa;
  for (auto& ch : n)
    if (ch == '-') ch = '_';
  return n;
}

inline std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  return isa_name(info.param.isa) + "_" + std::string(dtype_name(info.param.type));
}

// Every DType for each of the given ISAs (the C strings must outlive the tests: literals).
inline std::vector<Param> all_params(std::initializer_list<const char*> isas) {
  std::vector<Param> p;
  for (const char* isa : isas)
    for (const auto& d : kDTypes) p.push_back({isa, d.type});
  return p;
}

#define REQUIRE_ISA(isa)      \
  if (cpu_supports_isa(isa)) { \
  } else                       \
    GTEST_SKIP() << "this CPU cannot run the " << (isa) << " kernels: " << cpu_backend_description()

// The matrix as a stage holds it: prepared by a fast-path backend of this ISA (Backend::prepare_matmul;
// the x86 tables repack Q4_0/Q8_0 into 16 interleaved rows), that backend already gone (the copy
// must own its memory).
inline WeightMatrix prepared(const char* isa, const Matrix& m) {
  WeightMatrix w = m.view();
  auto be = make_cpu_backend(CpuBackendOptions{false, isa});
  be->set_threads(2);  // the repack is split over the pool too
  WeightMatrix* ws[] = {&w};
  be->prepare_matmul(ws);
  return w;
}

// y = W x on a fresh backend; w (when given) is the view of m to multiply, e.g. prepared(isa, m).
inline std::vector<float> run(const char* isa, bool exact, int threads, const Matrix& m, const std::vector<float>& x,
                       int64_t n_tokens, int64_t ldx, int64_t ldy, const WeightMatrix* w = nullptr) {
  CpuBackendOptions o;
  o.isa = isa;
  o.exact = exact;
  auto be = make_cpu_backend(o);
  be->set_threads(threads);
  std::vector<float> y(static_cast<size_t>(n_tokens * ldy), -777.0f);
  be->matmul(w ? *w : m.view(), x.data(), n_tokens, ldx, y.data(), ldy);
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t r = m.rows; r < ldy; ++r) EXPECT_EQ(y[t * ldy + r], -777.0f) << "padding overwritten";
  return y;
}

inline void matmul_exact_path_within_f32_bound(const char* isa, DType t) {
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

inline void matmul_fast_path_within_activation_quantization_bound(const char* isa, DType t) {
  const int64_t rows = 37, cols = cols_for(t), ldx = cols + 3, ldy = rows + 5;
  const int64_t wblock = block_size(t);
  const Matrix m = make_matrix(t, rows, cols, 12);
  const WeightMatrix mp = prepared(isa, m);
  bool any_difference = false;
  for (int64_t n_tokens = 1; n_tokens <= 9; ++n_tokens) {
    const auto x = make_x(n_tokens, ldx, 200 + static_cast<uint32_t>(n_tokens));
    const auto y = run(isa, false, 1, m, x, n_tokens, ldx, ldy);
    // A prepared matrix runs the same per-lane arithmetic (the unprepared one is repacked per
    // tile on the fly): the bounds below hold for both.
    ASSERT_EQ(y, run(isa, false, 1, m, x, n_tokens, ldx, ldy, &mp)) << "prepared, n_tokens " << n_tokens;
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
      // for the K-quants (act_scale_mode, kernels/cpu/simd_driver.h).
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
// instruction sequence). Rows 203 = 12 full tiles + 11: uneven thread chunks and a padded packed
// group; 19 tokens: full token groups (8 on AVX-512, 4 on AVX2) and every remainder. A prepared
// matrix (packed copy) gives the same bits as the plain one, in both paths.
inline void matmul_bit_identical_across_threads_and_batch_sizes(const char* isa, DType t) {
  const int64_t rows = 203, cols = cols_for(t), ldx = cols, ldy = rows;
  const Matrix m = make_matrix(t, rows, cols, 13);
  const WeightMatrix mp = prepared(isa, m);  // (the exact path ignores the packed copy)
  const int64_t n_tokens = 19;               // 2 full groups of 8 tokens + 3: every group size
  const auto x = make_x(n_tokens, ldx, 300);
  for (bool exact : {true, false}) {
    const auto y1 = run(isa, exact, 1, m, x, n_tokens, ldx, ldy);
    EXPECT_EQ(y1, run(isa, exact, 2, m, x, n_tokens, ldx, ldy)) << "2 threads, exact " << exact;
    EXPECT_EQ(y1, run(isa, exact, 3, m, x, n_tokens, ldx, ldy)) << "3 threads, exact " << exact;
    EXPECT_EQ(y1, run(isa, exact, 1, m, x, n_tokens, ldx, ldy, &mp)) << "prepared, exact " << exact;
    EXPECT_EQ(y1, run(isa, exact, 3, m, x, n_tokens, ldx, ldy, &mp)) << "prepared, 3 threads, exact " << exact;
    for (int64_t tk = 0; tk < n_tokens; ++tk) {  // token tk alone
      const std::vector<float> xt(x.begin() + tk * ldx, x.begin() + (tk + 1) * ldx);
      const auto y_one = run(isa, exact, 2, m, xt, 1, ldx, ldy);
      ASSERT_EQ(0, std::memcmp(y_one.data(), y1.data() + tk * ldy, rows * sizeof(float))) << "token " << tk;
      const auto y_one_p = run(isa, exact, 1, m, xt, 1, ldx, ldy, &mp);
      ASSERT_EQ(0, std::memcmp(y_one_p.data(), y1.data() + tk * ldy, rows * sizeof(float))) << "prepared, token " << tk;
    }
  }
}

// Two kernel tables that run the same arithmetic agree bit for bit (both ISAs must be supported).
inline void matmul_tables_identical(const char* isa_a, const char* isa_b) {
  for (const auto& d : kDTypes) {
    const int64_t rows = 40, cols = cols_for(d.type);
    const Matrix m = make_matrix(d.type, rows, cols, 14);
    const auto x = make_x(3, cols, 400);
    const WeightMatrix pa = prepared(isa_a, m), pb = prepared(isa_b, m);
    for (bool exact : {true, false}) {
      const auto ya = run(isa_a, exact, 1, m, x, 3, cols, rows);
      EXPECT_EQ(ya, run(isa_b, exact, 1, m, x, 3, cols, rows)) << d.name << " exact " << exact;
      EXPECT_EQ(ya, run(isa_a, exact, 1, m, x, 3, cols, rows, &pa)) << d.name << " prepared, exact " << exact;
      EXPECT_EQ(ya, run(isa_b, exact, 1, m, x, 3, cols, rows, &pb)) << d.name << " prepared, exact " << exact;
    }
  }
}

inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

inline std::unique_ptr<Backend> backend(const char* isa, int threads = 1) {
  CpuBackendOptions o;
  o.isa = isa;
  auto be = make_cpu_backend(o);
  be->set_threads(threads);
  return be;
}

// Fixture of the per-ISA op tests: skips an ISA this CPU cannot run.
class IsaOpsTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!cpu_supports_isa(GetParam()))
      GTEST_SKIP() << "this CPU cannot run the " << GetParam() << " kernels: " << cpu_backend_description();
  }
};

// out = x · w / sqrt(Σx²/dim + eps): the f32 sum of squares has relative error <= (dim + 8) u,
// which moves the result by half that; sqrt, divide and the two products add a few u.
inline void ops_rmsnorm(const char* isa) {
  ReferenceBackend ref;
  auto be = backend(isa);
  for (int64_t dim : {1, 7, 37, 64, 576}) {
    const int64_t rows = 3, ld = dim + 5;
    const auto x = randn(static_cast<size_t>(rows * ld), 1 + static_cast<uint32_t>(dim));
    const auto w = randn(static_cast<size_t>(dim), 2);
    std::vector<float> a(x.size(), 0.0f), b(x.size(), 0.0f);
    ref.rmsnorm(x.data(), ld, w.data(), rows, dim, 1e-5f, a.data(), ld);
    be->rmsnorm(x.data(), ld, w.data(), rows, dim, 1e-5f, b.data(), ld);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < dim; ++i) {
        const double e = a[r * ld + i];
        ASSERT_LE(std::fabs(b[r * ld + i] - e), std::fabs(e) * (dim + 16) * kU + 1e-37) << "dim " << dim << " i " << i;
      }
    // In place (out aliases x) gives the same bits.
    std::vector<float> c = x;
    be->rmsnorm(c.data(), ld, w.data(), rows, dim, 1e-5f, c.data(), ld);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < dim; ++i) ASSERT_EQ(c[r * ld + i], b[r * ld + i]);
  }
}

// silu(g)·u = g / (1 + e^-g) · u: expf is within 1 ulp, the division's sensitivity to e^-g is
// <= 1, and the three roundings add 3 u: 8 u relative leaves a factor 2 of margin.
inline void ops_silu_mul_and_add(const char* isa) {
  ReferenceBackend ref;
  auto be = backend(isa);
  const int64_t n = 1000 + 3;
  auto g = randn(n, 3, 4.0f), u = randn(n, 4);
  g[0] = -100.0f;
  g[1] = 100.0f;
  g[2] = 0.0f;
  std::vector<float> a(n), b(n);
  ref.silu_mul(g.data(), u.data(), a.data(), n);
  be->silu_mul(g.data(), u.data(), b.data(), n);
  for (int64_t i = 0; i < n; ++i) ASSERT_LE(std::fabs(double(b[i]) - a[i]), std::fabs(double(a[i])) * 16 * kU + 1e-37) << i;
  ref.add(g.data(), u.data(), a.data(), n);
  be->add(g.data(), u.data(), b.data(), n);
  EXPECT_EQ(a, b);  // one rounding each: identical
  be->add(g.data(), u.data(), g.data(), n);  // aliasing
  EXPECT_EQ(g, b);
}

// Attention bound. Score s_j = scale·q·k_j has f32 error ε_j <= (hd + 8) u · scale · Σ|q k_j| + u|s_j|.
// p_j = exp(s_j − max) then has relative error δ <= 2 max ε_j + u max|s_j − max| + 4 u (expf,
// the subtraction). out = Σ p_j v_j / Σ p_j moves by <= 2 δ max|v| for the weights, plus the f32
// accumulation over n_kv rows, 2 (n_kv + 4) u max|v|.
inline void ops_attention_gqa_causal_strided(const char* isa) {
  ReferenceBackend ref;
  for (int threads : {1, 2, 3}) {
    auto be = backend(isa, threads);
    for (int64_t hd : {20, 64}) {
      for (int64_t n_tokens : {1, 4, 9}) {
        AttentionShape s{n_tokens, 6, 2, hd, 31 + n_tokens};
        const int64_t ldq = s.n_heads * hd + 3, ldkv = s.n_kv_heads * hd + 5, ldo = s.n_heads * hd + 2;
        const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
        const auto q = randn(static_cast<size_t>(n_tokens * ldq), 5, 2.0f);
        const auto k = randn(static_cast<size_t>(s.n_kv * ldkv), 6, 2.0f);
        const auto v = randn(static_cast<size_t>(s.n_kv * ldkv), 7);
        std::vector<float> a(static_cast<size_t>(n_tokens * ldo), 0.0f), b(a.size(), 0.0f);
        ref.attention(q.data(), ldq, k.data(), v.data(), ldkv, s, scale, a.data(), ldo);
        be->attention(q.data(), ldq, k.data(), v.data(), ldkv, s, scale, b.data(), ldo);
        const int64_t group = s.n_heads / s.n_kv_heads;
        for (int64_t t = 0; t < n_tokens; ++t)
          for (int64_t h = 0; h < s.n_heads; ++h) {
            const int64_t kvh = h / group, n_vis = s.n_kv - n_tokens + t + 1;
            std::vector<double> sc(static_cast<size_t>(n_vis));
            double eps_max = 0, smax = -1e300, vmax = 0;
            for (int64_t j = 0; j < n_vis; ++j) {
              double dot = 0, mag = 0;
              for (int64_t i = 0; i < hd; ++i) {
                const double p = double(q[t * ldq + h * hd + i]) * k[j * ldkv + kvh * hd + i];
                dot += p;
                mag += std::fabs(p);
                vmax = std::max(vmax, double(std::fabs(v[j * ldkv + kvh * hd + i])));
              }
              sc[j] = dot * scale;
              eps_max = std::max(eps_max, (hd + 8) * kU * scale * mag + kU * std::fabs(sc[j]));
              smax = std::max(smax, sc[j]);
            }
            double spread = 0;
            for (double x : sc) spread = std::max(spread, smax - x);
            const double delta = 2 * eps_max + kU * spread + 4 * kU;
            const double tol = vmax * (2 * delta + 2 * (n_vis + 4) * kU);
            for (int64_t i = 0; i < hd; ++i)
              ASSERT_LE(std::fabs(double(b[t * ldo + h * hd + i]) - a[t * ldo + h * hd + i]), tol)
                  << "threads " << threads << " hd " << hd << " n_tokens " << n_tokens << " t " << t << " h " << h;
          }
      }
    }
  }
}

inline void ops_attention_bit_identical_across_threads(const char* isa) {
  AttentionShape s{5, 8, 4, 32, 40};
  const int64_t ld = s.n_heads * s.head_dim, ldkv = s.n_kv_heads * s.head_dim;
  const auto q = randn(static_cast<size_t>(s.n_tokens * ld), 8);
  const auto k = randn(static_cast<size_t>(s.n_kv * ldkv), 9);
  const auto v = randn(static_cast<size_t>(s.n_kv * ldkv), 10);
  std::vector<float> o1(static_cast<size_t>(s.n_tokens * ld)), o3(o1.size());
  backend(isa, 1)->attention(q.data(), ld, k.data(), v.data(), ldkv, s, 0.17f, o1.data(), ld);
  backend(isa, 3)->attention(q.data(), ld, k.data(), v.data(), ldkv, s, 0.17f, o3.data(), ld);
  EXPECT_EQ(o1, o3);
}

inline void ops_rejects_bad_shapes(const char* isa) {
  auto be = backend(isa);
  float buf[64] = {};
  EXPECT_THROW(be->rmsnorm(buf, 4, buf, 1, 8, 1e-5f, buf, 8), std::invalid_argument);
  EXPECT_THROW(be->attention(buf, 8, buf, buf, 8, AttentionShape{2, 3, 2, 4, 4}, 1.0f, buf, 8), std::invalid_argument);
  WeightMatrix w{DType::Q4_0, buf, 2, 48, 40};  // 48 is not a multiple of 32
  EXPECT_THROW(be->matmul(w, buf, 1, 48, buf, 2), std::invalid_argument);
}

}  // namespace herd::simd_test
