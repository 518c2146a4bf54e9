// x86 SIMD backend matmul vs the scalar reference, for every DType × ISA (AVX2, AVX-512) × path.
// The bodies and their bounds (with the derivation) are tests/kernels/simd_test_bodies.h, shared
// with test_neon_matmul.cpp.
#include "tests/kernels/simd_test_bodies.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "kernels/cpu/cpu_backend.h"

namespace herd {
namespace {

using namespace simd_test;

class SimdMatmul : public ::testing::TestWithParam<Param> {};

TEST_P(SimdMatmul, ExactPathWithinF32Bound) {
  const auto [isa, t] = GetParam();
  REQUIRE_ISA(isa);
  matmul_exact_path_within_f32_bound(isa, t);
}

TEST_P(SimdMatmul, FastPathWithinActivationQuantizationBound) {
  const auto [isa, t] = GetParam();
  REQUIRE_ISA(isa);
  matmul_fast_path_within_activation_quantization_bound(isa, t);
}

TEST_P(SimdMatmul, BitIdenticalAcrossThreadsAndBatchSizes) {
  const auto [isa, t] = GetParam();
  REQUIRE_ISA(isa);
  matmul_bit_identical_across_threads_and_batch_sizes(isa, t);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, SimdMatmul, ::testing::ValuesIn(all_params({"avx2", "avx512"})), param_name);

// The AVX2 and AVX-512 kernels run the same arithmetic (VNNI only replaces an exact integer
// maddubs+madd pair), so they agree bit for bit.
TEST(SimdMatmulIsa, Avx2AndAvx512Identical) {
  REQUIRE_ISA("avx2");
  REQUIRE_ISA("avx512");
  matmul_tables_identical("avx2", "avx512");
}

TEST(CpuBackendFactory, IsaSelectionAndErrors) {
  EXPECT_THROW(make_cpu_backend(CpuBackendOptions{false, "neon"}), std::invalid_argument);
  EXPECT_EQ(make_cpu_backend(CpuBackendOptions{false, "scalar"})->name(), "cpu-reference");
  const std::string best = cpu_best_isa();
  EXPECT_FALSE(cpu_backend_description().empty());
  if (best != "scalar") {
    EXPECT_EQ(make_cpu_backend(CpuBackendOptions{false, "auto"})->name().find("cpu-" + best), 0u)
        << "(unless HERD_CPU_ISA is set)";
    EXPECT_EQ(make_cpu_backend(CpuBackendOptions{true, best})->name(), "cpu-" + best + "-exact");
  }
  for (const char* isa : {"avx2", "avx512"})
    if (!cpu_supports_isa(isa)) {
      EXPECT_THROW(make_cpu_backend(CpuBackendOptions{false, isa}), std::runtime_error);
    }
}

}  // namespace
}  // namespace herd
