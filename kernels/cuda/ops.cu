// The CUDA activation ops (ops.h): thin loops over the math of ops_math.h, which the CPU test
// checks against the reference backend. What a kernel adds is its reduction order (strided
// per-thread partials, a butterfly in each warp, the warps' sums in order) and, for attention,
// its split of the keys into chunks and tiles; test_cuda_ops_math emulates both.
// Compiles for sm_80/86/89/90; not run on a GPU here.
#include "kernels/cuda/ops.h"

#include <cstdint>

#include "kernels/cuda/ops_math.h"

namespace herd::cuda {
namespace {

namespace om = ops_math;

constexpr int kThreads = 256;      // elementwise and row kernels
constexpr int kAttnThreads = 128;  // attention: 4 warps
constexpr int kAttnTile = 128;     // keys scored per pass of an attention block
constexpr int64_t kMaxGrid = int64_t{1} << 20;  // larger work loops (grid-stride)
constexpr unsigned kFull = 0xFFFFFFFFu;

unsigned grid_for(int64_t work, int threads) {
  int64_t b = (work + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > kMaxGrid) b = kMaxGrid;
  return static_cast<unsigned>(b);
}
unsigned grid_items(int64_t items) { return static_cast<unsigned>(items < 1 ? 1 : (items > kMaxGrid ? kMaxGrid : items)); }

bool aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }
bool is_kv(uint32_t t) { return t == om::kF32 || t == om::kF16 || t == om::kQ8_0; }
// Bytes of a row of `cols` values of a KV type (cols a multiple of 32 for Q8_0: checked apart).
size_t kv_row_bytes(uint32_t t, int64_t cols) {
  if (t == om::kF32) return 4 * static_cast<size_t>(cols);
  if (t == om::kF16) return 2 * static_cast<size_t>(cols);
  return static_cast<size_t>(cols / om::kQ8Block) * om::kQ8BlockBytes;
}
// The shape of KV rows is usable: a KV type, whole Q8_0 blocks, a stride holding a row, and
// F32 rows 4-byte aligned (they are read as floats; F16 and Q8_0 bytewise).
bool kv_rows_ok(uint32_t t, const void* p, size_t stride, int64_t cols) {
  if (!is_kv(t) || cols < 0 || stride < kv_row_bytes(t, cols)) return false;
  if (t == om::kQ8_0 && cols % om::kQ8Block != 0) return false;
  if (t == om::kF32 && (!aligned(p, 4) || stride % 4 != 0)) return false;
  return true;
}

__device__ __forceinline__ int64_t thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// Sum of one double per thread: a butterfly in each warp (om::butterfly_sum32's order), then the
// warps' sums in warp order. Every thread gets the total. red: [blockDim.x / 32].
__device__ double block_sum(double v, double* red) {
  for (int off = om::kWarp / 2; off > 0; off /= 2) v = om::dadd(v, __shfl_xor_sync(kFull, v, off));
  const int warp = threadIdx.x / om::kWarp, lane = threadIdx.x % om::kWarp;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  double total = red[0];
  for (int w = 1; w < static_cast<int>(blockDim.x / om::kWarp); ++w) total = om::dadd(total, red[w]);
  __syncthreads();  // red is reused by the next call
  return total;
}
// Max of one float per thread (exact: any order gives the same value). red: [blockDim.x / 32].
__device__ float block_max(float v, float* red) {
  for (int off = om::kWarp / 2; off > 0; off /= 2) v = om::max_keep(v, __shfl_xor_sync(kFull, v, off));
  const int warp = threadIdx.x / om::kWarp, lane = threadIdx.x % om::kWarp;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float total = red[0];
  for (int w = 1; w < static_cast<int>(blockDim.x / om::kWarp); ++w) total = om::max_keep(total, red[w]);
  __syncthreads();
  return total;
}

// ---- rmsnorm: one block per row ----
__global__ void rmsnorm_kernel(const float* x, int64_t ldx, const float* w, int64_t n_rows, int64_t dim, float eps,
                               float* out, int64_t ldo) {
  __shared__ double red[kThreads / om::kWarp];
  for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
    const float* xr = x + r * ldx;
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) acc = om::sumsq_step(acc, xr[i]);
    const double inv = om::rms_inv(block_sum(acc, red), dim, eps);  // all of xr read before any write
    float* o = out + r * ldo;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = om::rms_apply(xr[i], inv, w[i]);
  }
}

// ---- rope: one thread per (token, pair), the angle computed once for all heads ----
__global__ void rope_kernel(float* x, int64_t n_tokens, int64_t ld, int64_t n_heads, int64_t head_dim,
                            const int32_t* pos, int neox, int64_t n_rot, float freq_base, float freq_scale,
                            const float* freq_factors) {
  const int64_t half = n_rot / 2;
  for (int64_t idx = thread_index(); idx < n_tokens * half; idx += grid_stride()) {
    const int64_t t = idx / half, i = idx % half;
    const double theta = om::rope_theta(pos[t], freq_scale, om::rope_inv_freq(i, n_rot, freq_base, freq_factors));
    const double c = om::m_cos(theta), s = om::m_sin(theta);
    const int64_t a = om::rope_first(neox != 0, i), b = om::rope_second(neox != 0, i, half);
    for (int64_t h = 0; h < n_heads; ++h) {
      float* head = x + t * ld + h * head_dim;
      om::rope_rotate(head + a, head + b, c, s);
    }
  }
}

// ---- softmax: one block ----
__global__ void softmax_kernel(float* x, int64_t n) {
  __shared__ float redf[1024 / om::kWarp];
  __shared__ double redd[1024 / om::kWarp];
  float mx = om::neg_inf();
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) mx = om::max_keep(mx, x[i]);
  mx = block_max(mx, redf);
  if (mx == om::neg_inf()) {  // everything masked: uniform (the same branch in every thread)
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) x[i] = om::softmax_uniform(n);
    return;
  }
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum = om::dadd(sum, om::softmax_exp(x[i], mx));
  sum = block_sum(sum, redd);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) x[i] = om::softmax_out(om::softmax_exp(x[i], mx), sum);
}

// ---- attention ----
// Block per (token t, head h, chunk c) of the split-K plan: the keys of chunk c that t may see,
// in tiles of kAttnTile: (1) each warp scores keys (lanes: om::dot_lane, then a butterfly),
// (2) warp 0 scans the running max over the tile and writes each key's online coefficients
// (om::online_coeffs from the exact running max before it: the same values as the sequential
// om::online_update), (3) each thread applies them, in key order, to its elements of acc and to l.
// One chunk: the block writes acc / l. Several: it writes its partial {m, l, acc[head_dim]} and
// merge_kernel combines them in chunk order (om::merge_into).
struct AttnArgs {
  const float* q;
  int64_t ldq;
  uint32_t type;
  const uint8_t* k;
  const uint8_t* v;
  size_t stride;
  AttnShapeD s;
  float scale;
  om::SplitKPlan plan;
  float* out;
  int64_t ldo;
  float* partials;  // [n_tokens * n_heads * n_chunks, head_dim + 2] when n_chunks > 1
};

size_t attn_smem_bytes(int64_t head_dim) { return sizeof(float) * static_cast<size_t>(2 * head_dim + 3 * kAttnTile + 1); }

__global__ void attention_kernel(AttnArgs a) {
  extern __shared__ float smem[];
  const int64_t hd = a.s.head_dim;
  float* qs = smem;              // [hd]
  float* acc = qs + hd;          // [hd]
  float* sc = acc + hd;          // [tile] scores
  float* al = sc + kAttnTile;    // [tile] alpha
  float* pp = al + kAttnTile;    // [tile] p
  float* msh = pp + kAttnTile;   // [1] running max after the tile
  const int tid = threadIdx.x, lane = tid % om::kWarp, warp = tid / om::kWarp;
  const int n_warps = blockDim.x / om::kWarp;
  const int64_t n_items = a.s.n_tokens * a.s.n_heads * a.plan.n_chunks;
  for (int64_t item = blockIdx.x; item < n_items; item += gridDim.x) {
    const int64_t c = item % a.plan.n_chunks, th = item / a.plan.n_chunks;
    const int64_t h = th % a.s.n_heads, t = th / a.s.n_heads;
    const int64_t elem0 = om::kv_head_of(h, a.s.n_heads, a.s.n_kv_heads) * hd;
    const int64_t lo = om::chunk_begin(a.plan, c);
    int64_t hi = om::chunk_end(a.plan, c, a.s.n_kv);
    const int64_t last = om::last_visible_row(a.s.n_kv, a.s.n_tokens, t);
    if (hi > last + 1) hi = last + 1;
    const float* qrow = a.q + t * a.ldq + h * hd;
    for (int64_t i = tid; i < hd; i += blockDim.x) {
      qs[i] = qrow[i];
      acc[i] = 0.0f;
    }
    float m = om::neg_inf(), l = 0.0f;
    __syncthreads();
    for (int64_t base = lo; base < hi; base += kAttnTile) {
      const int n = static_cast<int>(hi - base < kAttnTile ? hi - base : kAttnTile);
      for (int jj = warp; jj < n; jj += n_warps) {  // (1) uniform per warp
        float part = om::dot_lane(qs, a.type, a.k + static_cast<size_t>(base + jj) * a.stride, elem0, hd, lane);
        for (int off = om::kWarp / 2; off > 0; off /= 2) part = hd_add(part, __shfl_xor_sync(kFull, part, off));
        if (lane == 0) sc[jj] = om::score(part, a.scale);
      }
      __syncthreads();
      if (warp == 0) {  // (2)
        float carry = m;
        for (int b0 = 0; b0 < n; b0 += om::kWarp) {
          const int j = b0 + lane;
          const float sj = j < n ? sc[j] : om::neg_inf();
          float run = sj;  // inclusive running max within these 32 keys
          for (int off = 1; off < om::kWarp; off *= 2) {
            const float o = __shfl_up_sync(kFull, run, off);
            if (lane >= off) run = om::max_keep(o, run);
          }
          float before = __shfl_up_sync(kFull, run, 1);
          if (lane == 0) before = om::neg_inf();
          if (j < n) {
            const om::OnlineCoeffs k = om::online_coeffs(om::max_keep(carry, before), sj);
            al[j] = k.alpha;
            pp[j] = k.p;
          }
          carry = om::max_keep(carry, __shfl_sync(kFull, run, om::kWarp - 1));
        }
        if (lane == 0) *msh = carry;
      }
      __syncthreads();
      m = *msh;
      for (int64_t i = tid; i < hd; i += blockDim.x) {  // (3)
        float x = acc[i];
        for (int jj = 0; jj < n; ++jj)
          x = om::acc_step(x, al[jj], pp[jj], om::kv_element(a.type, a.v + static_cast<size_t>(base + jj) * a.stride, elem0 + i));
        acc[i] = x;
      }
      for (int jj = 0; jj < n; ++jj) l = om::l_step(l, al[jj], pp[jj]);
      __syncthreads();  // sc/al/pp are rewritten by the next tile
    }
    if (a.plan.n_chunks == 1) {
      float* o = a.out + t * a.ldo + h * hd;
      for (int64_t i = tid; i < hd; i += blockDim.x) o[i] = om::attn_finalize(acc[i], l);
    } else {
      float* p = a.partials + item * (hd + 2);
      if (tid == 0) {
        p[0] = m;
        p[1] = l;
      }
      for (int64_t i = tid; i < hd; i += blockDim.x) p[2 + i] = acc[i];
    }
    __syncthreads();  // qs/acc are rewritten by the next item
  }
}

// Block per (token, head): the chunks' partials merged in chunk order, then acc / l.
__global__ void attention_merge_kernel(const float* partials, AttnShapeD s, int64_t n_chunks, float* out, int64_t ldo) {
  const int64_t hd = s.head_dim, width = hd + 2;
  for (int64_t th = blockIdx.x; th < s.n_tokens * s.n_heads; th += gridDim.x) {
    const int64_t h = th % s.n_heads, t = th / s.n_heads;
    const float* base = partials + th * n_chunks * width;
    float* o = out + t * ldo + h * hd;
    for (int64_t i = threadIdx.x; i < hd; i += blockDim.x) {
      float m = base[0], l = base[1], x = base[2 + i];
      for (int64_t c = 1; c < n_chunks; ++c) {
        const float* pc = base + c * width;
        const om::MergeCoeffs k = om::merge_coeffs(m, pc[0]);
        x = om::merge_value(x, k.ca, pc[2 + i], k.cb);
        l = om::merge_value(l, k.ca, pc[1], k.cb);
        m = k.m;
      }
      o[i] = om::attn_finalize(x, l);
    }
  }
}

bool attn_shape_ok(const AttnShapeD& s) {
  return s.n_tokens >= 0 && s.n_heads > 0 && s.n_kv_heads > 0 && s.head_dim > 0 && s.n_heads % s.n_kv_heads == 0 &&
         s.n_kv >= s.n_tokens;
}
om::SplitKPlan attn_plan(const AttnShapeD& s) { return om::split_k_plan(s.n_kv, s.n_tokens * s.n_heads); }

// ---- KV rows ----
__global__ void store_rows_kernel(const float* x, int64_t n, int64_t ldx, int64_t cols, uint32_t type, uint8_t* dst,
                                  size_t stride) {
  const int64_t per_row = type == om::kQ8_0 ? cols / om::kQ8Block : cols;  // blocks or elements
  for (int64_t idx = thread_index(); idx < n * per_row; idx += grid_stride()) {
    const int64_t t = idx / per_row, e = idx % per_row;
    uint8_t* row = dst + static_cast<size_t>(t) * stride;
    const float* xr = x + t * ldx;
    if (type == om::kQ8_0) om::q8_0_quantize_block(xr + e * om::kQ8Block, row + e * om::kQ8BlockBytes);
    else if (type == om::kF16) om::store_u16(row + 2 * e, hd_f32_to_f16(xr[e]));
    else reinterpret_cast<float*>(row)[e] = xr[e];
  }
}

__global__ void load_rows_kernel(const uint8_t* src, size_t stride, int64_t n, int64_t cols, uint32_t type, float* dst,
                                 int64_t ldd) {
  for (int64_t idx = thread_index(); idx < n * cols; idx += grid_stride()) {
    const int64_t t = idx / cols, e = idx % cols;
    dst[t * ldd + e] = om::kv_element(type, src + static_cast<size_t>(t) * stride, e);
  }
}

// ---- elementwise ----
__global__ void add_bias_kernel(float* x, int64_t n_rows, int64_t ldx, const float* bias, int64_t dim) {
  for (int64_t idx = thread_index(); idx < n_rows * dim; idx += grid_stride()) {
    const int64_t t = idx / dim, i = idx % dim;
    x[t * ldx + i] = om::add(x[t * ldx + i], bias[i]);
  }
}
__global__ void silu_mul_kernel(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) out[i] = om::silu_mul(gate[i], up[i]);
}
__global__ void add_kernel(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) out[i] = om::add(a[i], b[i]);
}
__global__ void rank_sum_kernel(const float* parts, int n_parts, size_t n, float* out) {
  for (int64_t i = thread_index(); i < static_cast<int64_t>(n); i += grid_stride())
    out[i] = om::rank_order_element(parts, n_parts, n, static_cast<size_t>(i));
}

}  // namespace

cudaError_t rmsnorm(const float* x, int64_t ldx, const float* weight, int64_t n_rows, int64_t dim, float eps,
                    float* out, int64_t ldo, cudaStream_t st) {
  if (n_rows < 0 || dim <= 0 || ldx < dim || ldo < dim) return cudaErrorInvalidValue;
  if (n_rows == 0) return cudaSuccess;
  rmsnorm_kernel<<<grid_items(n_rows), kThreads, 0, st>>>(x, ldx, weight, n_rows, dim, eps, out, ldo);
  return cudaGetLastError();
}

cudaError_t rope(float* x, int64_t n_tokens, int64_t ld_token, int64_t n_heads, int64_t head_dim, const int32_t* pos,
                 int neox, int64_t n_rot, float freq_base, float freq_scale, const float* freq_factors,
                 cudaStream_t st) {
  if (n_rot <= 0 || n_rot % 2 != 0 || n_rot > head_dim) return cudaErrorInvalidValue;
  if (n_tokens < 0 || n_heads < 0 || ld_token < n_heads * head_dim) return cudaErrorInvalidValue;
  if (n_tokens == 0 || n_heads == 0) return cudaSuccess;
  rope_kernel<<<grid_for(n_tokens * (n_rot / 2), kThreads), kThreads, 0, st>>>(
      x, n_tokens, ld_token, n_heads, head_dim, pos, neox, n_rot, freq_base, freq_scale, freq_factors);
  return cudaGetLastError();
}

cudaError_t softmax(float* x, int64_t n, cudaStream_t st) {
  if (n <= 0) return cudaSuccess;
  softmax_kernel<<<1, 1024, 0, st>>>(x, n);
  return cudaGetLastError();
}

size_t attention_scratch_bytes(const AttnShapeD& s) {
  if (!attn_shape_ok(s) || s.n_tokens == 0) return 0;
  const om::SplitKPlan p = attn_plan(s);
  if (p.n_chunks <= 1) return 0;
  return sizeof(float) * static_cast<size_t>(s.n_tokens * s.n_heads * p.n_chunks * (s.head_dim + 2));
}

cudaError_t attention(const float* q, int64_t ldq, uint32_t kv_type, const void* k, const void* v,
                      size_t kv_row_stride, const AttnShapeD& s, float scale, float* out, int64_t ldo, void* scratch,
                      cudaStream_t st) {
  if (!attn_shape_ok(s)) return cudaErrorInvalidValue;
  const int64_t qd = s.n_heads * s.head_dim, kv_dim = s.n_kv_heads * s.head_dim;
  if (ldq < qd || ldo < qd) return cudaErrorInvalidValue;
  if (!kv_rows_ok(kv_type, k, kv_row_stride, kv_dim) || !kv_rows_ok(kv_type, v, kv_row_stride, kv_dim))
    return cudaErrorInvalidValue;
  const size_t smem = attn_smem_bytes(s.head_dim);
  if (smem > 48 * 1024) return cudaErrorInvalidValue;  // head_dim beyond ~5900
  if (s.n_tokens == 0) return cudaSuccess;
  const om::SplitKPlan plan = attn_plan(s);
  if (plan.n_chunks > 1 && (scratch == nullptr || !aligned(scratch, 4))) return cudaErrorInvalidValue;
  const AttnArgs a{q,     ldq,  kv_type, static_cast<const uint8_t*>(k), static_cast<const uint8_t*>(v), kv_row_stride, s,
                   scale, plan, out,     ldo,                            static_cast<float*>(scratch)};
  attention_kernel<<<grid_items(s.n_tokens * s.n_heads * plan.n_chunks), kAttnThreads, smem, st>>>(a);
  if (plan.n_chunks > 1) {
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    attention_merge_kernel<<<grid_items(s.n_tokens * s.n_heads), kAttnThreads, 0, st>>>(
        static_cast<const float*>(scratch), s, plan.n_chunks, out, ldo);
  }
  return cudaGetLastError();
}

cudaError_t store_rows(const float* x, int64_t n, int64_t ldx, int64_t cols, uint32_t type, void* dst,
                       size_t dst_stride, cudaStream_t st) {
  if (n < 0 || ldx < cols || !kv_rows_ok(type, dst, dst_stride, cols)) return cudaErrorInvalidValue;
  if (n == 0 || cols == 0) return cudaSuccess;
  const int64_t per_row = type == om::kQ8_0 ? cols / om::kQ8Block : cols;
  store_rows_kernel<<<grid_for(n * per_row, kThreads), kThreads, 0, st>>>(x, n, ldx, cols, type,
                                                                           static_cast<uint8_t*>(dst), dst_stride);
  return cudaGetLastError();
}

cudaError_t load_rows(const void* src, size_t src_stride, int64_t n, int64_t cols, uint32_t type, float* dst,
                      int64_t ldd, cudaStream_t st) {
  if (n < 0 || ldd < cols || !kv_rows_ok(type, src, src_stride, cols)) return cudaErrorInvalidValue;
  if (n == 0 || cols == 0) return cudaSuccess;
  load_rows_kernel<<<grid_for(n * cols, kThreads), kThreads, 0, st>>>(static_cast<const uint8_t*>(src), src_stride, n,
                                                                      cols, type, dst, ldd);
  return cudaGetLastError();
}

cudaError_t add_bias(float* x, int64_t n_rows, int64_t ldx, const float* bias, int64_t dim, cudaStream_t st) {
  if (n_rows < 0 || dim < 0 || ldx < dim) return cudaErrorInvalidValue;
  if (n_rows == 0 || dim == 0) return cudaSuccess;
  add_bias_kernel<<<grid_for(n_rows * dim, kThreads), kThreads, 0, st>>>(x, n_rows, ldx, bias, dim);
  return cudaGetLastError();
}

cudaError_t silu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t st) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  silu_mul_kernel<<<grid_for(n, kThreads), kThreads, 0, st>>>(gate, up, out, n);
  return cudaGetLastError();
}

cudaError_t add(const float* a, const float* b, float* out, int64_t n, cudaStream_t st) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  add_kernel<<<grid_for(n, kThreads), kThreads, 0, st>>>(a, b, out, n);
  return cudaGetLastError();
}

cudaError_t sum_in_rank_order(const float* parts, int n_parts, size_t n, float* out, cudaStream_t st) {
  if (n_parts <= 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  rank_sum_kernel<<<grid_for(static_cast<int64_t>(n), kThreads), kThreads, 0, st>>>(parts, n_parts, n, out);
  return cudaGetLastError();
}

}  // namespace herd::cuda
