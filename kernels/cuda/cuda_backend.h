// The CUDA backend: the Backend seam (kernels/backend.h) on one NVIDIA GPU. Built with HERD_CUDA.
//
// What lives where: every matmul weight of the stage is uploaded once, at load (prepare_matmul:
// one device allocation per stage, rows packed without their file stride); the small weight
// vectors (norms, biases, rope factors) are uploaded on first use (resident()); activations, the
// KV cache and scratch are device memory (alloc), so a stage's layers never leave the GPU. The
// Stage moves its input in and its output out (copy_in / copy_out). get_rows dequantizes the few
// embedding rows a batch needs on the host (the table stays in the file mapping) and moves them in.
//
// The kernels are kernels/cuda/matmul.h (quantized matvec on 8-bit activations with the CPU fast
// path's scales, float matmul, get_rows) and kernels/cuda/ops.h (rmsnorm, rope, split-K attention
// over F32/F16/Q8_0 KV rows, store/load rows, silu·mul, add); their per-block math is HERD_HD code
// the CPU tests check (tests/kernels/test_cuda_*). All work is queued on one stream in order;
// copy_out waits for it. Errors (a failed launch, an out-of-memory allocation) are exceptions
// naming the device and the op, as the CPU backends' are.
//
// Status: compiles for sm_80/86/89/90; it has not run on a GPU yet (test_cuda skips without one).
#pragma once

#include <memory>
#include <string>

#include "kernels/backend.h"

namespace herd {

struct CudaBackendOptions {
  int device = 0;  // cuda:N
};

// Throws std::runtime_error naming the device when it cannot be used (no driver, no such device).
std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& opts = {});

}  // namespace herd
