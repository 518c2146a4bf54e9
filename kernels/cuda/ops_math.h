// The math of the CUDA activation ops (kernels/cuda/ops.cu), one element or one step at a time,
// as HERD_HD functions: nvcc compiles them into the kernels, g++ into the CPU test
// (tests/kernels/test_cuda_ops_math.cpp), which checks each against the reference backend.
// The kernels are thin loops over these functions; what a kernel adds (its reduction order,
// its warp shuffles) is described next to the function that emulates it for the test.
//
// Rounding. The reference (kernels/cpu/reference_backend.cpp) computes in double and rounds to
// f32 once. Where its bits depend on the order of operations (rope, rmsnorm's scaling, silu,
// softmax's exponentials, the KV conversions) these functions do the same operations in the same
// order, and on the device through the _rn intrinsics, which nvcc never contracts into an FMA
// (the host test builds with -ffp-contract=off). The transcendental functions differ: the test
// runs glibc's, the device CUDA's (double pow/sin/cos/exp within 2 ulp, expf within 2 ulp), so
// on a GPU a result may differ from the reference in its last f32 bit where the double value
// lies next to a rounding boundary; the comments say which bound covers it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/hd.h"
#include "kernels/cuda/hd_fp16.h"  // f32_bits, bits_f32, hd_mul/add/sub, f16 <-> f32, load_u16

#if !defined(__CUDACC__)
#include <cmath>
#include <cstring>  // std::memcpy, in code only g++ compiles
#endif

namespace herd::cuda::ops_math {

// Raw DType ids of the KV storage types (kernels/dtype.h; the test static_asserts them).
inline constexpr uint32_t kF32 = 0, kF16 = 1, kQ8_0 = 8;
inline constexpr int kQ8Block = 32;       // values per Q8_0 block
inline constexpr int kQ8BlockBytes = 34;  // {f16 d; i8 qs[32]}
inline constexpr int kWarp = 32;

// ---- primitives: the same operation under both compilers, never contracted ----

HERD_HD float neg_inf() { return bits_f32(0xFF800000u); }

HERD_HD double dmul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
HERD_HD double dadd(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
HERD_HD double dsub(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
// a * b + c rounded once (IEEE fma on both sides: the same bits).
HERD_HD float ffma(float a, float b, float c) {
#if defined(__CUDACC__)
  return fmaf(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

#if defined(__CUDACC__)
HERD_HD double m_pow(double a, double b) { return pow(a, b); }
HERD_HD double m_cos(double a) { return cos(a); }
HERD_HD double m_sin(double a) { return sin(a); }
HERD_HD double m_exp(double a) { return exp(a); }
HERD_HD double m_sqrt(double a) { return sqrt(a); }
HERD_HD float m_expf(float a) { return expf(a); }
HERD_HD float m_fabsf(float a) { return fabsf(a); }
HERD_HD float m_rintf(float a) { return rintf(a); }
#else
HERD_HD double m_pow(double a, double b) { return std::pow(a, b); }
HERD_HD double m_cos(double a) { return std::cos(a); }
HERD_HD double m_sin(double a) { return std::sin(a); }
HERD_HD double m_exp(double a) { return std::exp(a); }
HERD_HD double m_sqrt(double a) { return std::sqrt(a); }
HERD_HD float m_expf(float a) { return std::exp(a); }
HERD_HD float m_fabsf(float a) { return std::fabs(a); }
HERD_HD float m_rintf(float a) { return std::rint(a); }  // ties to even (default rounding mode)
#endif

// std::max(a, b) as the reference writes it: b only when a < b (a NaN b is never taken).
HERD_HD float max_keep(float a, float b) { return a < b ? b : a; }

HERD_HD void store_u16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v & 0xFF);
  p[1] = static_cast<uint8_t>(v >> 8);
}

// ---- KV rows (store_rows / load_rows; kernels/quant.h) ----

// Element e of a KV row of `type` as f32: dequantize_row's value, bit for bit (F16 exact, Q8_0
// one f32 product q * d). On the device F32 rows are read as floats (4-byte aligned: the
// launchers check).
HERD_HD float kv_element(uint32_t type, const uint8_t* row, int64_t e) {
  if (type == kF16) return hd_f16_to_f32(load_u16(row + 2 * e));
  if (type == kQ8_0) {
    const uint8_t* blk = row + (e / kQ8Block) * kQ8BlockBytes;
    const float d = hd_f16_to_f32(load_u16(blk));
    return hd_mul(static_cast<float>(static_cast<int8_t>(blk[2 + e % kQ8Block])), d);
  }
#if defined(__CUDACC__)
  return reinterpret_cast<const float*>(row)[e];
#else
  float f;  // g++ (the test): no float access to another type's bytes
  std::memcpy(&f, row + 4 * e, sizeof f);
  return f;
#endif
}

// The smallest f16 >= x, clamped to +-65504 (quant_impl.h f16_ceil; x finite).
HERD_HD uint16_t f16_ceil(float x) {
  const float kMax = 65504.0f;
  x = x > kMax ? kMax : (x < -kMax ? -kMax : x);
  uint16_t h = hd_f32_to_f16(x);
  if (hd_f16_to_f32(h) < x) h = h == 0x8000u ? static_cast<uint16_t>(0x0001u)
                                          : static_cast<uint16_t>((h & 0x8000u) ? h - 1 : h + 1);
  return h;
}

// Nearest integer level in [lo, hi], ties to even; NaN -> lo (quant_impl.h nearest_level).
HERD_HD int nearest_level(float v, int lo, int hi) {
  const float c = v > static_cast<float>(hi) ? static_cast<float>(hi)
                                              : (v >= static_cast<float>(lo) ? v : static_cast<float>(lo));
  return static_cast<int>(m_rintf(c));
}

// One Q8_0 block of 32 values into 34 bytes, as quantize_row does: d = the f16 at or above
// max|x| / 127, q = nearest level of x / d in [-127, 127] (0 for an all-zero block).
HERD_HD void q8_0_quantize_block(const float* x, uint8_t* dst) {
  float amax = 0.0f;
  for (int j = 0; j < kQ8Block; ++j) amax = max_keep(amax, m_fabsf(x[j]));
  const uint16_t dh = f16_ceil(amax / 127.0f);
  const float d = hd_f16_to_f32(dh);
  store_u16(dst, dh);
  for (int j = 0; j < kQ8Block; ++j) {
    const int q = d > 0.0f ? nearest_level(x[j] / d, -127, 127) : 0;
    dst[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(q));
  }
}

// ---- rmsnorm: out = x / sqrt(mean(x^2) + eps) * w, the sum of squares in double ----

// One term of the sum (x * x is exact in double, so an FMA would give the same bits).
HERD_HD double sumsq_step(double acc, float x) {
  return dadd(acc, dmul(static_cast<double>(x), static_cast<double>(x)));
}
HERD_HD double rms_inv(double sum_sq, int64_t dim, float eps) {
  return 1.0 / m_sqrt(dadd(sum_sq / static_cast<double>(dim), static_cast<double>(eps)));
}
HERD_HD float rms_apply(float x, double inv_rms, float w) {
  return static_cast<float>(dmul(dmul(static_cast<double>(x), inv_rms), static_cast<double>(w)));
}

// ---- rope: theta_i = pos * freq_scale * freq_base^(-2i / n_rot) / freq_factors[i] ----

HERD_HD double rope_inv_freq(int64_t i, int64_t n_rot, float freq_base, const float* freq_factors) {
  double f = m_pow(static_cast<double>(freq_base), dmul(-2.0, static_cast<double>(i)) / static_cast<double>(n_rot));
  if (freq_factors) f = f / static_cast<double>(freq_factors[i]);
  return f;
}
HERD_HD double rope_theta(int32_t pos, float freq_scale, double inv_freq) {
  return dmul(dmul(static_cast<double>(pos), static_cast<double>(freq_scale)), inv_freq);
}
// The two elements pair i rotates: (2i, 2i+1) Normal, (i, i + n_rot/2) Neox.
HERD_HD int64_t rope_first(bool neox, int64_t i) { return neox ? i : 2 * i; }
HERD_HD int64_t rope_second(bool neox, int64_t i, int64_t half) { return neox ? i + half : 2 * i + 1; }
// (x0, x1) rotated by theta (c = cos, s = sin), in double, rounded once each.
HERD_HD void rope_rotate(float* x0, float* x1, double c, double s) {
  const double a = *x0, b = *x1;
  *x0 = static_cast<float>(dsub(dmul(a, c), dmul(b, s)));
  *x1 = static_cast<float>(dadd(dmul(a, s), dmul(b, c)));
}

// ---- softmax (max-subtracted; exponentials and their sum in double) ----

HERD_HD double softmax_exp(float x, float mx) { return m_exp(dsub(static_cast<double>(x), static_cast<double>(mx))); }
HERD_HD float softmax_out(double e, double sum) { return static_cast<float>(e / sum); }
HERD_HD float softmax_uniform(int64_t n) { return static_cast<float>(1.0 / static_cast<double>(n)); }

// ---- elementwise ----

HERD_HD float silu_mul(float gate, float up) {
  const double g = gate;
  return static_cast<float>(dmul(g / dadd(1.0, m_exp(-g)), static_cast<double>(up)));
}
HERD_HD float add(float a, float b) { return hd_add(a, b); }

// parts: [n_parts, n]. ((p0[i] + p1[i]) + p2[i]) + ... in f32: engine/comm.h rank_order_sum.
HERD_HD float rank_order_element(const float* parts, int n_parts, size_t n, size_t i) {
  float acc = parts[i];
  for (int p = 1; p < n_parts; ++p) acc = hd_add(acc, parts[static_cast<size_t>(p) * n + i]);
  return acc;
}

// ---- attention: indices ----

// Query head h reads KV head h / (n_heads / n_kv_heads) (GQA; n_heads % n_kv_heads == 0).
HERD_HD int64_t kv_head_of(int64_t h, int64_t n_heads, int64_t n_kv_heads) { return h / (n_heads / n_kv_heads); }
// The last cache row query t (0-based in the call) may see: the causal window is rows 0..this.
HERD_HD int64_t last_visible_row(int64_t n_kv, int64_t n_tokens, int64_t t) { return n_kv - n_tokens + t; }

// Split-K: the cache rows [0, n_kv) in n_chunks consecutive chunks of chunk_rows (the last one
// shorter), one thread block per (token, head, chunk), so a single decoding token still fills
// the GPU. Chunks are added only while there are fewer than target_blocks blocks and every chunk
// but the last keeps at least min_chunk_rows rows; with many queries (prefill) it is one chunk.
inline constexpr int64_t kTargetBlocks = 512;
inline constexpr int64_t kMinChunkRows = 256;
struct SplitKPlan {
  int64_t n_chunks;
  int64_t chunk_rows;
};
HERD_HD SplitKPlan split_k_plan(int64_t n_kv, int64_t n_queries, int64_t target_blocks = kTargetBlocks,
                                int64_t min_chunk_rows = kMinChunkRows) {
  if (n_kv <= 0) return {1, 0};
  if (n_queries < 1) n_queries = 1;
  if (min_chunk_rows < 1) min_chunk_rows = 1;
  int64_t want = (target_blocks + n_queries - 1) / n_queries;
  const int64_t most = n_kv / min_chunk_rows;  // chunk_rows >= n_kv / most >= min_chunk_rows
  if (want > most) want = most;
  if (want < 1) want = 1;
  const int64_t rows = (n_kv + want - 1) / want;
  return {(n_kv + rows - 1) / rows, rows};  // recounted: no empty trailing chunk
}
HERD_HD int64_t chunk_begin(const SplitKPlan& p, int64_t c) { return c * p.chunk_rows; }
HERD_HD int64_t chunk_end(const SplitKPlan& p, int64_t c, int64_t n_kv) {
  const int64_t e = (c + 1) * p.chunk_rows;
  return e < n_kv ? e : n_kv;
}

// ---- attention: scores ----

// One lane's share of q . k for one key: sum over i = lane, lane + 32, ... of q[i] * k[elem0 + i]
// by FMA in that order. The kernel then adds the 32 lanes by butterfly_sum32's order.
HERD_HD float dot_lane(const float* q, uint32_t type, const uint8_t* k_row, int64_t elem0, int64_t head_dim, int lane) {
  float acc = 0.0f;
  for (int64_t i = lane; i < head_dim; i += kWarp) acc = ffma(q[i], kv_element(type, k_row, elem0 + i), acc);
  return acc;
}
// The kernel's warp reduction, __shfl_xor_sync with offsets 16, 8, 4, 2, 1: after each step lane l
// holds v[l] + v[l ^ off] (the same bits on both lanes: addition commutes). All lanes end equal.
template <typename T>
HERD_HD void butterfly_sum32(T* v) {
  for (int off = kWarp / 2; off > 0; off /= 2) {
    T w[kWarp];
    for (int l = 0; l < kWarp; ++l) w[l] = v[l] + v[l ^ off];
    for (int l = 0; l < kWarp; ++l) v[l] = w[l];
  }
}
HERD_HD float score(float dot, float scale) { return hd_mul(dot, scale); }
// q . k * scale exactly as a warp of the kernel computes it (for the test; the kernel shuffles).
HERD_HD float score_warp_order(const float* q, uint32_t type, const uint8_t* k_row, int64_t elem0, int64_t head_dim,
                               float scale) {
  float part[kWarp];
  for (int l = 0; l < kWarp; ++l) part[l] = dot_lane(q, type, k_row, elem0, head_dim, l);
  butterfly_sum32(part);
  return score(part[0], scale);
}

// ---- attention: the partial state of one chunk (online softmax) ----
//   m: the largest score so far, l: sum of exp(s_j - m), acc[i]: sum of exp(s_j - m) * v_j[i].
// Adding key s with value v: m' = max(m, s), every old term is rescaled by alpha = exp(m - m'),
// the new one weighs p = exp(s - m'). alpha is exactly 1 when the max does not move.

struct OnlineCoeffs {
  float m, alpha, p;
};
HERD_HD OnlineCoeffs online_coeffs(float m_old, float s) {
  const float m = max_keep(m_old, s);
  if (m == neg_inf()) return {m, 1.0f, 0.0f};  // nothing finite yet: no weight
  const float alpha = m_old == m ? 1.0f : m_expf(hd_sub(m_old, m));
  return {m, alpha, m_expf(hd_sub(s, m))};
}
HERD_HD float acc_step(float acc, float alpha, float p, float v) { return ffma(p, v, hd_mul(acc, alpha)); }
HERD_HD float l_step(float l, float alpha, float p) { return hd_add(hd_mul(l, alpha), p); }

// The whole update for one key/value (the test's sequential form; the kernel computes the
// coefficients of a tile of keys first, each from its exact running max, then applies them).
HERD_HD void online_update(float* m, float* l, float* acc, int64_t head_dim, float s, uint32_t type,
                           const uint8_t* v_row, int64_t elem0) {
  const OnlineCoeffs c = online_coeffs(*m, s);
  for (int64_t i = 0; i < head_dim; ++i) acc[i] = acc_step(acc[i], c.alpha, c.p, kv_element(type, v_row, elem0 + i));
  *l = l_step(*l, c.alpha, c.p);
  *m = c.m;
}

// Merging partial b into partial a (log-sum-exp): m = max(ma, mb), each side rescaled by
// exp(its m - m) (exactly 1 for the side holding the max; an empty side, m = -inf, weighs 0).
struct MergeCoeffs {
  float m, ca, cb;
};
HERD_HD MergeCoeffs merge_coeffs(float ma, float mb) {
  const float m = max_keep(ma, mb);
  if (m == neg_inf()) return {m, 1.0f, 0.0f};
  return {m, ma == m ? 1.0f : m_expf(hd_sub(ma, m)), mb == m ? 1.0f : m_expf(hd_sub(mb, m))};
}
HERD_HD float merge_value(float a, float ca, float b, float cb) { return ffma(b, cb, hd_mul(a, ca)); }
HERD_HD void merge_into(float* m, float* l, float* acc, int64_t head_dim, float mb, float lb, const float* accb) {
  const MergeCoeffs c = merge_coeffs(*m, mb);
  for (int64_t i = 0; i < head_dim; ++i) acc[i] = merge_value(acc[i], c.ca, accb[i], c.cb);
  *l = merge_value(*l, c.ca, lb, c.cb);
  *m = c.m;
}
// The output: acc / l (l >= 1: the key holding the max weighs exactly exp(0) = 1).
HERD_HD float attn_finalize(float acc, float l) { return acc / l; }

}  // namespace herd::cuda::ops_math
