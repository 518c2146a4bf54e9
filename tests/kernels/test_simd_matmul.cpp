// x86 SIMD backend matmul vs the scalar reference, for every DType × ISA (AVX2, AVX-512) × path.
// The bodies and their bounds (with the derivation) are tests/kernels/simd_test_bodies.h, shared
// with test_neon_matmul.cpp.
#include "tests/kernels/simd_test_bodies.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

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

// prepare_matmul (what a stage does at load) gives Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K
// and Q6_K a copy in the 16-row interleaved layout, sized as the layout says (rows padded to 16; per
// group of 16 rows 16 × the GGUF block: 288 bytes per Q4_0 block, 320 per Q4_1, 352 per Q5_0, 384 per
// Q5_1, 544 per Q8_0, 2368 per Q4_K super-block and 2880 per Q5_K (their scales as bytes, 16 × 148
// and 16 × 180), 3360 per Q6_K, 1344 per Q2_K, 1760 per Q3_K), owning its memory;
// other types, and the exact mode, keep the row layout. The numerics of the packed kernels are
// checked above (FastPathWithinActivationQuantizationBound and BitIdentical... run them).
TEST(SimdMatmulPacked, PrepareRepacksTheTypesWithAPackedKernelOnly) {
  for (const char* isa : {"avx2", "avx512"}) {
    if (!cpu_supports_isa(isa)) continue;
    for (const auto& d : kDTypes) {
      const Matrix m = make_matrix(d.type, 37, cols_for(d.type), 15);
      const WeightMatrix w = prepared(isa, m);
      EXPECT_EQ(w.data, m.view().data);
      size_t group_block = 0;  // bytes per block (super-block) of a group of 16 rows; 0 = not packed
      switch (d.type) {
        case DType::Q4_0: group_block = 288; break;
        case DType::Q4_1: group_block = 320; break;
        case DType::Q5_0: group_block = 352; break;
        case DType::Q5_1: group_block = 384; break;
        case DType::Q8_0: group_block = 544; break;
        case DType::Q4_K: group_block = 2368; break;
        case DType::Q5_K: group_block = 2880; break;
        case DType::Q6_K: group_block = 3360; break;
        case DType::Q2_K: group_block = 1344; break;
        case DType::Q3_K: group_block = 1760; break;
        default: break;
      }
      ASSERT_EQ(w.packed.data != nullptr, group_block != 0) << isa << " " << d.name;
      if (group_block != 0) {
        EXPECT_EQ(w.packed.size, 3u * static_cast<size_t>(m.cols / block_size(d.type)) * group_block) << d.name;
        EXPECT_EQ(reinterpret_cast<uintptr_t>(w.packed.data) % 64, 0u);
        EXPECT_NE(w.packed.storage, nullptr);
      }
      WeightMatrix we = m.view();  // exact mode: nothing to prepare
      WeightMatrix* ws[] = {&we};
      make_cpu_backend(CpuBackendOptions{true, isa})->prepare_matmul(ws);
      EXPECT_EQ(we.packed.data, nullptr) << isa << " " << d.name;
    }
  }
}

// get_rows of a prepared matrix reads the packed copy (a stage shares a tied output's copy with
// tok_embd and drops the file pages): each row rebuilt exactly, so the reference's values. `data`
// is pointed at zeros to show which bytes are read.
TEST(SimdMatmulPacked, GetRowsReadsThePackedCopyExactly) {
  for (const char* isa : {"avx2", "avx512"}) {
    if (!cpu_supports_isa(isa)) continue;
    for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q4_K, DType::Q6_K,
                    DType::Q5_K, DType::Q2_K, DType::Q3_K}) {
      const Matrix m = make_matrix(t, 37, cols_for(t), 16);
      const int32_t ids[] = {0, 15, 16, 36, 7};
      std::vector<float> ref(5 * m.cols), got(5 * m.cols, -1.0f);
      ReferenceBackend().get_rows(m.view(), ids, 5, ref.data(), m.cols);
      WeightMatrix w = prepared(isa, m);
      const std::vector<uint8_t> zeros(m.bytes.size(), 0);
      if (w.packed.data) w.data = zeros.data();  // only the packed copy holds the values now
      backend(isa)->get_rows(w, ids, 5, got.data(), m.cols);
      EXPECT_EQ(got, ref) << isa << " " << dtype_name(t);
    }
  }
}

// Every level at its largest (all level, fifth/third-bit and scale bytes 0xFF; Q8_0 at -128) and
// every activation at ±127: the AVX2 kernels sum maddubs pairs in i16 before widening, and their
// bounds (4 chunks × 2 × 31 × 127 = 31496 for Q5_0/Q5_1/Q5_K, 8 × 2 × 15 × 127 = 30480 for
// Q4_0/Q4_1/Q4_K, 2 × 2 × 63 × 127 = 32004 for Q6_K, all < 32767) are reached only here: a sum
// that overflowed would differ from AVX-512's vpdpbusd (no i16 step) and from the reference.
// x is constant per token, so q_x = ±127 and d_x = amax / 127 exactly as the kernel rounds it; the
// emulated product Σ w · d_x · q_x differs from the kernel only by the f32 scale products, bounded
// as in the fast-path test: (cols/32 + 16) 2^-23 Σ 4 max|w| amax.
TEST(SimdMatmulPacked, ExtremeLevelsAgreeAcrossIsasAndWithTheReference) {
  REQUIRE_ISA("avx2");
  REQUIRE_ISA("avx512");
  struct Case {
    DType type;
    uint8_t fill;
    std::vector<int> f16_at;  // offsets of the block's f16 scale/min fields
  };
  const Case cases[] = {{DType::Q4_0, 0xFF, {0}},     {DType::Q4_1, 0xFF, {0, 2}},  {DType::Q5_0, 0xFF, {0}},
                        {DType::Q5_1, 0xFF, {0, 2}},  {DType::Q8_0, 0x80, {0}},     {DType::Q2_K, 0xFF, {80, 82}},
                        {DType::Q3_K, 0xFF, {108}},   {DType::Q4_K, 0xFF, {0, 2}},  {DType::Q5_K, 0xFF, {0, 2}},
                        {DType::Q6_K, 0xFF, {208}}};
  for (const Case& c : cases) {
    const int64_t rows = 19, cols = cols_for(c.type), bs = block_size(c.type);
    const size_t bb = row_bytes(c.type, bs);
    Matrix m{c.type, rows, cols, row_bytes(c.type, cols), {}, {}};
    m.bytes.assign(m.stride * rows, c.fill);
    for (int64_t b = 0; b < rows * cols / bs; ++b)
      for (size_t i = 0; i < c.f16_at.size(); ++i) {
        const uint16_t h = f32_to_f16(i == 0 ? 0.01f : 0.005f);  // d, then the min scale
        std::memcpy(m.bytes.data() + b * bb + c.f16_at[i], &h, 2);
      }
    m.deq.resize(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r) dequantize_row(c.type, m.bytes.data() + r * m.stride, m.deq.data() + r * cols, cols);
    for (const float sign : {1.0f, -1.0f}) {
      const int64_t n_tokens = 9;
      std::vector<float> x(static_cast<size_t>(n_tokens * cols));
      for (int64_t t = 0; t < n_tokens; ++t)
        for (int64_t i = 0; i < cols; ++i) x[t * cols + i] = sign * 0.25f * static_cast<float>(t + 1);
      const auto y2 = run("avx2", false, 1, m, x, n_tokens, cols, rows);
      EXPECT_EQ(y2, run("avx512", false, 1, m, x, n_tokens, cols, rows)) << dtype_name(c.type) << " sign " << sign;
      for (int64_t t = 0; t < n_tokens; ++t) {
        const float amax = 0.25f * static_cast<float>(t + 1), d = amax / 127.0f;
        const double dx = bs == 256 ? d : f16_to_f32(f32_to_f16(d));  // K-quants: f32 per 256; else f16 per 32
        for (int64_t r = 0; r < rows; ++r) {
          double emul = 0, f32_mag = 0;
          for (int64_t i = 0; i < cols; ++i) {
            emul += double(m.deq[r * cols + i]) * dx * 127.0 * sign;
            double mw = 0;
            for (int64_t j = i / bs * bs; j < (i / bs + 1) * bs; ++j) mw = std::max(mw, double(std::fabs(m.deq[r * cols + j])));
            f32_mag += 4.0 * mw * amax;
          }
          ASSERT_LE(std::fabs(y2[t * rows + r] - emul), static_cast<double>(cols / 32 + 16) * 2.0 * kU * f32_mag)
              << dtype_name(c.type) << " sign " << sign << " t " << t << " r " << r;
        }
      }
    }
  }
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
