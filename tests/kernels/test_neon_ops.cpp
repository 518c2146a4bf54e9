// Arm NEON backend: attention, rmsnorm, silu_mul, add against the double-precision reference, per
// kernel table (neon, neon-dotprod) (f32 arithmetic,
// u = 2^-24). The bodies and their bounds are tests/kernels/simd_test_bodies.h (shared with
// test_simd_ops.cpp).
#include "tests/kernels/simd_test_bodies.h"

#include <gtest/gtest.h>

namespace herd {
namespace {

using namespace simd_test;

class NeonOps : public IsaOpsTest {};

TEST_P(NeonOps, RmsNorm) { ops_rmsnorm(GetParam()); }
TEST_P(NeonOps, SiluMulAndAdd) { ops_silu_mul_and_add(GetParam()); }
TEST_P(NeonOps, AttentionGqaCausalStrided) { ops_attention_gqa_causal_strided(GetParam()); }
TEST_P(NeonOps, AttentionBitIdenticalAcrossThreads) { ops_attention_bit_identical_across_threads(GetParam()); }

TEST_P(NeonOps, RejectsBadShapes) { ops_rejects_bad_shapes(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Isa, NeonOps, ::testing::Values("neon", "neon-dotprod"), 
                         [](const auto& info) { return isa_name(info.param); });

}  // namespace
}  // namespace herd
