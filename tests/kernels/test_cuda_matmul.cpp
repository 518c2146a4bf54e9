// The CUDA launchers (kernels/cuda/matmul.h) on a GPU, against the same HERD_HD block math run on
// the CPU (kernels/cuda/block_math.h): the kernels perform exactly the operations the host
// emulates (dp4a dots are exact, every f32 operation is one _rn intrinsic, same order), so every
// result must match bit for bit: quantize_act vs quantize_act_block32, a decode warp vs the 32-lane
// + butterfly emulation, a tile thread vs dot_row_q8, matmul_f vs dot_row_f_lanes + butterfly,
// get_rows vs dequantize_row. Skipped (with the reason) where there is no GPU; the argument checks
// need none and always run. (test_cuda_block_math checks the math itself against the CPU reference.)
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/block_math.h"
#include "kernels/cuda/matmul.h"
#include "kernels/dtype.h"
#include "kernels/quant.h"

namespace herd {
namespace {

namespace hd = herd::cuda;

uint32_t raw(DType t) { return static_cast<uint32_t>(t); }
uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

bool have_gpu(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    cudaGetLastError();
    *why = e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device";
    return false;
  }
  return true;
}
#define REQUIRE_GPU()                                        \
  do {                                                       \
    std::string why_;                                        \
    if (!have_gpu(&why_)) GTEST_SKIP() << "no GPU: " << why_; \
  } while (0)

// Device buffer (freed at scope end); a failed allocation fails the test.
template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) { EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(1, n) * sizeof(T)), cudaSuccess); }
  Dev(const std::vector<T>& h) : Dev(h.size()) {
    EXPECT_EQ(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~Dev() { cudaFree(p); }
  std::vector<T> get() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
};

std::vector<float> randx(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng);
  for (size_t i = 5; i < n; i += 97) x[i] *= 20.0f;
  return x;
}

std::vector<uint8_t> make_rows(DType t, int64_t rows, int64_t cols, size_t stride, uint32_t seed) {
  std::vector<uint8_t> w(stride * rows, 0xCD);
  const auto src = randx(static_cast<size_t>(cols * rows), seed);
  for (int64_t r = 0; r < rows; ++r) quantize_row(t, src.data() + r * cols, w.data() + r * stride, cols);
  return w;
}

TEST(cuda_matmul_gpu, QuantizeAndMatmulQ8BitExactWithHostEmulation) {
  REQUIRE_GPU();
  const DType types[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0,
                         DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};
  for (DType t : types) {
    const int64_t rows = 70, cols = block_size(t) == 32 ? 32 * 9 : 256 * 2, ldy = rows + 3, ldx = cols + 5;
    const size_t stride = row_bytes(t, cols) + 7;
    const auto w = make_rows(t, rows, cols, stride, 3);
    const Dev<uint8_t> dw(w);
    for (int mode : {hd::kActF32x32, hd::kActF16x32, hd::kActF32x256})
      for (int64_t n_tokens : {1, 3, 8, 9, 35}) {
        const auto x = randx(static_cast<size_t>(n_tokens * ldx), 100 + static_cast<uint32_t>(n_tokens));
        const Dev<float> dx(x);
        Dev<uint8_t> abuf(hd::q8_act_bytes(n_tokens, cols));
        const hd::DeviceQ8Act a = hd::q8_act_view(abuf.p, n_tokens, cols);
        ASSERT_EQ(hd::quantize_act(dx.p, n_tokens, ldx, cols, mode, a, nullptr), cudaSuccess);
        Dev<float> dy(std::vector<float>(static_cast<size_t>(n_tokens * ldy), -7.0f));
        ASSERT_EQ(hd::matmul_q8(raw(t), dw.p, stride, rows, cols, a, n_tokens, dy.p, ldy, nullptr), cudaSuccess);
        // The tensor-core prefill (dp4a below sm_80) must give the same bits as the dp4a tiles.
        Dev<float> dy_mma(std::vector<float>(static_cast<size_t>(n_tokens * ldy), -7.0f));
        ASSERT_EQ(hd::matmul_q8(raw(t), dw.p, stride, rows, cols, a, n_tokens, dy_mma.p, ldy, nullptr, hd::kQ8PrefillMma),
                  cudaSuccess);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        // Activations: host quantize_act_block32 over the same groups.
        std::vector<int8_t> q(static_cast<size_t>(n_tokens * cols));
        std::vector<float> d(static_cast<size_t>(n_tokens * cols / 32));
        std::vector<int16_t> s(static_cast<size_t>(n_tokens * cols / 16));
        for (int64_t i = 0; i < n_tokens * hd::act_groups_per_row(cols, mode); ++i) {
          int64_t tk, b0, b1;
          hd::act_group_of(i, cols, mode, &tk, &b0, &b1);
          float amax = 0.0f;
          for (int64_t b = b0; b < b1; ++b) amax = std::max(amax, hd::amax_block32(x.data() + tk * ldx + 32 * b));
          for (int64_t b = b0; b < b1; ++b)
            hd::quantize_act_block32(x.data() + tk * ldx + 32 * b, amax, mode, &q[tk * cols + 32 * b], &d[tk * cols / 32 + b],
                                     &s[tk * cols / 16 + 2 * b]);
        }
        std::vector<int8_t> gq(q.size());
        std::vector<float> gd(d.size());
        std::vector<int16_t> gs(s.size());
        ASSERT_EQ(cudaMemcpy(gq.data(), a.q, gq.size(), cudaMemcpyDeviceToHost), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(gd.data(), a.d, gd.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(gs.data(), a.s, gs.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
        ASSERT_EQ(gq, q) << dtype_name(t) << " mode " << mode;
        for (size_t i = 0; i < d.size(); ++i) ASSERT_EQ(bits(gd[i]), bits(d[i])) << "d " << i;
        ASSERT_EQ(gs, s);
        const auto y = dy.get();
        const auto y_mma = dy_mma.get();
        for (size_t i = 0; i < y.size(); ++i)
          ASSERT_EQ(bits(y_mma[i]), bits(y[i])) << dtype_name(t) << " mma vs dp4a, n_tokens " << n_tokens << " i " << i;
        for (int64_t tk = 0; tk < n_tokens; ++tk) {
          for (int64_t r = 0; r < rows; ++r) {
            const uint8_t* wr = w.data() + r * stride;
            float want;
            if (hd::q8_uses_decode(n_tokens)) {
              float lanes[32];
              for (int l = 0; l < 32; ++l)
                lanes[l] = hd::dot_row_q8_lanes(raw(t), wr, &q[tk * cols], &d[tk * cols / 32], &s[tk * cols / 16], cols, l, 32);
              want = hd::warp_tree_sum(lanes);
            } else {
              want = hd::dot_row_q8(raw(t), wr, &q[tk * cols], &d[tk * cols / 32], &s[tk * cols / 16], cols);
            }
            ASSERT_EQ(bits(y[tk * ldy + r]), bits(want))
                << dtype_name(t) << " mode " << mode << " n_tokens " << n_tokens << " t " << tk << " r " << r;
          }
          for (int64_t r = rows; r < ldy; ++r) ASSERT_EQ(y[tk * ldy + r], -7.0f) << "wrote past rows";
        }
      }
  }
}

TEST(cuda_matmul_gpu, MatmulFloatBitExactWithHostEmulation) {
  REQUIRE_GPU();
  for (DType t : {DType::F32, DType::F16, DType::BF16})
    for (int64_t n_tokens : {1, 9}) {
      const int64_t rows = 37, cols = 101, ldx = cols + 2, ldy = rows + 1;
      const size_t stride = row_bytes(t, cols) + 3;
      const auto w = make_rows(t, rows, cols, stride, 8);
      const auto x = randx(static_cast<size_t>(n_tokens * ldx), 9);
      const Dev<uint8_t> dw(w);
      const Dev<float> dx(x);
      Dev<float> dy(static_cast<size_t>(n_tokens * ldy));
      ASSERT_EQ(hd::matmul_f(raw(t), dw.p, stride, rows, cols, dx.p, ldx, n_tokens, dy.p, ldy, nullptr), cudaSuccess);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const auto y = dy.get();
      for (int64_t tk = 0; tk < n_tokens; ++tk)
        for (int64_t r = 0; r < rows; ++r) {
          float lanes[32];
          for (int l = 0; l < 32; ++l) lanes[l] = hd::dot_row_f_lanes(raw(t), w.data() + r * stride, x.data() + tk * ldx, cols, l, 32);
          ASSERT_EQ(bits(y[tk * ldy + r]), bits(hd::warp_tree_sum(lanes))) << dtype_name(t) << " t " << tk << " r " << r;
        }
    }
}

TEST(cuda_matmul_gpu, GetRowsBitExactWithDequantizeRow) {
  REQUIRE_GPU();
  for (const auto& dt : kDTypes) {
    const int64_t rows = 9, cols = dt.block_size == 256 ? 512 : 96, ldo = cols + 4;
    const size_t stride = row_bytes(dt.type, cols) + 5;
    const auto w = make_rows(dt.type, rows, cols, stride, 4);
    const std::vector<int32_t> ids = {3, 0, 8, 3, 9, -1};  // the last two out of range
    const Dev<uint8_t> dw(w);
    const Dev<int32_t> dids(ids);
    Dev<float> dout(static_cast<size_t>(ids.size() * ldo));
    ASSERT_EQ(hd::get_rows(raw(dt.type), dw.p, stride, cols, dids.p, static_cast<int64_t>(ids.size()), dout.p, ldo, nullptr, rows),
              cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto out = dout.get();
    std::vector<float> want(static_cast<size_t>(cols));
    for (size_t k = 0; k < ids.size(); ++k) {
      const bool ok = ids[k] >= 0 && ids[k] < rows;
      if (ok) dequantize_row(dt.type, w.data() + ids[k] * stride, want.data(), cols);
      for (int64_t c = 0; c < cols; ++c) {
        const float v = out[k * ldo + c];
        if (ok) ASSERT_EQ(bits(v), bits(want[c])) << dt.name << " id " << ids[k] << " c " << c;
        else ASSERT_TRUE(std::isnan(v)) << dt.name << " out-of-range id " << ids[k];
      }
    }
  }
}

// No GPU needed: bad arguments are refused before anything is launched, empty problems succeed.
TEST(cuda_matmul_args, RefusedOrEmptyWithoutLaunching) {
  hd::DeviceQ8Act a{reinterpret_cast<int8_t*>(16), reinterpret_cast<float*>(16), reinterpret_cast<int16_t*>(16), 64, 2, 4};
  const auto* w = reinterpret_cast<const uint8_t*>(16);
  auto* y = reinterpret_cast<float*>(16);
  EXPECT_EQ(hd::matmul_q8(raw(DType::F16), w, 128, 4, 64, a, 1, y, 4, nullptr), cudaErrorInvalidValue);  // no q8 kernel
  EXPECT_EQ(hd::matmul_q8(raw(DType::Q4_K), w, 144, 4, 64, a, 1, y, 4, nullptr), cudaErrorInvalidValue);  // cols % 256
  EXPECT_EQ(hd::matmul_q8(raw(DType::Q4_0), w, 36, 4, 64, a, 1, y, 3, nullptr), cudaErrorInvalidValue);   // ldy < rows
  hd::DeviceQ8Act odd = a;
  odd.ldq = 66;
  EXPECT_EQ(hd::matmul_q8(raw(DType::Q4_0), w, 36, 4, 64, odd, 2, y, 4, nullptr), cudaErrorInvalidValue);  // ldq % 4
  EXPECT_EQ(hd::matmul_q8(99, w, 36, 4, 64, a, 1, y, 4, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(hd::matmul_q8(raw(DType::Q4_0), w, 36, 4, 64, a, 1, y, 4, nullptr, 2), cudaErrorInvalidValue);  // prefill kernel
  EXPECT_EQ(hd::matmul_q8(raw(DType::Q4_0), w, 36, 0, 64, a, 1, y, 4, nullptr), cudaSuccess);  // no rows
  EXPECT_EQ(hd::matmul_q8(raw(DType::Q4_0), w, 36, 4, 64, a, 0, y, 4, nullptr), cudaSuccess);  // no tokens
  EXPECT_EQ(hd::matmul_f(raw(DType::Q8_0), w, 34, 4, 32, y, 32, 1, y, 4, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(hd::matmul_f(raw(DType::F16), w, 64, 4, 32, y, 31, 1, y, 4, nullptr), cudaErrorInvalidValue);  // ldx < cols
  EXPECT_EQ(hd::matmul_f(raw(DType::F16), w, 64, 4, 32, y, 32, 0, y, 4, nullptr), cudaSuccess);
  EXPECT_EQ(hd::quantize_act(y, 1, 48, 48, hd::kActF16x32, a, nullptr), cudaErrorInvalidValue);  // cols % 32
  EXPECT_EQ(hd::quantize_act(y, 1, 64, 64, 3, a, nullptr), cudaErrorInvalidValue);               // unknown mode
  EXPECT_EQ(hd::quantize_act(y, 0, 64, 64, hd::kActF16x32, a, nullptr), cudaSuccess);
  const auto* ids = reinterpret_cast<const int32_t*>(16);
  EXPECT_EQ(hd::get_rows(raw(DType::Q4_0), w, 18, 48, ids, 1, y, 48, nullptr), cudaErrorInvalidValue);  // cols % 32
  EXPECT_EQ(hd::get_rows(raw(DType::Q4_0), w, 18, 32, ids, 1, y, 31, nullptr), cudaErrorInvalidValue);  // ldo < cols
  EXPECT_EQ(hd::get_rows(raw(DType::Q4_0), w, 18, 32, ids, 0, y, 32, nullptr), cudaSuccess);
  for (const auto& d : kDTypes) EXPECT_EQ(hd::has_q8_kernel(raw(d.type)), d.block_size >= 32) << d.name;
  // The Q8 buffer view: parts where q8_act_bytes placed them.
  alignas(16) static uint8_t buf[4096];
  const hd::DeviceQ8Act v = hd::q8_act_view(buf, 3, 64);
  EXPECT_EQ(reinterpret_cast<uint8_t*>(v.q), buf);
  EXPECT_EQ(v.ldq, 64);
  EXPECT_EQ(v.ldd, 2);
  EXPECT_EQ(v.lds, 4);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v.d) % 16, 0u);
  EXPECT_GE(reinterpret_cast<uint8_t*>(v.d), buf + 3 * 64);
  EXPECT_GE(reinterpret_cast<uint8_t*>(v.s), reinterpret_cast<uint8_t*>(v.d + 3 * 2));
  EXPECT_LE(reinterpret_cast<uint8_t*>(v.s + 3 * 4), buf + hd::q8_act_bytes(3, 64));
}

}  // namespace
}  // namespace herd
