// The x86 SIMD CPU backend: the ReferenceBackend's op set with matmul, attention, rmsnorm,
// silu_mul and add routed through one ISA's kernel table (x86_kernels.h). rope is the reference's
// double-precision formula with each token's cos/sin computed once for all its heads (the same
// bits); get_rows and softmax are inherited from the reference (not on the hot path).
//
// Matmul has two paths:
//   exact (set_exact(true)): weights dequantized on the fly to f32, f32 FMA dots. Differs from the
//     reference only by f32 summation order: |Δ| <= ~cols · 2^-24 · Σ|w·x|.
//   fast (default): activations quantized once per call to 8-bit blocks of 32 (x86_kernels.h
//     Q8Act) with llama.cpp's choice of scales (act_scale_mode), integer dot products against the
//     packed weights, as llama.cpp does. Used for
//     Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K; F32/F16/BF16 always take the exact path
//     (F16/BF16 with activations rounded to f16/bf16, per backend.h).
// Threads split output rows in tiles of 16 (64 bytes of f32 per token row), each y element is
// computed by one thread with a fixed instruction sequence: any thread count gives the same bits.
#pragma once

#include <string>
#include <vector>

#include "kernels/cpu/reference_backend.h"
#include "kernels/cpu/x86/x86_kernels.h"

namespace herd {

// The x86::ActScale the fast path quantizes activations with for this weight type.
int act_scale_mode(DType weight_type);

class SimdBackend : public ReferenceBackend {
 public:
  SimdBackend(const x86::Kernels& kernels, bool exact) : k_(kernels), exact_(exact) {}

  std::string name() const override { return std::string("cpu-") + k_.name + (exact_ ? "-exact" : "-q8"); }
  void set_exact(bool exact) { exact_ = exact; }
  bool exact() const { return exact_; }
  // True when matmul of this type uses 8-bit activations in the current mode.
  bool uses_q8(DType type, int64_t cols) const;

  void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y,
              int64_t ldy) override;
  void rmsnorm(const float* x, int64_t ldx, const float* weight, int64_t n_rows, int64_t dim, float eps, float* out,
               int64_t ldo) override;
  void attention(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv, const AttentionShape& s,
                 float scale, float* out, int64_t ldo) override;
  void rope(float* x, int64_t n_tokens, int64_t ld_token, int64_t n_heads, int64_t head_dim, const int32_t* pos,
            const RopeParams& p) override;
  void silu_mul(const float* gate, const float* up, float* out, int64_t n) override;
  void add(const float* a, const float* b, float* out, int64_t n) override;

 private:
  void matmul_q8(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y, int64_t ldy);
  void matmul_exact(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y, int64_t ldy);

  const x86::Kernels& k_;
  bool exact_;
  // Scratch reused across calls (one matmul at a time per backend, like the thread pool).
  std::vector<int8_t> act_q_;     // [n_tokens, cols]
  std::vector<float> act_d_;      // [n_tokens, cols / 32]
  std::vector<int16_t> act_s_;    // [n_tokens, cols / 16]
  std::vector<uint8_t> act_xg_;   // x86::Q8Act::xg (kernels with regroup_act only)
  std::vector<float> act_dg_;     // x86::Q8Act::dg
  std::vector<float> x_rounded_;  // [n_tokens, cols]  F16/BF16 activations
};

}  // namespace herd
