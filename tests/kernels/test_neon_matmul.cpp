// Arm NEON backend matmul vs the scalar reference, for every DType × table (baseline NEON with
// vmull_s8, ARMv8.2 dotprod with vdotq_s32) × path. Built only for AArch64 (natively, or by the
// tests/neon cross build that runs it under qemu-aarch64 with and without dotprod). The bodies and
// their bounds (with the derivation) are tests/kernels/simd_test_bodies.h, shared with
// test_simd_matmul.cpp.
#include "tests/kernels/simd_test_bodies.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels/cpu/cpu_backend.h"

namespace herd {
namespace {

using namespace simd_test;

class NeonMatmul : public ::testing::TestWithParam<Param> {};

TEST_P(NeonMatmul, ExactPathWithinF32Bound) {
  const auto [isa, t] = GetParam();
  REQUIRE_ISA(isa);
  matmul_exact_path_within_f32_bound(isa, t);
}

TEST_P(NeonMatmul, FastPathWithinActivationQuantizationBound) {
  const auto [isa, t] = GetParam();
  REQUIRE_ISA(isa);
  matmul_fast_path_within_activation_quantization_bound(isa, t);
}

TEST_P(NeonMatmul, BitIdenticalAcrossThreadsAndBatchSizes) {
  const auto [isa, t] = GetParam();
  REQUIRE_ISA(isa);
  matmul_bit_identical_across_threads_and_batch_sizes(isa, t);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, NeonMatmul, ::testing::ValuesIn(all_params({"neon", "neon-dotprod"})), param_name);

// The baseline and dotprod tables run the same arithmetic (SDOT only replaces an exact integer
// vmull_s8 + pairwise-add sequence with the same lane layout), so they agree bit for bit.
TEST(NeonMatmulIsa, BaselineAndDotprodIdentical) {
  REQUIRE_ISA("neon");
  REQUIRE_ISA("neon-dotprod");
  matmul_tables_identical("neon", "neon-dotprod");
}

// What "auto" picks follows the CPU's HWCAP_ASIMDDP. The qemu runner (tests/neon/run_cross_tests.sh)
// sets HERD_NEON_EXPECT_DOTPROD to what the emulated CPU model has, so both code paths are known to
// have run.
TEST(NeonBackendFactory, IsaSelectionAndErrors) {
  ASSERT_TRUE(cpu_supports_isa("neon")) << cpu_backend_description();
  const bool dot = cpu_supports_isa("neon-dotprod");
  std::printf("%s\n", cpu_backend_description().c_str());
  if (const char* want = std::getenv("HERD_NEON_EXPECT_DOTPROD")) {
    EXPECT_EQ(dot, std::string(want) == "1") << "HWCAP dotprod detection vs the emulated CPU: "
                                             << cpu_backend_description();
  }
  EXPECT_EQ(cpu_best_isa(), dot ? "neon-dotprod" : "neon");
  if (std::getenv("HERD_CPU_ISA") == nullptr) {
    EXPECT_EQ(make_cpu_backend(CpuBackendOptions{false, "auto"})->name(), dot ? "cpu-neon-dotprod-q8" : "cpu-neon-q8");
  }
  EXPECT_EQ(make_cpu_backend(CpuBackendOptions{true, "neon"})->name(), "cpu-neon-exact");
  EXPECT_EQ(make_cpu_backend(CpuBackendOptions{false, "scalar"})->name(), "cpu-reference");
  if (!dot) {
    EXPECT_THROW(make_cpu_backend(CpuBackendOptions{false, "neon-dotprod"}), std::runtime_error);
  }
  EXPECT_THROW(make_cpu_backend(CpuBackendOptions{false, "avx2"}), std::runtime_error);
  EXPECT_THROW(make_cpu_backend(CpuBackendOptions{false, "sve"}), std::invalid_argument);
}

}  // namespace
}  // namespace herd
