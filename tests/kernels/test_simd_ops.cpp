// x86 SIMD backend: attention, rmsnorm, silu_mul, add, rope (and the inherited softmax/get_rows)
// against the double-precision reference, per ISA, with bounds from f32 arithmetic (u = 2^-24).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/reference_backend.h"

namespace herd {
namespace {

constexpr double kU = 1.0 / (1 << 24);

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

std::unique_ptr<Backend> backend(const char* isa, int threads = 1) {
  CpuBackendOptions o;
  o.isa = isa;
  auto be = make_cpu_backend(o);
  be->set_threads(threads);
  return be;
}

class SimdOps : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!cpu_supports_isa(GetParam()))
      GTEST_SKIP() << "this CPU cannot run the " << GetParam() << " kernels: " << cpu_backend_description();
  }
};

// out = x · w / sqrt(Σx²/dim + eps): the f32 sum of squares has relative error <= (dim + 8) u,
// which moves the result by half that; sqrt, divide and the two products add a few u.
TEST_P(SimdOps, RmsNorm) {
  ReferenceBackend ref;
  auto be = backend(GetParam());
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
TEST_P(SimdOps, SiluMulAndAdd) {
  ReferenceBackend ref;
  auto be = backend(GetParam());
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
TEST_P(SimdOps, AttentionGqaCausalStrided) {
  ReferenceBackend ref;
  for (int threads : {1, 2, 3}) {
    auto be = backend(GetParam(), threads);
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

TEST_P(SimdOps, AttentionBitIdenticalAcrossThreads) {
  AttentionShape s{5, 8, 4, 32, 40};
  const int64_t ld = s.n_heads * s.head_dim, ldkv = s.n_kv_heads * s.head_dim;
  const auto q = randn(static_cast<size_t>(s.n_tokens * ld), 8);
  const auto k = randn(static_cast<size_t>(s.n_kv * ldkv), 9);
  const auto v = randn(static_cast<size_t>(s.n_kv * ldkv), 10);
  std::vector<float> o1(static_cast<size_t>(s.n_tokens * ld)), o3(o1.size());
  backend(GetParam(), 1)->attention(q.data(), ld, k.data(), v.data(), ldkv, s, 0.17f, o1.data(), ld);
  backend(GetParam(), 3)->attention(q.data(), ld, k.data(), v.data(), ldkv, s, 0.17f, o3.data(), ld);
  EXPECT_EQ(o1, o3);
}

// rope is the reference's double-precision formula with cos/sin hoisted out of the head loop:
// the same bits, for both modes, frequency factors, partial rotation and any thread count.
TEST_P(SimdOps, RopeIdenticalToReference) {
  ReferenceBackend ref;
  const int64_t n_tokens = 5, n_heads = 3, head_dim = 16, ld = n_heads * head_dim + 4;
  const float factors[8] = {1.0f, 1.5f, 2.0f, 4.0f, 8.0f, 0.5f, 3.0f, 1.25f};  // n_rot / 2 at most
  const int32_t pos[n_tokens] = {0, 1, 7, 300, 4095};
  for (int threads : {1, 3})
    for (RopeMode mode : {RopeMode::Normal, RopeMode::Neox})
      for (int64_t n_rot : {int64_t{16}, int64_t{12}})
        for (bool ff : {false, true}) {
          RopeParams p;
          p.mode = mode;
          p.n_rot = n_rot;
          p.freq_base = 500000.0f;
          p.freq_scale = 0.25f;
          p.freq_factors = ff ? factors : nullptr;
          auto a = randn(static_cast<size_t>(n_tokens * ld), 11);
          auto b = a;
          ref.rope(a.data(), n_tokens, ld, n_heads, head_dim, pos, p);
          backend(GetParam(), threads)->rope(b.data(), n_tokens, ld, n_heads, head_dim, pos, p);
          ASSERT_EQ(a, b) << "threads " << threads << " n_rot " << n_rot << " factors " << ff;
        }
}

TEST_P(SimdOps, RejectsBadShapes) {
  auto be = backend(GetParam());
  float buf[64] = {};
  EXPECT_THROW(be->rmsnorm(buf, 4, buf, 1, 8, 1e-5f, buf, 8), std::invalid_argument);
  EXPECT_THROW(be->attention(buf, 8, buf, buf, 8, AttentionShape{2, 3, 2, 4, 4}, 1.0f, buf, 8), std::invalid_argument);
  WeightMatrix w{DType::Q4_0, buf, 2, 48, 40};  // 48 is not a multiple of 32
  EXPECT_THROW(be->matmul(w, buf, 1, 48, buf, 2), std::invalid_argument);
}

INSTANTIATE_TEST_SUITE_P(Isa, SimdOps, ::testing::Values("avx2", "avx512"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace herd
