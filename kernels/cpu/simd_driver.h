// KernelTableBackend: the baseline driver shared by the x86 SimdBackend (x86/simd_backend.h) and
// the Arm NeonBackend (arm/neon_backend.h): the ReferenceBackend's op set with matmul, attention,
// rmsnorm, silu_mul and add routed through one ISA's kernel table (simd_table.h). This class does
// the argument checks, scratch buffers and the thread split; the arithmetic is behind k_. get_rows,
// rope and softmax are inherited from the reference (SimdBackend overrides rope).
//
// Matmul has two paths:
//   exact (set_exact(true) / CpuBackendOptions::exact): weights dequantized on the fly to f32
//     (bit-exact with dequantize_row), f32 FMA dots. Differs from the reference only by f32
//     summation order: |Δ| <= ~cols · 2^-24 · Σ|w·x|.
//   fast (default): activations quantized once per call to 8-bit blocks of 32 (simd::Q8Act) with
//     llama.cpp's choice of scales (act_scale_mode), integer dot products against the packed
//     weights, as llama.cpp does. Used for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K;
//     F32/F16/BF16 always take the exact path (F16/BF16 with activations rounded to f16/bf16, per
//     backend.h).
//     Tables with a packed layout (x86: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K in kPackedR16,
//     simd_table.h) run those types on
//     it: from the copy prepare_matmul made at load, or from a 16-row tile repacked on the fly into
//     per-thread scratch when the matrix was not prepared (same kernel, same bits).
// Threads split output rows in tiles of 16 (64 bytes of f32 per token row), each y element is
// computed by one thread with a fixed instruction sequence: any thread count gives the same bits.
#pragma once

#include <string>
#include <vector>

#include "kernels/cpu/reference_backend.h"
#include "kernels/cpu/simd_table.h"

namespace herd {

// The simd::ActScale the fast path quantizes activations with for this weight type.
int act_scale_mode(DType weight_type);

class KernelTableBackend : public ReferenceBackend {
 public:
  // error_prefix starts every exception message ("cpu-simd", "cpu-neon").
  KernelTableBackend(const simd::Kernels& kernels, bool exact, const char* error_prefix)
      : k_(kernels), exact_(exact), error_prefix_(error_prefix) {}

  std::string name() const override { return std::string("cpu-") + k_.name + (exact_ ? "-exact" : "-q8"); }
  bool exact() const { return exact_; }
  // True when matmul of this type uses 8-bit activations in the current mode.
  bool uses_q8(DType type, int64_t cols) const;
  // True when matmul of this type runs on the table's packed layout in the current mode.
  bool uses_packed(DType type, int64_t cols) const;

  void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y,
              int64_t ldy) override;
  // The kPackedR16 copies (repacked in parallel on the pool) for the matrices whose type has it in
  // this table and mode; the others unchanged (exact mode, other types, Arm tables).
  void prepare_matmul(std::span<WeightMatrix* const> ws,
                      const std::function<void(const WeightMatrix&)>& released = {}) override;
  // kPackedR16 in groups of simd::kPackedRows for the matrices prepare_matmul would copy.
  PackedLayout packed_layout(const WeightMatrix& w) const override;
  // The reference's, except that a matrix with our packed copy is read from it (each row rebuilt
  // to its GGUF bytes, then dequantize_row: the same values), not from `data`: a stage shares the
  // copy of a tied output with tok_embd and drops the file pages.
  void get_rows(const WeightMatrix& w, const int32_t* ids, int64_t n, float* out, int64_t ldo) override;
  void rmsnorm(const float* x, int64_t ldx, const float* weight, int64_t n_rows, int64_t dim, float eps, float* out,
               int64_t ldo) override;
  void attention(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv, const AttentionShape& s,
                 float scale, float* out, int64_t ldo) override;
  void silu_mul(const float* gate, const float* up, float* out, int64_t n) override;
  void add(const float* a, const float* b, float* out, int64_t n) override;
  // F16 KV rows read in place by the table's attention_f16 and written by its store_f16, where it
  // has them (the same bits as converting first); other types as Backend does.
  void attention_rows(const float* q, int64_t ldq, const TypedRows& k, const TypedRows& v, const AttentionShape& s,
                      float scale, float* out, int64_t ldo) override;
  void store_rows(const float* x, int64_t n, int64_t ldx, int64_t cols, DType type, void* dst,
                  size_t dst_stride) override;
  // F16 / Q8_0 KV rows through the table's vector decoders (the same values as dequantize_row).
  void load_rows(const void* src, size_t src_stride, int64_t n, int64_t cols, DType type, float* dst,
                 int64_t ldd) override;

 protected:
  // Throws std::invalid_argument("<error_prefix> <op>: <what>").
  [[noreturn]] void fail(const std::string& op, const std::string& what) const;
  // Checks an attention call's shape and leading dimensions (fail() names the problem).
  simd::AttnShape check_attention(const AttentionShape& s, int64_t ldq, int64_t ldkv, int64_t ldo) const;

  const simd::Kernels& k_;
  bool exact_;

 private:
  void matmul_q8(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y, int64_t ldy);
  void matmul_exact(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y, int64_t ldy);

  const char* error_prefix_;
  // Scratch reused across calls (one matmul at a time per backend, like the thread pool).
  std::vector<int8_t> act_q_;     // [n_tokens, cols]
  std::vector<float> act_d_;      // [n_tokens, cols / 32]
  std::vector<int16_t> act_s_;    // [n_tokens, cols / 16]
  std::vector<float> x_rounded_;  // [n_tokens, cols]  F16/BF16 activations
  std::vector<uint8_t> row_bytes_;  // get_rows of a packed matrix: one row in its GGUF bytes
};

}  // namespace herd
