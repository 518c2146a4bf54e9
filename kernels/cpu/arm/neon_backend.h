// The Arm NEON CPU backend: the ReferenceBackend's op set with matmul, attention, rmsnorm,
// silu_mul and add routed through one kernel table (arm_kernels.h: baseline NEON, or dotprod).
// get_rows, rope and softmax are inherited from the reference (not on the hot path).
//
// Matmul has the same two paths as the x86 SimdBackend:
//   exact (CpuBackendOptions::exact): weights dequantized on the fly to f32 (bit-exact with
//     dequantize_row), vfmaq_f32 dots: differs from the reference only by f32 summation order.
//   fast (default): activations quantized once per call to 8-bit blocks of 32 with llama.cpp's
//     scales (f16 per 32 for the 32-value formats, one f32 per 256 for K-quants), integer dots
//     against the packed weights, for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K. F32/F16/BF16
//     always take the exact path (F16/BF16 with activations rounded to f16/bf16, per backend.h).
// Threads split output rows in tiles of 16; each y element is computed by one thread with a fixed
// instruction sequence, so any thread count gives the same bits (and the baseline and dotprod
// tables give the same bits as each other: their integer dots are exact and lane-identical).
#pragma once

#include <string>
#include <vector>

#include "kernels/cpu/arm/arm_kernels.h"
#include "kernels/cpu/reference_backend.h"

namespace herd {

class NeonBackend : public ReferenceBackend {
 public:
  NeonBackend(const arm::Kernels& kernels, bool exact) : k_(kernels), exact_(exact) {}

  std::string name() const override { return std::string("cpu-") + k_.name + (exact_ ? "-exact" : "-q8"); }
  bool exact() const { return exact_; }
  // True when matmul of this type uses 8-bit activations in the current mode.
  bool uses_q8(DType type, int64_t cols) const;

  void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y,
              int64_t ldy) override;
  void rmsnorm(const float* x, int64_t ldx, const float* weight, int64_t n_rows, int64_t dim, float eps, float* out,
               int64_t ldo) override;
  void attention(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv, const AttentionShape& s,
                 float scale, float* out, int64_t ldo) override;
  void silu_mul(const float* gate, const float* up, float* out, int64_t n) override;
  void add(const float* a, const float* b, float* out, int64_t n) override;

 private:
  void matmul_q8(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y, int64_t ldy);
  void matmul_exact(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y, int64_t ldy);

  const arm::Kernels& k_;
  bool exact_;
  // Scratch reused across calls (one matmul at a time per backend, like the thread pool).
  std::vector<int8_t> act_q_;     // [n_tokens, cols]
  std::vector<float> act_d_;      // [n_tokens, cols / 32]
  std::vector<int16_t> act_s_;    // [n_tokens, cols / 16]
  std::vector<float> x_rounded_;  // [n_tokens, cols]  F16/BF16 activations
};

}  // namespace herd
