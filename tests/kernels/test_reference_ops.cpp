// Reference element-wise and attention ops against explicit formulas.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/backend.h"

namespace herd {
namespace {

constexpr float kSentinel = 12345.5f;
const double kF32Eps = std::ldexp(1.0, -24);  // unit roundoff of one f32 rounding

std::vector<float> normal_vec(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// ---------------------------------------------------------------- rmsnorm

TEST(ReferenceOps, RmsNorm) {
  auto be = make_reference_backend();
  const int64_t dim = 67, n_rows = 3, ldx = 70, ldo = 72;
  auto x = normal_vec(n_rows * ldx, 1, 3.0f);
  const auto w = normal_vec(dim, 2);
  std::vector<float> out(n_rows * ldo, kSentinel);
  const float eps = 1e-5f;
  be->rmsnorm(x.data(), ldx, w.data(), n_rows, dim, eps, out.data(), ldo);
  for (int64_t r = 0; r < n_rows; ++r) {
    long double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<long double>(x[r * ldx + i]) * x[r * ldx + i];
    const long double inv = 1.0L / std::sqrt(ss / dim + static_cast<long double>(eps));
    for (int64_t i = 0; i < dim; ++i) {
      const double want = static_cast<double>(x[r * ldx + i] * inv * w[i]);
      EXPECT_NEAR(out[r * ldo + i], want, 2 * kF32Eps * std::fabs(want)) << r << "," << i;
    }
    for (int64_t i = dim; i < ldo; ++i) EXPECT_EQ(out[r * ldo + i], kSentinel);
  }
  // Scale invariance (eps = 0): rmsnorm(4x) == rmsnorm(x) up to the output rounding.
  std::vector<float> x4(x), o1(n_rows * ldo), o4(n_rows * ldo);
  for (auto& v : x4) v *= 4.0f;  // exact
  be->rmsnorm(x.data(), ldx, w.data(), n_rows, dim, 0.0f, o1.data(), ldo);
  be->rmsnorm(x4.data(), ldx, w.data(), n_rows, dim, 0.0f, o4.data(), ldo);
  for (int64_t r = 0; r < n_rows; ++r)
    for (int64_t i = 0; i < dim; ++i) EXPECT_NEAR(o1[r * ldo + i], o4[r * ldo + i], 4 * kF32Eps * std::fabs(o1[r * ldo + i]));
  // In place gives the same bits as out of place.
  be->rmsnorm(x.data(), ldx, w.data(), n_rows, dim, eps, x.data(), ldx);
  for (int64_t r = 0; r < n_rows; ++r)
    EXPECT_EQ(std::memcmp(x.data() + r * ldx, out.data() + r * ldo, dim * sizeof(float)), 0);
}

// ---------------------------------------------------------------- rope

struct RopeCase {
  RopeMode mode;
  int64_t n_rot;
  float freq_scale;
  bool factors;
};

TEST(ReferenceOps, RopeMatchesExplicitRotation) {
  auto be = make_reference_backend();
  const int64_t head_dim = 16, n_heads = 3, n_tokens = 4, ld = n_heads * head_dim + 4;
  const int32_t pos[n_tokens] = {0, 1, 7, 1000};
  const float factors[8] = {1.0f, 1.0f, 2.0f, 4.0f, 8.0f, 8.0f, 1.5f, 1.0f};
  for (const RopeCase rc : {RopeCase{RopeMode::Normal, 16, 1.0f, false}, RopeCase{RopeMode::Neox, 16, 1.0f, false},
                            RopeCase{RopeMode::Normal, 8, 0.5f, false}, RopeCase{RopeMode::Neox, 8, 1.0f, false},
                            RopeCase{RopeMode::Normal, 16, 1.0f, true}, RopeCase{RopeMode::Neox, 16, 0.25f, true}}) {
    RopeParams p;
    p.mode = rc.mode;
    p.n_rot = rc.n_rot;
    p.freq_base = 500000.0f;
    p.freq_scale = rc.freq_scale;
    p.freq_factors = rc.factors ? factors : nullptr;
    const auto x0 = normal_vec(n_tokens * ld, 3);
    auto x = x0;
    be->rope(x.data(), n_tokens, ld, n_heads, head_dim, pos, p);
    const int64_t half = rc.n_rot / 2;
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t h = 0; h < n_heads; ++h) {
        const float* in = x0.data() + t * ld + h * head_dim;
        const float* got = x.data() + t * ld + h * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          long double theta = static_cast<long double>(pos[t]) * rc.freq_scale *
                              std::pow(500000.0L, -2.0L * i / static_cast<long double>(rc.n_rot));
          if (rc.factors) theta /= factors[i];
          const int64_t a = rc.mode == RopeMode::Normal ? 2 * i : i;
          const int64_t b = rc.mode == RopeMode::Normal ? 2 * i + 1 : i + half;
          const long double c = std::cos(theta), s = std::sin(theta);
          const double ra = static_cast<double>(in[a] * c - in[b] * s), rb = static_cast<double>(in[a] * s + in[b] * c);
          const double mag = std::fabs(in[a]) + std::fabs(in[b]);
          // One f32 rounding of each output, plus the double evaluation of theta (pos 1000:
          // ~1e3 * 2^-53 rad) times the magnitude.
          ASSERT_NEAR(got[a], ra, kF32Eps * std::fabs(ra) + 1e-12 * mag) << t << "," << h << "," << i;
          ASSERT_NEAR(got[b], rb, kF32Eps * std::fabs(rb) + 1e-12 * mag) << t << "," << h << "," << i;
          // Norm of each rotated pair is preserved.
          const double n0 = static_cast<double>(in[a]) * in[a] + static_cast<double>(in[b]) * in[b];
          const double n1 = static_cast<double>(got[a]) * got[a] + static_cast<double>(got[b]) * got[b];
          ASSERT_NEAR(n1, n0, 4 * kF32Eps * n0 + 1e-30);
        }
        for (int64_t i = rc.n_rot; i < head_dim; ++i) ASSERT_EQ(got[i], in[i]) << "dim beyond n_rot touched";
        if (pos[t] == 0) {
          ASSERT_EQ(std::memcmp(got, in, head_dim * sizeof(float)), 0) << "position 0 must be the identity";
        }
      }
      for (int64_t i = n_heads * head_dim; i < ld; ++i) ASSERT_EQ(x[t * ld + i], x0[t * ld + i]);
    }
  }
}

// The pairing itself: a unit vector on dim 0 rotates into dim 1 (Normal) or dim n_rot/2 (Neox).
TEST(ReferenceOps, RopePairing) {
  auto be = make_reference_backend();
  const int32_t pos = 1;
  for (RopeMode mode : {RopeMode::Normal, RopeMode::Neox}) {
    std::vector<float> x(8, 0.0f);
    x[0] = 1.0f;
    RopeParams p;
    p.mode = mode;
    p.n_rot = 8;
    be->rope(x.data(), 1, 8, 1, 8, &pos, p);
    const int partner = mode == RopeMode::Normal ? 1 : 4;
    EXPECT_FLOAT_EQ(x[0], std::cos(1.0f));  // theta_0 = pos * base^0 = 1 rad
    EXPECT_FLOAT_EQ(x[partner], std::sin(1.0f));
    for (int i = 1; i < 8; ++i)
      if (i != partner) {
        EXPECT_EQ(x[i], 0.0f) << i;
      }
  }
}

// ---------------------------------------------------------------- softmax

TEST(ReferenceOps, Softmax) {
  auto be = make_reference_backend();
  // Values on a 2^-10 grid in [-8, 8]: adding 64 is exact, so max-subtraction makes the result
  // bit-identical, not just close.
  std::mt19937 rng(4);
  std::uniform_int_distribution<int> grid(-8192, 8192);
  const int64_t n = 301;
  std::vector<float> x(n), xc(n);
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::ldexp(static_cast<float>(grid(rng)), -10);
    xc[i] = x[i] + 64.0f;
  }
  const auto x0 = x;
  be->softmax(x.data(), n);
  be->softmax(xc.data(), n);
  EXPECT_EQ(std::memcmp(x.data(), xc.data(), n * sizeof(float)), 0);
  long double z = 0, sum = 0;
  for (float v : x0) z += std::exp(static_cast<long double>(v));
  for (int64_t i = 0; i < n; ++i) {
    const double want = static_cast<double>(std::exp(static_cast<long double>(x0[i])) / z);
    EXPECT_NEAR(x[i], want, 2 * kF32Eps * want);
    sum += x[i];
  }
  EXPECT_NEAR(static_cast<double>(sum), 1.0, n * kF32Eps);
  // Large inputs do not overflow.
  float big[2] = {1000.0f, 1001.0f};
  be->softmax(big, 2);
  EXPECT_NEAR(big[0], 1.0 / (1.0 + std::exp(1.0)), 1e-7);
  EXPECT_NEAR(big[1], std::exp(1.0) / (1.0 + std::exp(1.0)), 1e-7);
  // -inf entries get exactly zero.
  float masked[3] = {0.5f, -std::numeric_limits<float>::infinity(), 0.5f};
  be->softmax(masked, 3);
  EXPECT_EQ(masked[1], 0.0f);
  EXPECT_EQ(masked[0], 0.5f);
}

// ---------------------------------------------------------------- attention

struct AttnBuffers {
  AttentionShape s;
  int64_t ldq, ldkv, ldo, n_ctx;
  std::vector<float> q, k, v;
};

AttnBuffers make_attention(int64_t n_tokens, int64_t n_kv, uint32_t seed) {
  AttnBuffers a;
  a.s = AttentionShape{n_tokens, 8, 2, 16, n_kv};
  a.ldq = 8 * 16 + 3;
  a.ldkv = 2 * 16 + 5;
  a.ldo = 8 * 16 + 1;
  a.n_ctx = n_kv + 2;
  a.q = normal_vec(n_tokens * a.ldq, seed);
  a.k = normal_vec(a.n_ctx * a.ldkv, seed + 1);
  a.v = normal_vec(a.n_ctx * a.ldkv, seed + 2);
  // Rows past n_kv are not valid cache rows: NaN there poisons any output that reads them.
  for (int64_t j = n_kv; j < a.n_ctx; ++j)
    for (int64_t i = 0; i < a.ldkv; ++i) a.k[j * a.ldkv + i] = a.v[j * a.ldkv + i] = std::nanf("");
  return a;
}

// Naive attention in long double: query t sees rows 0 .. n_kv - n_tokens + t; head h reads kv
// head h / (n_heads / n_kv_heads).
std::vector<double> naive_attention(const AttnBuffers& a, float scale) {
  const auto& s = a.s;
  std::vector<double> out(s.n_tokens * s.n_heads * s.head_dim);
  for (int64_t t = 0; t < s.n_tokens; ++t)
    for (int64_t h = 0; h < s.n_heads; ++h) {
      const int64_t kvh = h / (s.n_heads / s.n_kv_heads), visible = s.n_kv - s.n_tokens + t + 1;
      std::vector<long double> p(visible);
      long double mx = -INFINITY, z = 0;
      for (int64_t j = 0; j < visible; ++j) {
        long double dot = 0;
        for (int64_t i = 0; i < s.head_dim; ++i)
          dot += static_cast<long double>(a.q[t * a.ldq + h * s.head_dim + i]) * a.k[j * a.ldkv + kvh * s.head_dim + i];
        p[j] = dot * scale;
        mx = std::max(mx, p[j]);
      }
      for (auto& e : p) z += (e = std::exp(e - mx));
      for (int64_t i = 0; i < s.head_dim; ++i) {
        long double acc = 0;
        for (int64_t j = 0; j < visible; ++j) acc += p[j] * a.v[j * a.ldkv + kvh * s.head_dim + i];
        out[(t * s.n_heads + h) * s.head_dim + i] = static_cast<double>(acc / z);
      }
    }
  return out;
}

TEST(ReferenceOps, AttentionMatchesNaiveGqaCausal) {
  auto be = make_reference_backend();
  for (auto [n_tokens, n_kv] : {std::pair<int64_t, int64_t>{1, 1}, {1, 9}, {4, 4}, {3, 7}}) {
    auto a = make_attention(n_tokens, n_kv, static_cast<uint32_t>(n_tokens * 10 + n_kv));
    const float scale = 1.0f / 4.0f;
    std::vector<float> out(n_tokens * a.ldo, kSentinel);
    be->attention(a.q.data(), a.ldq, a.k.data(), a.v.data(), a.ldkv, a.s, scale, out.data(), a.ldo);
    const auto want = naive_attention(a, scale);
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t c = 0; c < a.s.n_heads * a.s.head_dim; ++c) {
        const double w = want[t * a.s.n_heads * a.s.head_dim + c];
        // Output is a convex combination of |v| <= ~5: one f32 rounding plus double-accumulation
        // error (n_kv * head_dim * 2^-53 relative to the magnitudes, far below 1e-12).
        ASSERT_NEAR(out[t * a.ldo + c], w, kF32Eps * std::fabs(w) + 1e-12) << n_tokens << "/" << n_kv << " t" << t << " c" << c;
      }
      for (int64_t c = a.s.n_heads * a.s.head_dim; c < a.ldo; ++c) ASSERT_EQ(out[t * a.ldo + c], kSentinel);
    }
  }
}

// Query head h must read kv head h / 4 (8 heads over 2): constant values per kv head come out exactly.
TEST(ReferenceOps, AttentionGqaHeadMapping) {
  auto be = make_reference_backend();
  auto a = make_attention(2, 5, 21);
  for (int64_t j = 0; j < 5; ++j)
    for (int64_t i = 0; i < 16; ++i) {
      a.v[j * a.ldkv + i] = 1.0f;       // kv head 0
      a.v[j * a.ldkv + 16 + i] = 2.0f;  // kv head 1
    }
  std::vector<float> out(2 * a.ldo);
  be->attention(a.q.data(), a.ldq, a.k.data(), a.v.data(), a.ldkv, a.s, 0.25f, out.data(), a.ldo);
  for (int64_t t = 0; t < 2; ++t)
    for (int64_t h = 0; h < 8; ++h)
      for (int64_t i = 0; i < 16; ++i) ASSERT_EQ(out[t * a.ldo + h * 16 + i], h < 4 ? 1.0f : 2.0f) << t << "," << h;
}

// Token t's output must not depend on cache rows after n_kv - n_tokens + t.
TEST(ReferenceOps, AttentionCausalMask) {
  auto be = make_reference_backend();
  const int64_t n_tokens = 3, n_kv = 6;
  auto a = make_attention(n_tokens, n_kv, 31);
  std::vector<float> before(n_tokens * a.ldo), after(n_tokens * a.ldo);
  be->attention(a.q.data(), a.ldq, a.k.data(), a.v.data(), a.ldkv, a.s, 0.25f, before.data(), a.ldo);
  for (int64_t t = 0; t < n_tokens; ++t) {
    auto b = a;
    for (int64_t j = n_kv - n_tokens + t + 1; j < n_kv; ++j)
      for (int64_t i = 0; i < b.ldkv; ++i) b.k[j * b.ldkv + i] = b.v[j * b.ldkv + i] = 1e6f;
    be->attention(b.q.data(), b.ldq, b.k.data(), b.v.data(), b.ldkv, b.s, 0.25f, after.data(), b.ldo);
    for (int64_t u = 0; u <= t; ++u)
      EXPECT_EQ(std::memcmp(before.data() + u * a.ldo, after.data() + u * a.ldo, 128 * sizeof(float)), 0)
          << "token " << u << " saw a row beyond its position (rows after token " << t << " changed)";
    if (t + 1 < n_tokens) {
      EXPECT_NE(std::memcmp(before.data() + (t + 1) * a.ldo, after.data() + (t + 1) * a.ldo, 128 * sizeof(float)), 0)
          << "token " << t + 1 << " should see row " << n_kv - n_tokens + t + 1;
    }
  }
}

TEST(ReferenceOps, AttentionThreadCountDoesNotChangeBits) {
  auto be = make_reference_backend();
  auto a = make_attention(5, 11, 41);
  std::vector<float> o1(5 * a.ldo), o3(5 * a.ldo);
  be->set_threads(1);
  be->attention(a.q.data(), a.ldq, a.k.data(), a.v.data(), a.ldkv, a.s, 0.25f, o1.data(), a.ldo);
  be->set_threads(3);
  be->attention(a.q.data(), a.ldq, a.k.data(), a.v.data(), a.ldkv, a.s, 0.25f, o3.data(), a.ldo);
  EXPECT_EQ(std::memcmp(o1.data(), o3.data(), o1.size() * sizeof(float)), 0);
}

// ---------------------------------------------------------------- silu_mul, add

TEST(ReferenceOps, SiluMul) {
  auto be = make_reference_backend();
  const int64_t n = 1000;
  auto g = normal_vec(n, 51, 6.0f);
  const auto u = normal_vec(n, 52);
  g[0] = 0.0f;
  g[1] = -100.0f;
  g[2] = 100.0f;
  std::vector<float> out(n);
  be->silu_mul(g.data(), u.data(), out.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const long double x = g[i];
    const double want = static_cast<double>(x / (1 + std::exp(-x)) * u[i]);
    ASSERT_NEAR(out[i], want, 2 * kF32Eps * std::fabs(want) + 1e-40) << i;
  }
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_NEAR(out[2], 100.0 * u[2], 2 * kF32Eps * std::fabs(100.0 * u[2]));
}

TEST(ReferenceOps, AddIsExactAndMayAlias) {
  auto be = make_reference_backend();
  const int64_t n = 100;
  auto a = normal_vec(n, 61);
  const auto b = normal_vec(n, 62);
  std::vector<float> out(n);
  be->add(a.data(), b.data(), out.data(), n);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[i], a[i] + b[i]);
  be->add(a.data(), b.data(), a.data(), n);
  EXPECT_EQ(std::memcmp(a.data(), out.data(), n * sizeof(float)), 0);
}

}  // namespace
}  // namespace herd
