// CUDA kernels for matmul (8-bit activations x quantized weights; F32/F16/BF16 weights x f32),
// activation quantization and get_rows. Each kernel is a thin loop over kernels/cuda/block_math.h:
// the math (dequant_block, quantize_act_block32, dot_unit_q8, the float row dot) and the index
// mappings are HERD_HD functions the CPU test (tests/kernels/test_cuda_block_math.cpp) checks,
// including that a decode lane, the warp butterfly, a dp4a tile thread and an mma warp perform
// exactly the operations it emulates. Compiles for sm_80/86/89/90; never run on a GPU here.
//
// Only the quantized matmul kernels are templated on the weight type (3 x 10 instantiations), so
// the per-unit switch folds away in the hot loops; the rest take the type at run time.
#include "kernels/cuda/matmul.h"

#include "kernels/cuda/block_math.h"

namespace herd::cuda {
namespace {

constexpr int64_t kMaxGridY = 65535;
constexpr int64_t kMaxGridX = 2147483647;

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// ---- activation quantization: one thread per scale group (32 or 256 values) ----

__global__ void __launch_bounds__(kElemThreads)
    quantize_act_kernel(const float* x, int64_t n_tokens, int64_t ldx, int64_t cols, int mode, DeviceQ8Act a) {
  const int64_t total = n_tokens * act_groups_per_row(cols, mode);
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    int64_t t, b0, b1;
    act_group_of(i, cols, mode, &t, &b0, &b1);
    const float* xt = x + t * ldx;
    float amax = 0.0f;
    for (int64_t b = b0; b < b1; ++b) {
      const float m = amax_block32(xt + 32 * b);
      amax = m > amax ? m : amax;
    }
    for (int64_t b = b0; b < b1; ++b)
      quantize_act_block32(xt + 32 * b, amax, mode, a.q + t * a.ldq + 32 * b, a.d + t * a.ldd + b, a.s + t * a.lds + 2 * b);
  }
}

// ---- decode: one warp per output row, up to kDecodeTokens tokens (grid.y slices) ----
// Lane l adds units l, l + 32, ... in order (dot_row_q8_lanes' sequence for each token), then the
// butterfly (warp_tree_sum's order).

__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off >= 1; off >>= 1) v = hd_add(v, __shfl_xor_sync(0xFFFFFFFFu, v, off));
  return v;
}

template <uint32_t T>
__global__ void __launch_bounds__(kDecodeThreads)
    decode_q8_kernel(const uint8_t* w, size_t row_stride, int64_t rows, int64_t cols, DeviceQ8Act a, int64_t n_tokens,
                     float* y, int64_t ldy) {
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t r = decode_row(blockIdx.x, warp);
  if (r >= rows) return;  // the whole warp: the shuffles below see all 32 lanes
  const int64_t t0 = decode_token0(blockIdx.y);
  const int nt = decode_tokens(blockIdx.y, n_tokens);
  const uint8_t* wr = w + r * row_stride;
  const int upb = units_per_block(T), bb = block_bytes(T);
  float acc[kDecodeTokens];
#pragma unroll
  for (int j = 0; j < kDecodeTokens; ++j) acc[j] = 0.0f;
  for (int64_t u = lane; u < cols / 32; u += 32) {
    const uint8_t* blk = wr + (u / upb) * bb;
    const int sub = static_cast<int>(u % upb);
#pragma unroll
    for (int j = 0; j < kDecodeTokens; ++j)
      if (j < nt) {
        const int64_t t = t0 + j;
        acc[j] = hd_add(acc[j], dot_unit_q8(T, blk, sub, a.q + t * a.ldq + 32 * u, a.d[t * a.ldd + u], a.s + t * a.lds + 2 * u));
      }
  }
#pragma unroll
  for (int j = 0; j < kDecodeTokens; ++j)
    if (j < nt) {  // nt is the same for the whole warp
      const float v = warp_sum(acc[j]);
      if (lane == 0) y[(t0 + j) * ldy + r] = v;
    }
}

// ---- prefill: kTileRows x kTileTokens tiles, activations staged kTileUnits units at a time ----
// A thread adds units 0, 1, ... of its row in order for each of its tokens: dot_row_q8's sequence.

struct Stage {
  int q[kTileTokens][kStageQWords];
  float d[kTileTokens][kStageD];
  int16_t s[kTileTokens][kStageS];
};

// Units [u0, u0 + kTileUnits) of the tile's tokens into shared memory (zeros past the ends).
__device__ __forceinline__ void stage_chunk(Stage& st, const DeviceQ8Act& a, int64_t tok0, int64_t n_tokens, int64_t u0,
                                            int64_t nu) {
  const int th = static_cast<int>(threadIdx.x);
  for (int e = th; e < kTileTokens * kStageQWords; e += kTileThreads) {
    const int tt = stage_token(e, kStageQWords), wd = stage_slot(e, kStageQWords);
    const int64_t tok = tok0 + tt, u = u0 + wd / 8;
    st.q[tt][wd] = tok < n_tokens && u < nu ? act4(a.q + tok * a.ldq + 32 * u + 4 * (wd % 8)) : 0;
  }
  for (int e = th; e < kTileTokens * kStageD; e += kTileThreads) {
    const int tt = stage_token(e, kStageD), k = stage_slot(e, kStageD);
    const int64_t tok = tok0 + tt, u = u0 + k;
    st.d[tt][k] = tok < n_tokens && u < nu ? a.d[tok * a.ldd + u] : 0.0f;
  }
  for (int e = th; e < kTileTokens * kStageS; e += kTileThreads) {
    const int tt = stage_token(e, kStageS), k = stage_slot(e, kStageS);
    const int64_t tok = tok0 + tt, h = 2 * u0 + k;
    st.s[tt][k] = tok < n_tokens && h < 2 * nu ? a.s[tok * a.lds + h] : static_cast<int16_t>(0);
  }
}

template <uint32_t T>
__global__ void __launch_bounds__(kTileThreads)
    tile_q8_kernel(const uint8_t* w, size_t row_stride, int64_t rows, int64_t cols, DeviceQ8Act a, int64_t n_tokens,
                   float* y, int64_t ldy) {
  __shared__ Stage st;
  const int th = static_cast<int>(threadIdx.x);
  const int64_t tok0 = tile_tok0(blockIdx.y);
  const int64_t r = tile_row0(blockIdx.x) + tile_row(th);
  const bool row_ok = r < rows;
  const uint8_t* wr = w + (row_ok ? r : 0) * row_stride;
  const int64_t nu = cols / 32;
  const int upb = units_per_block(T), bb = block_bytes(T);
  float acc[kTileTokensPerThread];
#pragma unroll
  for (int j = 0; j < kTileTokensPerThread; ++j) acc[j] = 0.0f;
  for (int64_t u0 = 0; u0 < nu; u0 += kTileUnits) {
    __syncthreads();  // the previous chunk's reads are done
    stage_chunk(st, a, tok0, n_tokens, u0, nu);
    __syncthreads();
    if (row_ok) {
      const int64_t nc = nu - u0 < kTileUnits ? nu - u0 : kTileUnits;
      for (int k = 0; k < nc; ++k) {
        const int64_t u = u0 + k;
        const uint8_t* blk = wr + (u / upb) * bb;
        const int sub = static_cast<int>(u % upb);
#pragma unroll
        for (int j = 0; j < kTileTokensPerThread; ++j) {
          const int tt = tile_token(th, j);
          acc[j] = hd_add(acc[j], dot_unit_q8(T, blk, sub, reinterpret_cast<const int8_t*>(&st.q[tt][8 * k]), st.d[tt][k],
                                              &st.s[tt][2 * k]));
        }
      }
    }
  }
  if (!row_ok) return;
#pragma unroll
  for (int j = 0; j < kTileTokensPerThread; ++j) {
    const int64_t tok = tok0 + tile_token(th, j);
    if (tok < n_tokens) y[tok * ldy + r] = acc[j];
  }
}

// ---- prefill on tensor cores (sm_80+): the same tiles and staging, mma.sync for the integer dots ----
// (block_math.h: the warp/lane mapping and the fragment layout it follows.)

__device__ __forceinline__ void mma_s8_m16n8k16(int (&c)[4], int a0, int a1, int b0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%7,%7,%7,%7};"
               : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
               : "r"(a0), "r"(a1), "r"(b0), "r"(0));
#else
  c[0] = c[1] = c[2] = c[3] = 0;
  __trap();  // the launcher never picks this kernel below sm_80
#endif
}

template <uint32_t T>
__global__ void __launch_bounds__(kTileThreads)
    tile_mma_kernel(const uint8_t* w, size_t row_stride, int64_t rows, int64_t cols, DeviceQ8Act a, int64_t n_tokens,
                    float* y, int64_t ldy) {
  __shared__ Stage st;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t row0 = tile_row0(blockIdx.x), tok0 = tile_tok0(blockIdx.y);
  // Rows past the end read row 0 (every lane must take part in the mma); their results are dropped.
  const uint8_t* wa[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int64_t r = row0 + mma_a_row(warp, lane, i);
    wa[i] = w + (r < rows ? r : 0) * row_stride;
  }
  const int64_t nu = cols / 32;
  const int upb = units_per_block(T), bb = block_bytes(T);
  float acc[2][4];
#pragma unroll
  for (int nt = 0; nt < 2; ++nt)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[nt][c] = 0.0f;
  for (int64_t u0 = 0; u0 < nu; u0 += kTileUnits) {
    __syncthreads();
    stage_chunk(st, a, tok0, n_tokens, u0, nu);
    __syncthreads();
    const int64_t nc = nu - u0 < kTileUnits ? nu - u0 : kTileUnits;
    for (int k = 0; k < nc; ++k) {
      const int64_t u = u0 + k;
      const int64_t off = (u / upb) * bb;
      const int sub = static_cast<int>(u % upb);
      int dot[2][2][4];  // [n-tile][half][c register]
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int a0 = unit_word(T, wa[0] + off, sub, mma_word(lane, half));
        const int a1 = unit_word(T, wa[1] + off, sub, mma_word(lane, half));
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
          mma_s8_m16n8k16(dot[nt][half], a0, a1, st.q[mma_b_token(warp, lane, nt)][8 * k + mma_word(lane, half)]);
      }
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int tt = mma_c_token(warp, lane, nt, c);
          acc[nt][c] = hd_add(acc[nt][c], unit_scale(T, wa[c >> 1] + off, sub, dot[nt][0][c], dot[nt][1][c], st.d[tt][k],
                                                     &st.s[tt][2 * k]));
        }
    }
  }
#pragma unroll
  for (int nt = 0; nt < 2; ++nt)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t r = row0 + mma_c_row(warp, lane, c), tok = tok0 + mma_c_token(warp, lane, nt, c);
      if (r < rows && tok < n_tokens) y[tok * ldy + r] = acc[nt][c];
    }
}

// ---- float family: one warp per row, lanes over columns (dot_row_f_lanes' sequence) ----

template <uint32_t T>
__global__ void __launch_bounds__(kDecodeThreads)
    decode_f_kernel(const uint8_t* w, size_t row_stride, int64_t rows, int64_t cols, const float* x, int64_t ldx,
                    int64_t n_tokens, float* y, int64_t ldy) {
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t r = decode_row(blockIdx.x, warp);
  if (r >= rows) return;
  const int64_t t0 = decode_token0(blockIdx.y);
  const int nt = decode_tokens(blockIdx.y, n_tokens);
  const uint8_t* wr = w + r * row_stride;
  float acc[kDecodeTokens];
#pragma unroll
  for (int j = 0; j < kDecodeTokens; ++j) acc[j] = 0.0f;
  for (int64_t c = lane; c < cols; c += 32) {
    const float wv = float_weight(T, wr, c);
#pragma unroll
    for (int j = 0; j < kDecodeTokens; ++j)
      if (j < nt) acc[j] = hd_add(acc[j], hd_mul(wv, round_activation(T, x[(t0 + j) * ldx + c])));
  }
#pragma unroll
  for (int j = 0; j < kDecodeTokens; ++j)
    if (j < nt) {
      const float v = warp_sum(acc[j]);
      if (lane == 0) y[(t0 + j) * ldy + r] = v;
    }
}

// ---- get_rows: one thread per (row, block) ----

__global__ void __launch_bounds__(kElemThreads)
    get_rows_kernel(uint32_t type, const uint8_t* w, size_t row_stride, int64_t cols, const int32_t* ids, int64_t n,
                    float* out, int64_t ldo, int64_t rows) {
  const int bv = block_values(type), bb = block_bytes(type);
  const int64_t per_row = cols / bv, total = n * per_row;
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t k = i / per_row, b = i % per_row;
    const int64_t id = ids[k];
    float* o = out + k * ldo + b * bv;
    if (id < 0 || (rows >= 0 && id >= rows)) {
      for (int v = 0; v < bv; ++v) o[v] = __int_as_float(0x7FC00000);
      continue;
    }
    dequant_block(type, w + id * row_stride + b * bb, o);
  }
}

// ---- launch helpers ----

bool aligned4(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 3u) == 0; }

bool q8_args_ok(uint32_t type, const uint8_t* w, int64_t rows, int64_t cols, const DeviceQ8Act& a, int64_t n_tokens,
                const float* y, int64_t ldy) {
  if (!is_q8_type(type) || rows < 0 || cols < 0 || n_tokens < 0 || cols % block_values(type) != 0) return false;
  if (rows == 0 || cols == 0 || n_tokens == 0) return true;
  return w && y && a.q && a.d && a.s && ldy >= rows && a.ldq >= cols && a.ldq % 4 == 0 && a.ldd >= cols / 32 &&
         a.lds >= cols / 16 && aligned4(a.q);
}

// Whether the current device runs mma.sync m16n8k16 .s8 (compute capability 8.0 or newer).
bool device_has_int8_mma() {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return major >= 8;
}

template <uint32_t T>
cudaError_t launch_q8(const uint8_t* w, size_t row_stride, int64_t rows, int64_t cols, const DeviceQ8Act& a,
                      int64_t n_tokens, float* y, int64_t ldy, cudaStream_t st, bool mma) {
  if (q8_uses_decode(n_tokens)) {
    const int64_t gx = decode_grid_x(rows);
    if (gx > kMaxGridX) return cudaErrorInvalidValue;
    decode_q8_kernel<T><<<dim3(static_cast<unsigned>(gx), 1), kDecodeThreads, 0, st>>>(w, row_stride, rows, cols, a,
                                                                                       n_tokens, y, ldy);
    return cudaGetLastError();
  }
  const int64_t gx = tile_grid_x(rows);
  if (gx > kMaxGridX) return cudaErrorInvalidValue;
  // grid.y is at most 65535 tiles of tokens: larger batches in several launches.
  const int64_t chunk = kMaxGridY * kTileTokens;
  for (int64_t t0 = 0; t0 < n_tokens; t0 += chunk) {
    const int64_t nt = n_tokens - t0 < chunk ? n_tokens - t0 : chunk;
    DeviceQ8Act at = a;
    at.q += t0 * a.ldq;
    at.d += t0 * a.ldd;
    at.s += t0 * a.lds;
    const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(tile_grid_y(nt)));
    if (mma)
      tile_mma_kernel<T><<<grid, kTileThreads, 0, st>>>(w, row_stride, rows, cols, at, nt, y + t0 * ldy, ldy);
    else
      tile_q8_kernel<T><<<grid, kTileThreads, 0, st>>>(w, row_stride, rows, cols, at, nt, y + t0 * ldy, ldy);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

template <uint32_t T>
cudaError_t launch_f(const uint8_t* w, size_t row_stride, int64_t rows, int64_t cols, const float* x, int64_t ldx,
                     int64_t n_tokens, float* y, int64_t ldy, cudaStream_t st) {
  const int64_t gx = decode_grid_x(rows);
  if (gx > kMaxGridX) return cudaErrorInvalidValue;
  const int64_t chunk = kMaxGridY * kDecodeTokens;
  for (int64_t t0 = 0; t0 < n_tokens; t0 += chunk) {
    const int64_t nt = n_tokens - t0 < chunk ? n_tokens - t0 : chunk;
    decode_f_kernel<T><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(decode_grid_y(nt))), kDecodeThreads, 0, st>>>(
        w, row_stride, rows, cols, x + t0 * ldx, ldx, nt, y + t0 * ldy, ldy);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace

size_t q8_act_bytes(int64_t n_tokens, int64_t cols) {
  uint64_t off_d, off_s;
  return static_cast<size_t>(q8_act_layout(n_tokens, cols, &off_d, &off_s));
}

DeviceQ8Act q8_act_view(void* base, int64_t n_tokens, int64_t cols) {
  uint64_t off_d, off_s;
  q8_act_layout(n_tokens, cols, &off_d, &off_s);
  auto* p = static_cast<uint8_t*>(base);
  return DeviceQ8Act{reinterpret_cast<int8_t*>(p), reinterpret_cast<float*>(p + off_d),
                     reinterpret_cast<int16_t*>(p + off_s), cols, cols / 32, cols / 16};
}

bool has_q8_kernel(uint32_t type) { return is_q8_type(type); }

cudaError_t quantize_act(const float* x, int64_t n_tokens, int64_t ldx, int64_t cols, int scale_mode,
                         const DeviceQ8Act& a, cudaStream_t st) {
  if (n_tokens < 0 || cols < 0 || cols % 32 != 0 ||
      (scale_mode != kActF32x32 && scale_mode != kActF16x32 && scale_mode != kActF32x256))
    return cudaErrorInvalidValue;
  if (n_tokens == 0 || cols == 0) return cudaSuccess;
  if (!x || !a.q || !a.d || !a.s || ldx < cols || a.ldq < cols || a.ldd < cols / 32 || a.lds < cols / 16)
    return cudaErrorInvalidValue;
  const int64_t total = n_tokens * act_groups_per_row(cols, scale_mode);
  quantize_act_kernel<<<static_cast<unsigned>(elem_grid(total)), kElemThreads, 0, st>>>(x, n_tokens, ldx, cols,
                                                                                       scale_mode, a);
  return cudaGetLastError();
}

cudaError_t matmul_q8(uint32_t type, const uint8_t* w, size_t row_stride, int64_t rows, int64_t cols,
                      const DeviceQ8Act& a, int64_t n_tokens, float* y, int64_t ldy, cudaStream_t st, int prefill) {
  if (!q8_args_ok(type, w, rows, cols, a, n_tokens, y, ldy) || (prefill != kQ8PrefillDp4a && prefill != kQ8PrefillMma))
    return cudaErrorInvalidValue;
  if (rows == 0 || n_tokens == 0) return cudaSuccess;
  if (cols == 0) return cudaMemset2DAsync(y, static_cast<size_t>(ldy) * sizeof(float), 0, static_cast<size_t>(rows) * sizeof(float),
                                         static_cast<size_t>(n_tokens), st);
  const bool mma = prefill == kQ8PrefillMma && !q8_uses_decode(n_tokens) && device_has_int8_mma();
  switch (type) {
    case tid::kQ4_0: return launch_q8<tid::kQ4_0>(w, row_stride, rows, cols, a, n_tokens, y, ldy, st, mma);
    case tid::kQ4_1: return launch_q8<tid::kQ4_1>(w, row_stride, rows, cols, a, n_tokens, y, ldy, st, mma);
    case tid::kQ5_0: return launch_q8<tid::kQ5_0>(w, row_stride, rows, cols, a, n_tokens, y, ldy, st, mma);
    case tid::kQ5_1: return launch_q8<tid::kQ5_1>(w, row_stride, rows, cols, a, n_tokens, y, ldy, st, mma);
    case tid::kQ8_0: return launch_q8<tid::kQ8_0>(w, row_stride, rows, cols, a, n_tokens, y, ldy, st, mma);
    case tid::kQ2_K: return launch_q8<tid::kQ2_K>(w, row_stride, rows, cols, a, n_tokens, y, ldy, st, mma);
    case tid::kQ3_K: return launch_q8<tid::kQ3_K>(w, row_stride, rows, cols, a, n_tokens, y, ldy, st, mma);
    case tid::kQ4_K: return launch_q8<tid::kQ4_K>(w, row_stride, rows, cols, a, n_tokens, y, ldy, st, mma);
    case tid::kQ5_K: return launch_q8<tid::kQ5_K>(w, row_stride, rows, cols, a, n_tokens, y, ldy, st, mma);
    case tid::kQ6_K: return launch_q8<tid::kQ6_K>(w, row_stride, rows, cols, a, n_tokens, y, ldy, st, mma);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t matmul_f(uint32_t type, const uint8_t* w, size_t row_stride, int64_t rows, int64_t cols, const float* x,
                     int64_t ldx, int64_t n_tokens, float* y, int64_t ldy, cudaStream_t st) {
  if (!is_float_type(type) || rows < 0 || cols < 0 || n_tokens < 0) return cudaErrorInvalidValue;
  if (rows == 0 || n_tokens == 0) return cudaSuccess;
  if (!w || !x || !y || ldx < cols || ldy < rows) return cudaErrorInvalidValue;
  switch (type) {
    case tid::kF32: return launch_f<tid::kF32>(w, row_stride, rows, cols, x, ldx, n_tokens, y, ldy, st);
    case tid::kF16: return launch_f<tid::kF16>(w, row_stride, rows, cols, x, ldx, n_tokens, y, ldy, st);
    case tid::kBF16: return launch_f<tid::kBF16>(w, row_stride, rows, cols, x, ldx, n_tokens, y, ldy, st);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t get_rows(uint32_t type, const uint8_t* w, size_t row_stride, int64_t cols, const int32_t* ids, int64_t n,
                     float* out, int64_t ldo, cudaStream_t st, int64_t rows) {
  const int bv = block_values(type);
  if (bv == 0 || cols < 0 || n < 0 || cols % bv != 0) return cudaErrorInvalidValue;
  if (n == 0 || cols == 0) return cudaSuccess;
  if (!w || !ids || !out || ldo < cols) return cudaErrorInvalidValue;
  const int64_t total = n * (cols / bv);
  get_rows_kernel<<<static_cast<unsigned>(elem_grid(total)), kElemThreads, 0, st>>>(type, w, row_stride, cols, ids, n,
                                                                                   out, ldo, rows);
  return cudaGetLastError();
}

}  // namespace herd::cuda
