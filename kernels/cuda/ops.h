// The CUDA backend's activation ops: everything of kernels/backend.h but matmul and get_rows,
// as launchers (kernels/cuda/ops.cu). Every pointer is a DEVICE pointer; each call enqueues its
// kernels on `st`, never synchronises, never throws, and returns cudaGetLastError() after the
// launch (cudaErrorInvalidValue, with nothing launched, for a bad shape, type or alignment;
// cudaSuccess, with nothing launched, for an empty op). The results are those of the reference
// backend (kernels/cpu/reference_backend.cpp) computed by the functions of ops_math.h, which the
// CPU test checks; the kernels themselves compile, and have not been run on a GPU here.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace herd::cuda {

struct AttnShapeD {
  int64_t n_tokens, n_heads, n_kv_heads, head_dim, n_kv;
};

// out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight. out may alias x.
cudaError_t rmsnorm(const float* x, int64_t ldx, const float* weight, int64_t n_rows, int64_t dim, float eps,
                    float* out, int64_t ldo, cudaStream_t st);

// In place; neox != 0: pairs (i, i + n_rot/2), else (2i, 2i+1). pos: device [n_tokens].
cudaError_t rope(float* x, int64_t n_tokens, int64_t ld_token, int64_t n_heads, int64_t head_dim, const int32_t* pos,
                 int neox, int64_t n_rot, float freq_base, float freq_scale, const float* freq_factors /*device or null*/,
                 cudaStream_t st);

// In place over n values (one thread block).
cudaError_t softmax(float* x, int64_t n, cudaStream_t st);

// Device bytes attention() needs at `scratch` for shape s (the split-K partials; 0 when the plan
// has one chunk, then scratch may be null).
size_t attention_scratch_bytes(const AttnShapeD& s);

// Causal attention (Backend::attention_rows): k, v rows of kv_type (F32, F16, Q8_0) read in their
// storage type, row r at k + r * kv_row_stride bytes; query t sees rows 0 .. n_kv - n_tokens + t.
cudaError_t attention(const float* q, int64_t ldq, uint32_t kv_type, const void* k, const void* v,
                      size_t kv_row_stride, const AttnShapeD& s, float scale, float* out, int64_t ldo, void* scratch,
                      cudaStream_t st);

// The KV cache write / read: rows of `cols` values as `type` (F32, F16, Q8_0), bit for bit
// Backend::store_rows / load_rows.
cudaError_t store_rows(const float* x, int64_t n, int64_t ldx, int64_t cols, uint32_t type, void* dst,
                       size_t dst_stride, cudaStream_t st);
cudaError_t load_rows(const void* src, size_t src_stride, int64_t n, int64_t cols, uint32_t type, float* dst,
                      int64_t ldd, cudaStream_t st);

cudaError_t add_bias(float* x, int64_t n_rows, int64_t ldx, const float* bias, int64_t dim, cudaStream_t st);
cudaError_t silu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t st);
cudaError_t add(const float* a, const float* b, float* out, int64_t n, cudaStream_t st);

// out[i] = ((p0[i] + p1[i]) + p2[i]) + ..., parts [n_parts, n] contiguous: the NCCL Comm's
// deterministic all-reduce (a gather, then this), bit for bit engine/comm.h rank_order_sum.
// out may alias parts (the first n values).
cudaError_t sum_in_rank_order(const float* parts, int n_parts, size_t n, float* out, cudaStream_t st);

}  // namespace herd::cuda
