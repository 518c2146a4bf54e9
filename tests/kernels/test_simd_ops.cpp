// x86 SIMD backend: attention, rmsnorm, silu_mul, add, rope (and the inherited softmax/get_rows)
// against the double-precision reference, per ISA, with bounds from f32 arithmetic (u = 2^-24).
// The bodies and their bounds are tests/kernels/simd_test_bodies.h (shared by both ISA families).
#include "tests/kernels/simd_test_bodies.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/cpu/reference_backend.h"

namespace herd {
namespace {

using namespace simd_test;

class SimdOps : public IsaOpsTest {};

TEST_P(SimdOps, RmsNorm) { ops_rmsnorm(GetParam()); }
TEST_P(SimdOps, SiluMulAndAdd) { ops_silu_mul_and_add(GetParam()); }
TEST_P(SimdOps, AttentionGqaCausalStrided) { ops_attention_gqa_causal_strided(GetParam()); }
TEST_P(SimdOps, AttentionBitIdenticalAcrossThreads) { ops_attention_bit_identical_across_threads(GetParam()); }

// rope is the reference's double-precision formula with cos/sin hoisted out of the head loop:
// the same bits, for both modes, frequency factors, partial rotation and any thread count.
TEST_P(SimdOps, RopeIdenticalToReference) {
  ReferenceBackend ref;
  const int64_t n_tokens = 5, n_heads = 3, head_dim = 16, ld = n_heads * head_dim + 4;
  const float factors[8] = {1.0f, 1.5f, 2.0f, 4.0f, 8.0f, 0.5f, 3.0f, 1.25f};  // n_rot / 2 at most
  const int32_t pos[n_tokens] = {0, 1, 7, 300, 4095};
  for (int threads : {1, 3})
    for (RopeMode mode : {RopeMode::Normal, RopeMode::Neox})
      for (int64_t n_rot : {int64_t{16}, int64_t{12}})
        for (bool ff : {false, true}) {
          RopeParams p;
          p.mode = mode;
          p.n_rot = n_rot;
          p.freq_base = 500000.0f;
          p.freq_scale = 0.25f;
          p.freq_factors = ff ? factors : nullptr;
          auto a = randn(static_cast<size_t>(n_tokens * ld), 11);
          auto b = a;
          ref.rope(a.data(), n_tokens, ld, n_heads, head_dim, pos, p);
          backend(GetParam(), threads)->rope(b.data(), n_tokens, ld, n_heads, head_dim, pos, p);
          ASSERT_EQ(a, b) << "threads " << threads << " n_rot " << n_rot << " factors " << ff;
        }
}

TEST_P(SimdOps, RejectsBadShapes) { ops_rejects_bad_shapes(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Isa, SimdOps, ::testing::Values("avx2", "avx512"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace herd
