// Reference matmul and get_rows for every storage type against naive loops over dequantized
// weights, with strided inputs/outputs and thread counts 1, 2, 3 (bit-identical).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/fp16.h"
#include "kernels/quant.h"

namespace herd {
namespace {

constexpr float kSentinel = 12345.5f;  // written into padding; must survive every op

struct QuantMatrix {
  DType type;
  int64_t rows, cols;
  size_t stride;               // bytes between rows (> row_bytes: padded)
  std::vector<uint8_t> bytes;  // [rows, stride]
  std::vector<float> deq;      // [rows, cols]: the exact values the kernel must use
  WeightMatrix view() const { return WeightMatrix{type, bytes.data(), rows, cols, stride}; }
};

QuantMatrix make_matrix(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  QuantMatrix m{t, rows, cols, row_bytes(t, cols) + 13, {}, {}};
  m.bytes.assign(m.stride * rows, 0xAB);
  m.deq.resize(static_cast<size_t>(rows * cols));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<float> src(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : src) v = normal(rng);
    quantize_row(t, src.data(), m.bytes.data() + r * m.stride, cols);
    dequantize_row(t, m.bytes.data() + r * m.stride, m.deq.data() + r * cols, cols);
  }
  return m;
}

// F16/BF16 weights multiply activations rounded to their own type (llama.cpp's definition of the
// 16-bit dot product, which its reference logits depend on); every other type sees x as is.
float activation_as_seen(DType t, float v) {
  if (t == DType::F16) return f16_to_f32(f32_to_f16(v));
  if (t == DType::BF16) return bf16_to_f32(f32_to_bf16(v));
  return v;
}

int64_t cols_for(DType t, int blocks) { return block_size(t) == 1 ? 37 * blocks : block_size(t) * blocks; }

class ReferenceMatmul : public ::testing::TestWithParam<DType> {};

// |y - exact| <= 2^-24 |exact| (one f32 rounding) + n 2^-53 sum|w x| (double accumulation); the
// naive double loop below has the same second term, so the tolerance is the sum of both.
TEST_P(ReferenceMatmul, MatchesNaiveLoopWithStrides) {
  const DType t = GetParam();
  auto be = make_reference_backend();
  ASSERT_TRUE(be->supports(Op::MatMul, t));
  for (int64_t rows : {1, 7, 33}) {
    for (int64_t n_tokens : {1, 4}) {
      const int64_t cols = cols_for(t, 2);
      const auto w = make_matrix(t, rows, cols, static_cast<uint32_t>(rows * 31 + n_tokens));
      const int64_t ldx = cols + 5, ldy = rows + 3;
      std::vector<float> x(static_cast<size_t>(n_tokens * ldx), kSentinel);
      std::mt19937 rng(99);
      std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
      for (int64_t tk = 0; tk < n_tokens; ++tk)
        for (int64_t c = 0; c < cols; ++c) x[tk * ldx + c] = uni(rng);
      std::vector<float> y(static_cast<size_t>(n_tokens * ldy), kSentinel);
      be->matmul(w.view(), x.data(), n_tokens, ldx, y.data(), ldy);
      for (int64_t tk = 0; tk < n_tokens; ++tk) {
        for (int64_t r = 0; r < ldy; ++r) {
          const float got = y[tk * ldy + r];
          if (r >= rows) {
            ASSERT_EQ(got, kSentinel) << "padding written at row " << r;
            continue;
          }
          double exact = 0, abs_sum = 0;
          for (int64_t c = cols - 1; c >= 0; --c) {  // other order than the kernel on purpose
            const double p = static_cast<double>(w.deq[r * cols + c]) * activation_as_seen(t, x[tk * ldx + c]);
            exact += p;
            abs_sum += std::fabs(p);
          }
          const double tol = std::ldexp(std::fabs(exact), -24) + 3.0 * cols * std::ldexp(abs_sum, -53);
          ASSERT_NEAR(got, exact, tol) << dtype_name(t) << " rows " << rows << " token " << tk << " row " << r;
        }
      }
    }
  }
}

TEST_P(ReferenceMatmul, ThreadCountDoesNotChangeBits) {
  const DType t = GetParam();
  auto be = make_reference_backend();
  const int64_t rows = 33, cols = cols_for(t, 3), n_tokens = 3;
  const auto w = make_matrix(t, rows, cols, 7);
  std::vector<float> x(static_cast<size_t>(n_tokens * cols));
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng);
  std::vector<std::vector<float>> ys;
  for (int threads : {1, 2, 3, 1}) {
    be->set_threads(threads);
    std::vector<float> y(static_cast<size_t>(n_tokens * rows), kSentinel);
    be->matmul(w.view(), x.data(), n_tokens, cols, y.data(), rows);
    ys.push_back(std::move(y));
  }
  for (size_t i = 1; i < ys.size(); ++i)
    EXPECT_EQ(std::memcmp(ys[0].data(), ys[i].data(), ys[0].size() * sizeof(float)), 0) << "run " << i;
}

TEST_P(ReferenceMatmul, GetRowsEqualsDequantizeRow) {
  const DType t = GetParam();
  auto be = make_reference_backend();
  ASSERT_TRUE(be->supports(Op::GetRows, t));
  const int64_t rows = 9, cols = cols_for(t, 2), ldo = cols + 3;
  const auto w = make_matrix(t, rows, cols, 11);
  const int32_t ids[] = {2, 0, 2, 8, 5};
  const int64_t n = 5;
  std::vector<float> out(static_cast<size_t>(n * ldo), kSentinel);
  be->get_rows(w.view(), ids, n, out.data(), ldo);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(std::memcmp(out.data() + i * ldo, w.deq.data() + ids[i] * cols, cols * sizeof(float)), 0) << i;
    for (int64_t c = cols; c < ldo; ++c) EXPECT_EQ(out[i * ldo + c], kSentinel);
  }
  const int32_t bad[] = {9};
  EXPECT_THROW(be->get_rows(w.view(), bad, 1, out.data(), ldo), std::invalid_argument);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, ReferenceMatmul, ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::Q4_0,
                                                                       DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0,
                                                                       DType::Q4_K, DType::Q5_K, DType::Q6_K),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// One weight -0.578613281 (an f16 value) times x = 0.344557166: with F16 weights the product uses
// f16(x) = 0.344482421875; with F32 weights x itself.
TEST(ReferenceMatmulChecks, SixteenBitWeightsRoundActivations) {
  auto be = make_reference_backend();
  const float wv = -0.578613281f, xv = 0.344557166f;
  const uint16_t wh = f32_to_f16(wv);
  ASSERT_EQ(f16_to_f32(wh), wv);
  const uint8_t f16_bytes[2] = {static_cast<uint8_t>(wh & 0xFF), static_cast<uint8_t>(wh >> 8)};
  float y = 0;
  be->matmul(WeightMatrix{DType::F16, f16_bytes, 1, 1, 2}, &xv, 1, 1, &y, 1);
  EXPECT_EQ(y, static_cast<float>(static_cast<double>(wv) * 0.344482421875));
  be->matmul(WeightMatrix{DType::F32, &wv, 1, 1, 4}, &xv, 1, 1, &y, 1);
  EXPECT_EQ(y, static_cast<float>(static_cast<double>(wv) * xv));
}

TEST(ReferenceMatmulChecks, RejectsBadShapes) {
  auto be = make_reference_backend();
  std::vector<uint8_t> bytes(1024);
  std::vector<float> x(64), y(64);
  WeightMatrix w{DType::Q4_0, bytes.data(), 2, 48, 27};  // 48 is not a multiple of 32
  EXPECT_THROW(be->matmul(w, x.data(), 1, 48, y.data(), 2), std::invalid_argument);
  w = WeightMatrix{DType::Q4_0, bytes.data(), 2, 32, 17};  // stride < 18 bytes
  EXPECT_THROW(be->matmul(w, x.data(), 1, 32, y.data(), 2), std::invalid_argument);
  EXPECT_FALSE(be->supports(Op::RmsNorm, DType::Q4_0));
  EXPECT_TRUE(be->supports(Op::Attention, DType::F32));
}

}  // namespace
}  // namespace herd
