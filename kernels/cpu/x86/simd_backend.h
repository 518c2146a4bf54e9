// The x86 SIMD CPU backend: KernelTableBackend (simd_driver.h: matmul with its exact and 8-bit
// paths, attention, rmsnorm, silu_mul, add, the thread split) over one x86 kernel table
// (x86_kernels.h: AVX2 or AVX-512), plus rope: the reference's double-precision formula with each
// token's cos/sin computed once for all its heads (the same bits). get_rows and softmax are
// inherited from the reference (not on the hot path).
#pragma once

#include "kernels/cpu/simd_driver.h"
#include "kernels/cpu/x86/x86_kernels.h"

namespace herd {

class SimdBackend : public KernelTableBackend {
 public:
  SimdBackend(const x86::Kernels& kernels, bool exact) : KernelTableBackend(kernels, exact, "cpu-simd") {}

  void set_exact(bool exact) { exact_ = exact; }

  void rope(float* x, int64_t n_tokens, int64_t ld_token, int64_t n_heads, int64_t head_dim, const int32_t* pos,
            const RopeParams& p) override;
};

}  // namespace herd
