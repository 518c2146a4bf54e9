// CUDA matmul, activation quantization and get_rows launchers (matmul.cu). All pointers are DEVICE
// pointers; every launcher enqueues on `st`, never synchronises or throws, and returns
// cudaErrorInvalidValue (launching nothing) for arguments it cannot run, cudaSuccess for an empty
// problem, else cudaGetLastError() after its launches. `type` is the raw DType (GGUF) id.
// The arithmetic is kernels/cuda/block_math.h's (HERD_HD, checked on the CPU by
// tests/kernels/test_cuda_block_math.cpp); these kernels compile for sm_80/86/89/90 but have not
// run on a GPU in this repository's tests.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace herd::cuda {

// 8-bit activations in device memory, laid out as simd::Q8Act (kernels/cpu/simd_table.h): per
// token row, q[ldq] levels, d[ldd] scales (one per 32 values), s[lds] Σq per 16 values.
struct DeviceQ8Act {
  int8_t* q;
  float* d;
  int16_t* s;
  int64_t ldq, ldd, lds;
};

// Bytes for q + d + s of n_tokens rows of cols values (each part 16-byte aligned).
size_t q8_act_bytes(int64_t n_tokens, int64_t cols);
// Carves a q8_act_bytes(n_tokens, cols) buffer at base (16-byte aligned): ldq = cols, ldd = cols / 32,
// lds = cols / 16.
DeviceQ8Act q8_act_view(void* base, int64_t n_tokens, int64_t cols);

// x [n_tokens, ldx] f32 -> a, with scale_mode a simd::ActScale (kernels/cpu/simd_driver.h's
// act_scale_mode(weight type) picks it, as on the CPU). cols % 32 == 0. Bit-exact with the CPU
// tables' quantize_act for finite inputs.
cudaError_t quantize_act(const float* x, int64_t n_tokens, int64_t ldx, int64_t cols, int scale_mode,
                         const DeviceQ8Act& a, cudaStream_t st);

// The prefill kernel of matmul_q8 (n_tokens > 8): both compute the same bits (dot_row_q8's).
enum Q8Prefill : int {
  kQ8PrefillDp4a = 0,  // 64-row x 32-token tiles, one thread per row x 8 tokens, __dp4a
  kQ8PrefillMma = 1,   // the same tiles on int8 tensor cores (mma.sync m16n8k16 s8), sm_80+ (else dp4a)
};

// y[t * ldy + r] = row r of w (rows x cols of `type`, rows row_stride bytes apart) · token t of the
// quantized activations, t < n_tokens. has_q8_kernel(type); cols a multiple of the block size (and
// of 32); a.q 4-byte aligned with ldq % 4 == 0. n_tokens <= 8: one warp per output row, lanes over
// the row's 32-value units, butterfly sum; larger: 64-row x 32-token tiles with the activations
// staged in shared memory 256 values at a time, the integer dots by `prefill` (an addition to the
// brief's signature, defaulted; dp4a by default until the mma path has run on a GPU).
cudaError_t matmul_q8(uint32_t type, const uint8_t* w, size_t row_stride, int64_t rows, int64_t cols,
                      const DeviceQ8Act& a, int64_t n_tokens, float* y, int64_t ldy, cudaStream_t st,
                      int prefill = kQ8PrefillDp4a);

// F32 / F16 / BF16 weights: y[t * ldy + r] = Σ_c w[r][c] · x'[t * ldx + c], x' = x rounded to the
// weight's type first (backend.h's definition), f32 products and sums; one warp per row for each
// group of 8 tokens. Other types: cudaErrorInvalidValue.
cudaError_t matmul_f(uint32_t type, const uint8_t* w, size_t row_stride, int64_t rows, int64_t cols,
                     const float* x, int64_t ldx, int64_t n_tokens, float* y, int64_t ldy, cudaStream_t st);

// out[k * ldo + c] = row ids[k] of w dequantized (bit-exact with dequantize_row), k < n; ids is a
// device array. `rows` (an addition to the brief's signature, defaulted): when >= 0, an id outside
// [0, rows) fills its output row with NaN (a kernel cannot throw; the caller should check ids on the
// host first). A negative id always gives NaN.
cudaError_t get_rows(uint32_t type, const uint8_t* w, size_t row_stride, int64_t cols, const int32_t* ids, int64_t n,
                     float* out, int64_t ldo, cudaStream_t st, int64_t rows = -1);

// Host: whether matmul_q8 runs this type (every quantized type; F32/F16/BF16 take matmul_f).
bool has_q8_kernel(uint32_t type);

}  // namespace herd::cuda
