// The math of the CUDA activation ops (kernels/cuda/ops_math.h), compiled by g++, against the
// reference backend: the f16 conversions, the KV row encode/decode, rmsnorm, rope, softmax, silu,
// add and the rank-order sum bit for bit; attention computed exactly as the kernels do (warp-order
// dot products, split-K chunks, online softmax, log-sum-exp merge) within a bound derived below.
// No GPU is involved: this is what can be proven of the CUDA ops without one.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/comm.h"
#include "kernels/backend.h"
#include "kernels/cuda/ops_math.h"
#include "kernels/dtype.h"
#include "kernels/fp16.h"
#include "kernels/quant.h"

namespace herd {
namespace {

namespace om = cuda::ops_math;

static_assert(om::kF32 == static_cast<uint32_t>(DType::F32));
static_assert(om::kF16 == static_cast<uint32_t>(DType::F16));
static_assert(om::kQ8_0 == static_cast<uint32_t>(DType::Q8_0));
static_assert(om::kQ8Block == 32 && om::kQ8BlockBytes == 34);

const double kU = std::ldexp(1.0, -24);  // unit roundoff of one f32 rounding

std::vector<float> uniform_vec(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

uint32_t bits(float f) { return std::bit_cast<uint32_t>(f); }

// Distance in units in the last place between two finite floats of the same sign (or 0).
int64_t ulp_distance(float a, float b) {
  auto key = [](float f) {
    const int64_t i = static_cast<int32_t>(std::bit_cast<uint32_t>(f));
    return i < 0 ? std::numeric_limits<int32_t>::min() - i : i;
  };
  return std::llabs(key(a) - key(b));
}

// The kernels' block reduction (ops.cu block_sum) of per-thread partials: a butterfly within each
// warp of 32, then the warps' sums in order. Threads stride the row: thread r adds i = r, r + T, ...
double kernel_order_sumsq(const float* x, int64_t dim, int threads) {
  std::vector<double> part(static_cast<size_t>(threads), 0.0);
  for (int r = 0; r < threads; ++r)
    for (int64_t i = r; i < dim; i += threads) part[r] = om::sumsq_step(part[r], x[i]);
  double total = 0.0;
  for (int w = 0; w < threads / om::kWarp; ++w) {
    om::butterfly_sum32(part.data() + w * om::kWarp);
    total = w == 0 ? part[0] : total + part[static_cast<size_t>(w) * om::kWarp];
  }
  return total;
}

// ---------------------------------------------------------------- f16 and KV rows

TEST(cuda_ops_math, F16ToF32AllInputs) {
  for (uint32_t h = 0; h < 65536; ++h)
    ASSERT_EQ(bits(cuda::hd_f16_to_f32(static_cast<uint16_t>(h))), bits(f16_to_f32(static_cast<uint16_t>(h)))) << h;
}

TEST(cuda_ops_math, F32ToF16MatchesFp16h) {
  // Every exponent, sign and top-10 mantissa pattern with the 13 dropped bits at and around the
  // rounding tie, then random bit patterns (NaNs and infinities included).
  const uint32_t lows[] = {0x0000u, 0x0001u, 0x0FFFu, 0x1000u, 0x1001u, 0x1FFFu, 0x0800u, 0x1800u};
  for (uint32_t sign = 0; sign < 2; ++sign)
    for (uint32_t e = 0; e < 256; ++e)
      for (uint32_t top = 0; top < 1024; ++top)
        for (uint32_t low : lows) {
          const uint32_t x = (sign << 31) | (e << 23) | (top << 13) | low;
          ASSERT_EQ(cuda::hd_f32_to_f16(std::bit_cast<float>(x)), f32_to_f16(std::bit_cast<float>(x))) << std::hex << x;
        }
  std::mt19937 rng(7);
  for (int i = 0; i < 4'000'000; ++i) {
    const uint32_t x = rng();
    ASSERT_EQ(cuda::hd_f32_to_f16(std::bit_cast<float>(x)), f32_to_f16(std::bit_cast<float>(x))) << std::hex << x;
  }
}

// KV values with the edges the codecs care about: all-zero blocks, ties for Q8_0's rounding
// (a block whose max is 127 has d = 1, so k + 0.5 is an exact tie), f16 subnormals and overflow.
std::vector<float> kv_test_values(int64_t n, uint32_t seed) {
  auto v = uniform_vec(static_cast<size_t>(n), seed, -2.0f, 2.0f);
  const float ties[] = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -3.5f, 126.5f, -126.5f};
  for (int64_t b = 0; b * 32 < n; ++b) {
    float* blk = v.data() + b * 32;
    switch (b % 6) {
      case 0: break;
      case 1: std::fill(blk, blk + 32, 0.0f); break;
      case 2: std::copy(std::begin(ties), std::end(ties), blk); break;
      case 3: for (int j = 0; j < 32; ++j) blk[j] *= 1e-6f; break;     // f16 subnormal scales
      case 4: for (int j = 0; j < 32; ++j) blk[j] *= 5e4f; break;      // near f16's top
      case 5: blk[3] = 1e9f; blk[9] = -std::numeric_limits<float>::infinity(); break;  // clamps, overflow
    }
  }
  return v;
}

TEST(cuda_ops_math, KvElementIsLoadRows) {
  const int64_t cols = 192, n = 4;
  const auto x = kv_test_values(cols * n, 11);
  for (DType t : {DType::F32, DType::F16, DType::Q8_0}) {
    const size_t stride = row_bytes(t, cols) + 12;
    std::vector<uint8_t> rows(stride * n, 0xAB);
    std::vector<float> want(static_cast<size_t>(cols * n));
    for (int64_t r = 0; r < n; ++r) {
      quantize_row(t, x.data() + r * cols, rows.data() + r * stride, cols);
      dequantize_row(t, rows.data() + r * stride, want.data() + r * cols, cols);
    }
    for (int64_t r = 0; r < n; ++r)
      for (int64_t e = 0; e < cols; ++e)
        ASSERT_EQ(bits(om::kv_element(static_cast<uint32_t>(t), rows.data() + r * stride, e)), bits(want[r * cols + e]))
            << dtype_name(t) << " row " << r << " element " << e;
  }
}

TEST(cuda_ops_math, StoreEncodersAreStoreRows) {
  const int64_t cols = 32 * 60;
  auto x = kv_test_values(cols, 12);
  auto more = uniform_vec(static_cast<size_t>(cols), 13, -1e-3f, 7e-4f);
  x.insert(x.end(), more.begin(), more.end());
  const int64_t n = static_cast<int64_t>(x.size());
  // Q8_0: block by block.
  std::vector<uint8_t> want(row_bytes(DType::Q8_0, n)), got(want.size(), 0xCD);
  quantize_row(DType::Q8_0, x.data(), want.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) om::q8_0_quantize_block(x.data() + 32 * b, got.data() + 34 * b);
  for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << "Q8_0 byte " << i << " block " << i / 34;
  // F16: value by value, little-endian.
  std::vector<uint8_t> want16(row_bytes(DType::F16, n)), got16(want16.size(), 0xCD);
  quantize_row(DType::F16, x.data(), want16.data(), n);
  for (int64_t i = 0; i < n; ++i) om::store_u16(got16.data() + 2 * i, cuda::hd_f32_to_f16(x[i]));
  EXPECT_EQ(got16, want16);
}

// ---------------------------------------------------------------- rmsnorm, softmax, elementwise

TEST(cuda_ops_math, RmsNorm) {
  auto be = make_reference_backend();
  for (int64_t dim : {1, 7, 64, 896, 4097}) {
    const int64_t n_rows = 3;
    const auto x = uniform_vec(static_cast<size_t>(dim * n_rows), 21 + static_cast<uint32_t>(dim), -3.0f, 3.0f);
    const auto w = uniform_vec(static_cast<size_t>(dim), 5, -2.0f, 2.0f);
    const float eps = dim == 7 ? 1e-6f : 1e-5f;
    std::vector<float> want(x.size());
    be->rmsnorm(x.data(), dim, w.data(), n_rows, dim, eps, want.data(), dim);
    int64_t off_by_one = 0;
    for (int64_t r = 0; r < n_rows; ++r) {
      const float* xr = x.data() + r * dim;
      // In the reference's order: the same bits.
      double ss = 0.0;
      for (int64_t i = 0; i < dim; ++i) ss = om::sumsq_step(ss, xr[i]);
      const double inv = om::rms_inv(ss, dim, eps);
      for (int64_t i = 0; i < dim; ++i)
        ASSERT_EQ(bits(om::rms_apply(xr[i], inv, w[i])), bits(want[r * dim + i])) << "dim " << dim << " i " << i;
      // In the kernel's order (256 threads): the double sum differs by at most dim * 2^-53
      // relative, ~1e-12, far below an f32 half-ulp (2^-24), so an output either has the
      // reference's bits or, next to a rounding boundary, its neighbour: at most 1 ulp.
      const double inv_k = om::rms_inv(kernel_order_sumsq(xr, dim, 256), dim, eps);
      for (int64_t i = 0; i < dim; ++i) {
        const int64_t d = ulp_distance(om::rms_apply(xr[i], inv_k, w[i]), want[r * dim + i]);
        ASSERT_LE(d, 1) << "dim " << dim << " i " << i;
        off_by_one += d;
      }
    }
    EXPECT_LE(off_by_one, dim * n_rows / 100 + 1) << "1-ulp differences should be rare";
  }
}

TEST(cuda_ops_math, Softmax) {
  auto be = make_reference_backend();
  for (int64_t n : {1, 5, 1000, 151936}) {
    auto x = uniform_vec(static_cast<size_t>(n), 31, -20.0f, 12.0f);
    if (n > 3) x[2] = -std::numeric_limits<float>::infinity();
    auto want = x;
    be->softmax(want.data(), n);
    float mx = om::neg_inf();
    for (float v : x) mx = om::max_keep(mx, v);
    double sum = 0.0;
    for (float v : x) sum = om::dadd(sum, om::softmax_exp(v, mx));
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(bits(om::softmax_out(om::softmax_exp(x[i], mx), sum)), bits(want[i])) << i;
  }
  std::vector<float> masked(6, -std::numeric_limits<float>::infinity());
  be->softmax(masked.data(), 6);
  EXPECT_EQ(bits(om::softmax_uniform(6)), bits(masked[0]));
}

TEST(cuda_ops_math, SiluMulAddAddBias) {
  auto be = make_reference_backend();
  const int64_t n = 20000;
  auto g = uniform_vec(n, 41, -30.0f, 30.0f);
  g[0] = 0.0f;
  g[1] = -100.0f;
  g[2] = 100.0f;
  const auto up = uniform_vec(n, 42, -4.0f, 4.0f);
  std::vector<float> want(n), want_add(n);
  be->silu_mul(g.data(), up.data(), want.data(), n);
  be->add(g.data(), up.data(), want_add.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(bits(om::silu_mul(g[i], up[i])), bits(want[i])) << i;
    ASSERT_EQ(bits(om::add(g[i], up[i])), bits(want_add[i])) << i;
  }
  // add_bias: Backend's default (rows of add with the bias as b).
  const int64_t rows = 3, dim = 37, ld = 41;
  auto x = uniform_vec(rows * ld, 43, -1.0f, 1.0f);
  const auto bias = uniform_vec(dim, 44, -1.0f, 1.0f);
  auto ref = x;
  be->add_bias(ref.data(), rows, ld, bias.data(), dim);
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t i = 0; i < ld; ++i) {
      const float v = i < dim ? om::add(x[t * ld + i], bias[i]) : x[t * ld + i];
      ASSERT_EQ(bits(v), bits(ref[t * ld + i]));
    }
}

TEST(cuda_ops_math, RankOrderSumIsCommRankOrderSum) {
  for (int n_parts : {1, 2, 3, 5, 8}) {
    const size_t n = 1001;
    // Mixed magnitudes so that a different order of additions would change bits.
    auto parts = uniform_vec(n * n_parts, 50 + n_parts, -1.0f, 1.0f);
    for (size_t i = 0; i < parts.size(); i += 3) parts[i] *= 1e7f;
    std::vector<const float*> ptrs;
    for (int p = 0; p < n_parts; ++p) ptrs.push_back(parts.data() + p * n);
    std::vector<float> want(n);
    rank_order_sum(ptrs.data(), n_parts, n, want.data());
    for (size_t i = 0; i < n; ++i)
      ASSERT_EQ(bits(om::rank_order_element(parts.data(), n_parts, n, i)), bits(want[i])) << n_parts << " parts, " << i;
  }
}

// ---------------------------------------------------------------- rope

TEST(cuda_ops_math, RopeIsReferenceRope) {
  auto be = make_reference_backend();
  const int32_t pos[] = {0, 1, 17, 4095, 131071};
  const int64_t n_tokens = 5;
  for (RopeMode mode : {RopeMode::Normal, RopeMode::Neox})
    for (int64_t head_dim : {64, 6})
      for (int64_t n_rot : {head_dim, head_dim / 2 / 2 * 2, int64_t{2}})  // all, n_rot < head_dim
        for (int64_t n_heads : {1, 3, 5})
          for (bool factors : {false, true})
            for (float freq_scale : {1.0f, 0.25f}) {
              const int64_t ld = n_heads * head_dim + 3;
              const auto x = uniform_vec(static_cast<size_t>(n_tokens * ld), 60 + static_cast<uint32_t>(n_heads), -2, 2);
              const auto ff = uniform_vec(static_cast<size_t>(n_rot / 2), 61, 1.0f, 8.0f);
              RopeParams p;
              p.mode = mode;
              p.n_rot = n_rot;
              p.freq_base = mode == RopeMode::Neox ? 1000000.0f : 10000.0f;
              p.freq_scale = freq_scale;
              p.freq_factors = factors ? ff.data() : nullptr;
              auto want = x;
              be->rope(want.data(), n_tokens, ld, n_heads, head_dim, pos, p);
              auto got = x;  // as rope_kernel: one (token, pair) at a time, every head
              const bool neox = mode == RopeMode::Neox;
              const int64_t half = n_rot / 2;
              for (int64_t t = 0; t < n_tokens; ++t)
                for (int64_t i = 0; i < half; ++i) {
                  const double th =
                      om::rope_theta(pos[t], freq_scale, om::rope_inv_freq(i, n_rot, p.freq_base, p.freq_factors));
                  const double c = om::m_cos(th), s = om::m_sin(th);
                  for (int64_t h = 0; h < n_heads; ++h) {
                    float* head = got.data() + t * ld + h * head_dim;
                    om::rope_rotate(head + om::rope_first(neox, i), head + om::rope_second(neox, i, half), c, s);
                  }
                }
              for (size_t k = 0; k < got.size(); ++k)
                ASSERT_EQ(bits(got[k]), bits(want[k]))
                    << (neox ? "neox" : "normal") << " head_dim " << head_dim << " n_rot " << n_rot << " heads "
                    << n_heads << " factors " << factors << " scale " << freq_scale << " at " << k;
            }
}

// ---------------------------------------------------------------- split-K plan

TEST(cuda_ops_math, SplitKPlanCoversEveryRowOnce) {
  for (int64_t n_kv = 1; n_kv <= 700; n_kv += (n_kv < 70 ? 1 : 13))
    for (int64_t nq : {1, 3, 32, 511, 512, 513, 100000})
      for (int64_t min_rows : {1, 7, 256})
        for (int64_t target : {int64_t{1}, int64_t{512}, int64_t{100000}}) {
          const om::SplitKPlan p = om::split_k_plan(n_kv, nq, target, min_rows);
          ASSERT_GE(p.n_chunks, 1);
          std::vector<int> seen(static_cast<size_t>(n_kv), 0);
          for (int64_t c = 0; c < p.n_chunks; ++c) {
            const int64_t lo = om::chunk_begin(p, c), hi = om::chunk_end(p, c, n_kv);
            ASSERT_LT(lo, hi) << "empty chunk " << c << " of " << p.n_chunks << ", n_kv " << n_kv;
            if (c > 0) {
              ASSERT_EQ(lo, om::chunk_end(p, c - 1, n_kv));
            }
            if (p.n_chunks > 1 && c + 1 < p.n_chunks) {  // only the last chunk may be shorter
              ASSERT_GE(hi - lo, min_rows) << n_kv << " " << nq << " " << min_rows;
            }
            for (int64_t r = lo; r < hi; ++r) ++seen[r];
          }
          for (int64_t r = 0; r < n_kv; ++r) ASSERT_EQ(seen[r], 1) << "row " << r << " n_kv " << n_kv;
          ASSERT_LE(p.n_chunks, std::max<int64_t>(1, (target + nq - 1) / nq));  // no more blocks than asked
        }
  // The launcher's plan: one chunk for prefill-sized calls, many for one decoding token.
  EXPECT_EQ(om::split_k_plan(4096, 512 * 32).n_chunks, 1);
  EXPECT_EQ(om::split_k_plan(4096, 32).n_chunks, 16);
  EXPECT_EQ(om::split_k_plan(100, 32).n_chunks, 1);
}

// ---------------------------------------------------------------- attention

// attention_kernel's step (2), replayed lane by lane: warp 0 scans a tile's scores 32 at a time
// (inclusive running max by __shfl_up_sync, the key's "before" from the lane below, the carry
// from the previous 32) and each key's online coefficients come from that max. They must be the
// bits of the sequential chain online_update walks (max is exact, so any grouping gives it).
TEST(cuda_ops_math, KernelTileCoefficientsAreTheSequentialOnes) {
  std::mt19937 rng(77);
  std::uniform_real_distribution<float> d(-6.0f, 6.0f);
  for (int n : {1, 5, 31, 32, 33, 100, 128})
    for (float carry0 : {om::neg_inf(), 0.0f, 2.5f}) {
      std::vector<float> sc(static_cast<size_t>(n));
      for (auto& x : sc) x = d(rng);
      if (n > 4) sc[3] = sc[1], sc[4] = -0.0f, sc[2] = om::neg_inf();  // ties, signed zero, a masked key
      std::vector<float> al(sc.size()), pp(sc.size());
      float carry = carry0;
      for (int b0 = 0; b0 < n; b0 += om::kWarp) {
        float sj[om::kWarp], run[om::kWarp];
        for (int l = 0; l < om::kWarp; ++l) run[l] = sj[l] = b0 + l < n ? sc[b0 + l] : om::neg_inf();
        for (int off = 1; off < om::kWarp; off *= 2) {
          float o[om::kWarp];
          for (int l = 0; l < om::kWarp; ++l) o[l] = l >= off ? run[l - off] : run[l];  // __shfl_up_sync
          for (int l = 0; l < om::kWarp; ++l)
            if (l >= off) run[l] = om::max_keep(o[l], run[l]);
        }
        for (int l = 0; l < om::kWarp && b0 + l < n; ++l) {
          const float before = l == 0 ? om::neg_inf() : run[l - 1];
          const om::OnlineCoeffs k = om::online_coeffs(om::max_keep(carry, before), sj[l]);
          al[b0 + l] = k.alpha;
          pp[b0 + l] = k.p;
        }
        carry = om::max_keep(carry, run[om::kWarp - 1]);
      }
      float m = carry0;
      for (int j = 0; j < n; ++j) {
        const om::OnlineCoeffs k = om::online_coeffs(m, sc[j]);
        ASSERT_EQ(bits(al[j]), bits(k.alpha)) << "n " << n << " key " << j;
        ASSERT_EQ(bits(pp[j]), bits(k.p)) << "n " << n << " key " << j;
        m = k.m;
      }
      ASSERT_EQ(carry, m) << "n " << n;
    }
}

struct AttnCase {
  int64_t n_tokens, n_heads, n_kv_heads, head_dim, n_kv;
  float q_amp;  // |q| range: larger makes wider score ranges (more rescaling)
};

// Attention of query (t, h) exactly as the kernels compute it, through ops_math: the plan's
// chunks clipped to t's causal window, each an online-softmax partial over warp-order scores,
// merged in chunk order, acc / l. Also returns what the error bound needs.
struct AttnRun {
  std::vector<float> out;
  int64_t max_keys_per_chunk = 0;  // N
  int64_t max_increases = 0;       // rises of a chunk's running max after its first key
  int64_t nonempty_chunks = 0;
};
AttnRun attention_as_kernel(const float* qh, uint32_t type, const uint8_t* k, const uint8_t* v, size_t stride,
                            int64_t elem0, int64_t hd, int64_t visible, const om::SplitKPlan& plan, int64_t n_kv,
                            float scale) {
  AttnRun r;
  std::vector<float> accm(static_cast<size_t>(hd)), acc(static_cast<size_t>(hd));
  float mm = 0, lm = 0;
  for (int64_t c = 0; c < plan.n_chunks; ++c) {
    const int64_t lo = om::chunk_begin(plan, c), hi = std::min(om::chunk_end(plan, c, n_kv), visible);
    float m = om::neg_inf(), l = 0.0f;
    std::fill(acc.begin(), acc.end(), 0.0f);
    int64_t increases = 0;
    for (int64_t j = lo; j < hi; ++j) {
      const float s = om::score_warp_order(qh, type, k + j * stride, elem0, hd, scale);
      if (m != om::neg_inf() && s > m) ++increases;
      om::online_update(&m, &l, acc.data(), hd, s, type, v + j * stride, elem0);
    }
    r.max_keys_per_chunk = std::max(r.max_keys_per_chunk, std::max<int64_t>(0, hi - lo));
    r.max_increases = std::max(r.max_increases, increases);
    if (hi > lo) ++r.nonempty_chunks;
    if (c == 0) {
      mm = m, lm = l, accm = acc;
    } else {
      om::merge_into(&mm, &lm, accm.data(), hd, m, l, acc.data());
    }
  }
  r.out.resize(static_cast<size_t>(hd));
  for (int64_t i = 0; i < hd; ++i) r.out[i] = om::attn_finalize(accm[i], lm);
  return r;
}

// The error bound, per output element i of query (t, h) (u = 2^-24, gamma_n = n u / (1 - n u)):
//  - scores: a lane sums ceil(hd/32) FMAs, the butterfly adds 5 times, the scale 1 product:
//    |s^_j - s_j| <= delta_j = gamma_{ceil(hd/32)+6} * scale * sum_i |q_i k_ji|.
//  - weights: p_j = exp(fl(s^_j - m)), eps_e = 2^-22 (expf within 2 ulp, CUDA's bound; glibc's
//    is tighter), the subtraction's rounding u * R (R: the range of the scores); each later rise of
//    the running max rescales by alpha (same error), as does each merge: K + 1 factors in all, K =
//    the rises in a chunk after its first key + (non-empty chunks - 1). Every weight is off by a
//    factor within e^{+-D}, D = max delta + (K + 1)(eps_e + u R); normalised, within e^{+-2D}, so
//    sum_j |w^_j - w_j| |v_ji| <= (e^{2D} - 1) A_i, A_i = sum_j w_j |v_ji| (exact weights).
//  - sums: acc and l each pass <= 2 roundings per key of a chunk (the rescale product, the FMA or
//    add) and 2 per merge: gamma_a = gamma_{2N + 2C} relative to their sums of |terms|; the ratio
//    then errs by <= 2 gamma_a / (1 - gamma_a) of e^{2D} A_i, and the division by u of that.
//  - the reference rounds its double result once (u A_i; its double error, N 2^-53 A_i, is added).
double attention_bound(double A, double delta_max, double R, const AttnRun& r, int64_t n_chunks) {
  const double eps_e = std::ldexp(1.0, -22);
  const int64_t K = r.max_increases + std::max<int64_t>(0, r.nonempty_chunks - 1);
  const double D = delta_max + static_cast<double>(K + 1) * (eps_e + kU * R);
  const double na = static_cast<double>(2 * r.max_keys_per_chunk + 2 * n_chunks);
  const double ga = na * kU / (1.0 - na * kU);
  const double e2d = std::exp(2.0 * D);
  return ((e2d - 1.0) + e2d * (2.0 * ga / (1.0 - ga) + kU) + kU +
          static_cast<double>(r.max_keys_per_chunk * n_chunks) * std::ldexp(1.0, -53)) *
         A;
}

void check_attention(const AttnCase& ac, DType type, int64_t min_chunk_rows, int64_t target_blocks, uint32_t seed,
                     double* worst_ratio) {
  const int64_t hd = ac.head_dim, qd = ac.n_heads * hd, kvd = ac.n_kv_heads * hd;
  const int64_t ldq = qd + 5, ldo = qd + 3;
  const auto q = uniform_vec(static_cast<size_t>(ac.n_tokens * ldq), seed, -ac.q_amp, ac.q_amp);
  const auto kf = uniform_vec(static_cast<size_t>(ac.n_kv * kvd), seed + 1, -1.0f, 1.0f);
  const auto vf = uniform_vec(static_cast<size_t>(ac.n_kv * kvd), seed + 2, -1.0f, 1.0f);
  const size_t stride = row_bytes(type, kvd) + 8;  // rows padded, as a cache may be
  std::vector<uint8_t> k(stride * ac.n_kv), v(stride * ac.n_kv);
  auto be = make_reference_backend();
  be->store_rows(kf.data(), ac.n_kv, kvd, kvd, type, k.data(), stride);
  be->store_rows(vf.data(), ac.n_kv, kvd, kvd, type, v.data(), stride);
  std::vector<float> kd(static_cast<size_t>(ac.n_kv * kvd)), vd(kd.size());  // the stored values
  be->load_rows(k.data(), stride, ac.n_kv, kvd, type, kd.data(), kvd);
  be->load_rows(v.data(), stride, ac.n_kv, kvd, type, vd.data(), kvd);

  const AttentionShape s{ac.n_tokens, ac.n_heads, ac.n_kv_heads, hd, ac.n_kv};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<float> want(static_cast<size_t>(ac.n_tokens * ldo), 0.0f);
  be->attention_rows(q.data(), ldq, {type, k.data(), stride}, {type, v.data(), stride}, s, scale, want.data(), ldo);

  const om::SplitKPlan plan = om::split_k_plan(ac.n_kv, ac.n_tokens * ac.n_heads, target_blocks, min_chunk_rows);
  const int64_t n_lane = (hd + om::kWarp - 1) / om::kWarp;
  const double g_dot = (n_lane + 6) * kU / (1.0 - (n_lane + 6) * kU);
  for (int64_t t = 0; t < ac.n_tokens; ++t)
    for (int64_t h = 0; h < ac.n_heads; ++h) {
      const int64_t kvh = om::kv_head_of(h, ac.n_heads, ac.n_kv_heads);
      ASSERT_EQ(kvh, h / (ac.n_heads / ac.n_kv_heads));
      const int64_t visible = om::last_visible_row(ac.n_kv, ac.n_tokens, t) + 1;
      const float* qh = q.data() + t * ldq + h * hd;
      const AttnRun r = attention_as_kernel(qh, static_cast<uint32_t>(type), k.data(), v.data(), stride, kvh * hd, hd,
                                            visible, plan, ac.n_kv, scale);
      // Exact scores and weights (double) over the visible rows.
      std::vector<double> sc(static_cast<size_t>(visible));
      double delta = 0.0, smax = -1e300, smin = 1e300;
      for (int64_t j = 0; j < visible; ++j) {
        double dot = 0.0, dabs = 0.0;
        for (int64_t i = 0; i < hd; ++i) {
          const double kj = kd[j * kvd + kvh * hd + i];
          dot += qh[i] * kj;
          dabs += std::fabs(qh[i] * kj);
        }
        sc[j] = dot * scale;
        delta = std::max(delta, g_dot * scale * dabs);
        smax = std::max(smax, sc[j]);
        smin = std::min(smin, sc[j]);
      }
      double wsum = 0.0;
      for (auto& x : sc) wsum += (x = std::exp(x - smax));
      const double R = smax - smin + 2.0 * delta;
      for (int64_t i = 0; i < hd; ++i) {
        double A = 0.0;
        for (int64_t j = 0; j < visible; ++j) A += sc[j] / wsum * std::fabs(vd[j * kvd + kvh * hd + i]);
        const double bound = attention_bound(A, delta, R, r, plan.n_chunks);
        const double err = std::fabs(static_cast<double>(r.out[i]) - want[t * ldo + h * hd + i]);
        ASSERT_LE(err, bound) << dtype_name(type) << " t " << t << " h " << h << " i " << i << " chunks "
                              << plan.n_chunks << " (got " << r.out[i] << ", want " << want[t * ldo + h * hd + i] << ")";
        if (bound > 0) *worst_ratio = std::max(*worst_ratio, err / bound);
      }
    }
}

TEST(cuda_ops_math, SplitKAttentionWithinDerivedBound) {
  const AttnCase cases[] = {
      {1, 8, 2, 64, 300, 1.0f},   // one decoding token, GQA 8 heads over 2
      {5, 3, 1, 32, 37, 3.0f},    // several tokens (causal windows), 3 heads on 1 KV head
      {4, 4, 4, 96, 4, 2.0f},     // prefill from an empty cache: n_kv == n_tokens
      {3, 6, 3, 40, 70, 4.0f},    // head_dim not a multiple of 32 (F32/F16 only: 120-value rows)
      {2, 2, 1, 128, 777, 6.0f},  // long, wide score range: many rescales
  };
  double worst = 0.0;
  uint32_t seed = 100;
  for (const AttnCase& ac : cases)
    for (DType type : {DType::F32, DType::F16, DType::Q8_0}) {
      if (type == DType::Q8_0 && (ac.n_kv_heads * ac.head_dim) % 32 != 0) continue;
      // One chunk; chunks of 7 rows (n_kv not a multiple); one row per chunk; the launcher's plan.
      const int64_t plans[][2] = {{ac.n_kv + 1, 1}, {7, 1 << 30}, {1, 1 << 30}, {om::kMinChunkRows, om::kTargetBlocks}};
      for (const auto& pl : plans) {
        SCOPED_TRACE("case n_tokens " + std::to_string(ac.n_tokens) + " heads " + std::to_string(ac.n_heads) + "/" +
                     std::to_string(ac.n_kv_heads) + " n_kv " + std::to_string(ac.n_kv) + " min_rows " +
                     std::to_string(pl[0]));
        check_attention(ac, type, pl[0], pl[1], seed++, &worst);
        if (HasFatalFailure()) return;
      }
    }
  std::printf("worst error / bound: %.3g\n", worst);
}

// The chunking really splits: the many-chunk plans used above have the chunk counts they claim.
TEST(cuda_ops_math, SplitKPlansUsedByTheAttentionTest) {
  EXPECT_EQ(om::split_k_plan(300, 8, 1 << 30, 7).n_chunks, 38);  // 8-row chunks, the last 4 rows
  EXPECT_EQ(om::split_k_plan(37, 15, 1 << 30, 1).n_chunks, 37);
  EXPECT_EQ(om::split_k_plan(300, 8, 1, 301).n_chunks, 1);
}

}  // namespace
}  // namespace herd
