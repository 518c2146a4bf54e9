// The scalar reference backend: plain loops with double accumulation, the oracle every other
// backend is tested against. Declared here (not only behind make_reference_backend) so optimized
// CPU backends can derive from it and inherit the ops they do not specialize.
#pragma once

#include <string>

#include "kernels/backend.h"
#include "kernels/cpu/thread_pool.h"

namespace herd {

class ReferenceBackend : public Backend {
 public:
  std::string name() const override { return "cpu-reference"; }
  // MatMul and GetRows for every DType in kDTypes; the other ops work on F32 activations only.
  bool supports(Op op, DType type) const override;
  // Threads for matmul (rows split across threads) and attention ((token, head) pairs split);
  // results are bit-identical for every count.
  void set_threads(int n_threads) override;
  int threads() const override { return pool_.size(); }

  void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y,
              int64_t ldy) override;
  void get_rows(const WeightMatrix& w, const int32_t* ids, int64_t n, float* out, int64_t ldo) override;
  void rmsnorm(const float* x, int64_t ldx, const float* weight, int64_t n_rows, int64_t dim, float eps, float* out,
               int64_t ldo) override;
  void rope(float* x, int64_t n_tokens, int64_t ld_token, int64_t n_heads, int64_t head_dim, const int32_t* pos,
            const RopeParams& p) override;
  void softmax(float* x, int64_t n) override;
  void attention(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv, const AttentionShape& s,
                 float scale, float* out, int64_t ldo) override;
  void silu_mul(const float* gate, const float* up, float* out, int64_t n) override;
  void add(const float* a, const float* b, float* out, int64_t n) override;

 protected:
  ThreadPool pool_{1};
};

}  // namespace herd
