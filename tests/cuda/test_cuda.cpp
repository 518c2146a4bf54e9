// The CUDA backend on a GPU ([cuda]): every op × type against the reference backend with bounds
// from the math, teacher-forced replay of ../shared/reference, and repeated runs giving the same
// bits. Built with HERD_CUDA; on a host without a CUDA device every test skips with the reason
// (CI has none: what is proved there is tests/kernels/test_cuda_* and tests/engine/test_device_seam).
// scripts/gpu-check.sh runs this on a GPU machine.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "coordinator/logits_file.h"
#include "coordinator/remote_pipeline.h"
#include "coordinator/replay.h"
#include "engine/pipeline.h"
#include "engine/tp_pipeline.h"
#if defined(HERD_HAVE_NCCL)
#include "engine/nccl_comm.h"
#endif
#include "kernels/cpu/reference_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device.h"
#include "kernels/fp16.h"
#include "kernels/quant.h"
#include "model/gguf.h"
#include "tests/integration/cluster_util.h"
#include "tests/test_paths.h"

namespace herd {
namespace {

constexpr double kU = 1.0 / (1 << 24);

class Cuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device on this host (no driver or no GPU)";
    be_ = make_cuda_backend({0});
  }
  // Host vector -> device buffer, and back.
  Buffer up(const void* p, size_t bytes) {
    Buffer b = be_->alloc(bytes);
    be_->copy_in(b.data(), p, bytes);
    return b;
  }
  Buffer up(const std::vector<float>& v) { return up(v.data(), v.size() * sizeof(float)); }
  std::vector<float> down(const Buffer& b, size_t n) {
    std::vector<float> v(n);
    be_->copy_out(v.data(), b.data(), n * sizeof(float));
    return v;
  }
  std::unique_ptr<Backend> be_;
};

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

// A matrix of type t with random values, and its dequantized values (what every backend multiplies).
struct Matrix {
  DType t;
  int64_t rows, cols;
  std::vector<uint8_t> bytes;
  std::vector<float> deq;
  WeightMatrix view() const {
    return WeightMatrix{t, bytes.data(), rows, cols, row_bytes(t, cols)};
  }
};

Matrix make_matrix(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  Matrix m{t, rows, cols, {}, {}};
  const auto src = randn(static_cast<size_t>(rows * cols), seed, 0.5f);
  const size_t rb = row_bytes(t, cols);
  m.bytes.resize(rb * static_cast<size_t>(rows));
  m.deq.resize(src.size());
  for (int64_t r = 0; r < rows; ++r) {
    quantize_row(t, src.data() + r * cols, m.bytes.data() + r * rb, cols);
    dequantize_row(t, m.bytes.data() + r * rb, m.deq.data() + r * cols, cols);
  }
  return m;
}

const DType kAllTypes[] = {DType::F32, DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                           DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// Quantized types: activations rounded to 8 bits per 32 values (scale amax/127, f16-rounded for
// the 32-value formats, f32 per 256 for the K-quants, as the CPU fast path): each x moves by at
// most d/2 (+ the f16 rounding of d times 127), so y moves by Σ_b err_b Σ_{i in b} |w_i|, plus the
// f32 products and sums, ~(cols/32 + 16) · 2u · Σ 4 max|w| amax. Float types: f32 summation order
// only (F16/BF16 round x first, as the reference does), (cols + 8) · 2u · Σ |w x|.
double matmul_bound(DType t, const float* w, const float* x, int64_t cols) {
  if (t == DType::F32 || t == DType::F16 || t == DType::BF16) {
    double mag = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float xs = t == DType::F16 ? f16_to_f32(f32_to_f16(x[c])) : t == DType::BF16 ? bf16_to_f32(f32_to_bf16(x[c])) : x[c];
      mag += std::fabs(double(w[c]) * xs);
    }
    return 2.0 * static_cast<double>(cols + 8) * kU * mag + 1e-30;
  }
  const int64_t group = block_size(t) == 256 ? 256 : 32;
  double bound = 0;
  for (int64_t g = 0; g < cols / group; ++g) {
    float a = 0;
    for (int64_t i = 0; i < group; ++i) a = std::max(a, std::fabs(x[g * group + i]));
    // d rounded to f16 (32-value formats) is off by <= d · 2^-11, which moves each 127-level value by 127 times that.
    const double d = a / 127.0, err = d * (0.5 + 3e-5) + (group == 32 ? 127.0 * d * std::ldexp(1.0, -11) : 0.0);
    double sw = 0, mw = 0;
    for (int64_t i = 0; i < group; ++i) {
      sw += std::fabs(w[g * group + i]);
      mw = std::max(mw, double(std::fabs(w[g * group + i])));
    }
    bound += err * sw + static_cast<double>(cols / 32 + 16) * 2.0 * kU * 4.0 * mw * a * static_cast<double>(group);
  }
  return bound;
}

TEST_F(Cuda, MatmulEveryTypeWithinItsBound) {
  for (DType t : kAllTypes) {
    const int64_t cols = block_size(t) == 256 ? 512 : (block_size(t) == 32 ? 224 : 101);
    for (int64_t rows : {1, 37, 203})
      for (int64_t n : {1, 3, 9, 64}) {
        const Matrix m = make_matrix(t, rows, cols, 11);
        const int64_t ldx = cols + 3, ldy = rows + 5;
        const auto x = randn(static_cast<size_t>(n * ldx), 100 + static_cast<uint32_t>(n));
        std::vector<float> want(static_cast<size_t>(n * ldy), 0.0f);
        ReferenceBackend ref;
        ref.matmul(m.view(), x.data(), n, ldx, want.data(), ldy);
        WeightMatrix w = m.view();
        WeightMatrix* ws[] = {&w};
        be_->prepare_matmul(ws);
        const Buffer dx = up(x);
        const Buffer dy = up(std::vector<float>(static_cast<size_t>(n * ldy), -777.0f));
        be_->matmul(w, dx.as<float>(), n, ldx, dy.as<float>(), ldy);
        const auto got = down(dy, static_cast<size_t>(n * ldy));
        for (int64_t tk = 0; tk < n; ++tk) {
          for (int64_t r = 0; r < rows; ++r) {
            const double tol = matmul_bound(t, m.deq.data() + r * cols, x.data() + tk * ldx, cols);
            ASSERT_LE(std::fabs(double(got[tk * ldy + r]) - want[tk * ldy + r]), tol)
                << dtype_name(t) << " rows " << rows << " n " << n << " t " << tk << " r " << r;
          }
          for (int64_t r = rows; r < ldy; ++r) ASSERT_EQ(got[tk * ldy + r], -777.0f) << "padding written";
        }
      }
  }
}

TEST_F(Cuda, GetRowsIsDequantizeRow) {
  for (DType t : kAllTypes) {
    const int64_t cols = block_size(t) == 256 ? 256 : 64;
    const Matrix m = make_matrix(t, 50, cols, 3);
    const std::vector<int32_t> ids = {0, 49, 7, 7, 23};
    const Buffer out = up(std::vector<float>(ids.size() * cols, 0.0f));
    be_->get_rows(m.view(), ids.data(), static_cast<int64_t>(ids.size()), out.as<float>(), cols);
    const auto got = down(out, ids.size() * cols);
    for (size_t i = 0; i < ids.size(); ++i)
      ASSERT_EQ(0, std::memcmp(got.data() + i * cols, m.deq.data() + ids[i] * cols, cols * sizeof(float))) << dtype_name(t);
  }
}

TEST_F(Cuda, ActivationOpsWithinTheirBounds) {
  ReferenceBackend ref;
  for (int64_t dim : {1, 7, 64, 576, 4096}) {  // rmsnorm: (dim + 16) u relative
    const int64_t rows = 3, ld = dim + 5;
    const auto x = randn(static_cast<size_t>(rows * ld), 1 + static_cast<uint32_t>(dim));
    const auto w = randn(static_cast<size_t>(dim), 2);
    std::vector<float> a(x.size(), 0.0f);
    ref.rmsnorm(x.data(), ld, w.data(), rows, dim, 1e-5f, a.data(), ld);
    const Buffer dx = up(x), dout = up(std::vector<float>(x.size(), 0.0f));
    be_->rmsnorm(dx.as<float>(), ld, be_->resident(w.data(), w.size()), rows, dim, 1e-5f, dout.as<float>(), ld);
    const auto b = down(dout, x.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < dim; ++i)
        ASSERT_LE(std::fabs(b[r * ld + i] - a[r * ld + i]), std::fabs(a[r * ld + i]) * (dim + 16) * kU + 1e-37)
            << "rmsnorm dim " << dim;
  }
  const int64_t n = 100003;  // silu·mul: 16 u relative; add: one rounding, identical
  const auto g = randn(n, 3, 4.0f), u = randn(n, 4);
  std::vector<float> a(n);
  ref.silu_mul(g.data(), u.data(), a.data(), n);
  const Buffer dg = up(g), du = up(u), dout = up(std::vector<float>(n));
  be_->silu_mul(dg.as<float>(), du.as<float>(), dout.as<float>(), n);
  auto b = down(dout, n);
  for (int64_t i = 0; i < n; ++i) ASSERT_LE(std::fabs(double(b[i]) - a[i]), std::fabs(double(a[i])) * 16 * kU + 1e-37);
  ref.add(g.data(), u.data(), a.data(), n);
  be_->add(dg.as<float>(), du.as<float>(), dout.as<float>(), n);
  EXPECT_EQ(down(dout, n), a);
}

TEST_F(Cuda, RopeBothModesWithFactorsWithinF32) {
  ReferenceBackend ref;
  const int64_t n_tokens = 5, n_heads = 3, head_dim = 16, ld = n_heads * head_dim + 4;
  const std::vector<float> factors = {1.0f, 1.5f, 2.0f, 4.0f, 8.0f, 0.5f, 3.0f, 1.25f};
  const int32_t pos[n_tokens] = {0, 1, 7, 300, 4095};
  for (RopeMode mode : {RopeMode::Normal, RopeMode::Neox})
    for (int64_t n_rot : {int64_t{16}, int64_t{12}})
      for (bool ff : {false, true}) {
        RopeParams p;
        p.mode = mode;
        p.n_rot = n_rot;
        p.freq_base = 500000.0f;
        p.freq_scale = 0.25f;
        p.freq_factors = ff ? factors.data() : nullptr;
        auto a = randn(static_cast<size_t>(n_tokens * ld), 11);
        const Buffer dx = up(a);
        ref.rope(a.data(), n_tokens, ld, n_heads, head_dim, pos, p);
        RopeParams pd = p;
        if (ff) pd.freq_factors = be_->resident(factors.data(), factors.size());
        be_->rope(dx.as<float>(), n_tokens, ld, n_heads, head_dim, pos, pd);
        const auto b = down(dx, a.size());
        // If the GPU forms the angle pos·freq_scale·θ_i in f32 (θ_i <= 1, divided by a factor >= 0.5):
        // |Δangle| <= 4u·|angle|, so a rotated value moves by <= that times the pair's norm
        // (<= √2 max|x|), plus 8u of it for the products and the sum.
        const auto x0 = randn(static_cast<size_t>(n_tokens * ld), 11);
        for (int64_t t = 0; t < n_tokens; ++t)
          for (size_t i = 0; i < static_cast<size_t>(ld); ++i) {
            double xmax = 0;
            for (int64_t j = 0; j < ld; ++j) xmax = std::max(xmax, double(std::fabs(x0[t * ld + j])));
            const double angle = std::fabs(double(pos[t])) * p.freq_scale * 2.0;
            const double tol = (4.0 * angle + 8.0) * kU * std::sqrt(2.0) * xmax;
            ASSERT_LE(std::fabs(double(b[t * ld + i]) - a[t * ld + i]), tol)
                << "mode " << int(mode) << " n_rot " << n_rot << " ff " << ff << " t " << t << " i " << i;
          }
      }
}

// Attention over KV rows stored as F32, F16 or Q8_0 (the KV cache's types), GQA, causal, split-K
// for a long context: the bound of tests/kernels/simd_test_bodies.h (ops_attention_gqa_causal_
// strided), on the converted keys and values the reference sees.
TEST_F(Cuda, AttentionEveryKvTypeWithinItsBound) {
  ReferenceBackend ref;
  for (DType kv : {DType::F32, DType::F16, DType::Q8_0})
    for (int64_t n_kv_extra : {int64_t{31}, int64_t{3000}})
      for (int64_t n_tokens : {1, 4}) {
        const int64_t hd = 64;
        const AttentionShape s{n_tokens, 6, 2, hd, n_kv_extra + n_tokens};
        const int64_t kvd = s.n_kv_heads * hd, ldq = s.n_heads * hd;
        const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
        const auto q = randn(static_cast<size_t>(n_tokens * ldq), 5, 2.0f);
        const auto k = randn(static_cast<size_t>(s.n_kv * kvd), 6, 2.0f);
        const auto v = randn(static_cast<size_t>(s.n_kv * kvd), 7);
        const size_t rb = row_bytes(kv, kvd);
        std::vector<uint8_t> kb(rb * static_cast<size_t>(s.n_kv)), vb(kb.size());
        ref.store_rows(k.data(), s.n_kv, kvd, kvd, kv, kb.data(), rb);
        ref.store_rows(v.data(), s.n_kv, kvd, kvd, kv, vb.data(), rb);
        std::vector<float> a(static_cast<size_t>(n_tokens * ldq), 0.0f);
        ref.attention_rows(q.data(), ldq, {kv, kb.data(), rb}, {kv, vb.data(), rb}, s, scale, a.data(), ldq);
        const Buffer dq = up(q), dk = up(kb.data(), kb.size()), dv = up(vb.data(), vb.size());
        const Buffer dout = up(std::vector<float>(a.size(), 0.0f));
        be_->attention_rows(dq.as<float>(), ldq, {kv, dk.data(), rb}, {kv, dv.data(), rb}, s, scale, dout.as<float>(), ldq);
        const auto b = down(dout, a.size());
        std::vector<float> kf(static_cast<size_t>(s.n_kv * kvd)), vf(kf.size());
        ref.load_rows(kb.data(), rb, s.n_kv, kvd, kv, kf.data(), kvd);
        ref.load_rows(vb.data(), rb, s.n_kv, kvd, kv, vf.data(), kvd);
        const int64_t group = s.n_heads / s.n_kv_heads;
        for (int64_t t = 0; t < n_tokens; ++t)
          for (int64_t h = 0; h < s.n_heads; ++h) {
            const int64_t kvh = h / group, n_vis = s.n_kv - n_tokens + t + 1;
            double eps_max = 0, smax = -1e300, vmax = 0;
            std::vector<double> sc(static_cast<size_t>(n_vis));
            for (int64_t j = 0; j < n_vis; ++j) {
              double dot = 0, mag = 0;
              for (int64_t i = 0; i < hd; ++i) {
                const double p = double(q[t * ldq + h * hd + i]) * kf[j * kvd + kvh * hd + i];
                dot += p;
                mag += std::fabs(p);
                vmax = std::max(vmax, double(std::fabs(vf[j * kvd + kvh * hd + i])));
              }
              sc[j] = dot * scale;
              eps_max = std::max(eps_max, (hd + 8) * kU * scale * mag + kU * std::fabs(sc[j]));
              smax = std::max(smax, sc[j]);
            }
            double spread = 0;
            for (double x : sc) spread = std::max(spread, smax - x);
            const double delta = 2 * eps_max + kU * spread + 4 * kU;
            const double tol = vmax * (2 * delta + 2 * (n_vis + 4) * kU) * 2.0;  // x2: the split-K merge rescales once more
            for (int64_t i = 0; i < hd; ++i)
              ASSERT_LE(std::fabs(double(b[t * ldq + h * hd + i]) - a[t * ldq + h * hd + i]), tol)
                  << dtype_name(kv) << " n_kv " << s.n_kv << " n_tokens " << n_tokens << " t " << t << " h " << h;
          }
      }
}

TEST_F(Cuda, StoreAndLoadRowsAreTheKvCacheFormats) {
  ReferenceBackend ref;
  const int64_t n = 7, cols = 256;
  const auto x = randn(static_cast<size_t>(n * cols), 9);
  for (DType kv : {DType::F32, DType::F16, DType::Q8_0}) {
    const size_t rb = row_bytes(kv, cols);
    std::vector<uint8_t> want(rb * n);
    ref.store_rows(x.data(), n, cols, cols, kv, want.data(), rb);
    const Buffer dx = up(x);
    Buffer dst = be_->alloc(rb * n);
    be_->store_rows(dx.as<float>(), n, cols, cols, kv, dst.data(), rb);
    std::vector<uint8_t> got(rb * n);
    be_->copy_out(got.data(), dst.data(), got.size());
    EXPECT_EQ(got, want) << dtype_name(kv);
    const Buffer back = up(std::vector<float>(x.size(), 0.0f));
    be_->load_rows(dst.data(), rb, n, cols, kv, back.as<float>(), cols);
    std::vector<float> deq(x.size());
    ref.load_rows(want.data(), rb, n, cols, kv, deq.data(), cols);
    EXPECT_EQ(down(back, x.size()), deq) << dtype_name(kv);
  }
}

LogitsFile replay_on_gpu(const std::string& model_file, const LogitsFile& ref) {
  auto f = model::GgufFile::open(test::model_path(model_file));
  const auto cfg = model::load_config(*f);
  auto be = make_cuda_backend({0});
  LocalPipeline pipe(*f, cfg, *be, static_cast<int64_t>(ref.rows.size()) + 8);
  return replay_logits(pipe, replay_tokens(ref, model_file), ref.n_prompt);
}

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// As tests/kernels/test_simd_replay.cpp: F32 weights within 1e-3 of llama.cpp with every argmax
// equal; quantized weights (8-bit activations, as llama.cpp's own quantized runs) within 0.35 and
// argmax equal on >= 90% of rows.
TEST_F(Cuda, TeacherForcedReplayOfTheSharedReferences) {
  struct Case {
    const char* model;
    const char* dump;
    double tol;
    double argmax_share;
  };
  const Case cases[] = {{"stories260K.gguf", "stories260K.p0.log1", 1e-3, 1.0},
                        {"randk-Q4_0.gguf", "randk-Q4_0.p0.log1", 0.35, 0.9},
                        {"randk-Q4_K_M.gguf", "randk-Q4_K_M.p0.log1", 0.35, 0.9},
                        {"randk-Q6_K.gguf", "randk-Q6_K.p0.log1", 0.35, 0.9},
                        {"rand15M-q8_0.gguf", "rand15M-q8_0.p0.log1", 0.35, 0.9}};
  for (const Case& c : cases) {
    HERD_REQUIRE_FILE(test::model_path(c.model));
    const LogitsFile ref = LogitsFile::read(test::reference_path(c.dump));
    const LogitsFile ours = replay_on_gpu(c.model, ref);
    ASSERT_EQ(ours.rows.size(), ref.rows.size()) << c.dump;
    double worst = 0;
    size_t equal = 0;
    for (size_t r = 0; r < ref.rows.size(); ++r) {
      double m = 0;
      for (size_t i = 0; i < ref.rows[r].logits.size(); ++i)
        m = std::max(m, std::fabs(double(ours.rows[r].logits[i]) - ref.rows[r].logits[i]));
      worst = std::max(worst, m);
      EXPECT_LE(m, c.tol) << c.dump << " row " << r;
      equal += argmax(ours.rows[r].logits) == argmax(ref.rows[r].logits);
    }
    std::printf("cuda %s: %zu rows, max |delta logit| %.3e, argmax equal %zu/%zu\n", c.dump, ref.rows.size(), worst,
                equal, ref.rows.size());
    EXPECT_GE(static_cast<double>(equal), c.argmax_share * static_cast<double>(ref.rows.size())) << c.dump;
    // Same inputs, same bits.
    const LogitsFile again = replay_on_gpu(c.model, ref);
    for (size_t r = 0; r < ref.rows.size(); ++r) ASSERT_EQ(again.rows[r].logits, ours.rows[r].logits) << c.dump;
  }
}

// A decode pass recorded as a CUDA graph (HERD_CUDA_GRAPHS=1, kernels/cuda/graph_policy.h) runs
// the same kernels on the same buffers: the same bits as direct launches, step after step.
TEST_F(Cuda, GraphsGiveTheBitsOfDirectLaunches) {
  for (const char* model : {"stories260K.gguf", "randk-Q4_K_M.gguf"}) {
    HERD_REQUIRE_FILE(test::model_path(model));
    const std::string dump = std::string(model).substr(0, std::string(model).find(".gguf")) + ".p0.log1";
    const LogitsFile ref = LogitsFile::read(test::reference_path(dump));
    unsetenv("HERD_CUDA_GRAPHS");
    const LogitsFile direct = replay_on_gpu(model, ref);
    setenv("HERD_CUDA_GRAPHS", "1", 1);
    const LogitsFile graphs = replay_on_gpu(model, ref);
    unsetenv("HERD_CUDA_GRAPHS");
    ASSERT_EQ(direct.rows.size(), graphs.rows.size());
    for (size_t r = 0; r < direct.rows.size(); ++r)
      ASSERT_EQ(direct.rows[r].logits, graphs.rows[r].logits) << model << " row " << r;
  }
}

// Tensor parallelism across GPUs ([cuda] item 3 for [tensor]): rank r on cuda:r, the ranks joined
// by NcclComm bootstrapped over the in-process group, as `herd run --tp 2 --device cuda:0,cuda:1`
// runs it. F32 sync within 1e-4 of one GPU running the whole model with every argmax equal (the
// [tensor] acceptance: only where the shards' dot products are cut differs), and the same bits
// on a second run. NCCL joins one rank per GPU: a host with one GPU skips, saying so.
TEST_F(Cuda, TensorParallelOverNcclWithinOneE4OfOneGpu) {
#if !defined(HERD_HAVE_NCCL)
  GTEST_SKIP() << "this build has no NCCL";
#else
  const int gpus = static_cast<int>(cuda::list_devices().size());
  if (gpus < 2) GTEST_SKIP() << "needs 2 GPUs (NCCL joins one rank per GPU); this host has " << gpus;
  const char* model = "stories260K.gguf";
  HERD_REQUIRE_FILE(test::model_path(model));
  const LogitsFile ref = LogitsFile::read(test::reference_path("stories260K.p0.log1"));
  const LogitsFile one = replay_on_gpu(model, ref);
  auto f = model::GgufFile::open(test::model_path(model));
  const auto cfg = model::load_config(*f);
  auto run = [&](int ranks) {
    TpOptions o;
    o.n_ranks = ranks;
    o.make_backend = [](int r) { return make_cuda_backend({r}); };
    o.device_comm = [](Comm& over, Backend& be, std::string* error) -> std::unique_ptr<Comm> {
      return NcclComm::bootstrap(over, nccl_group_tag("test_cuda tp"), be.device().index, error, 30000);
    };
    TpPipeline pipe(*f, cfg, KvOptions{static_cast<int64_t>(ref.rows.size()) + 8, 1, DType::F32}, o);
    return replay_logits(pipe, replay_tokens(ref, model), ref.n_prompt);
  };
  for (int ranks = 2; ranks <= std::min(gpus, 3); ++ranks) {
    const LogitsFile tp = run(ranks);
    ASSERT_EQ(tp.rows.size(), one.rows.size());
    double worst = 0;
    for (size_t r = 0; r < one.rows.size(); ++r) {
      for (size_t i = 0; i < one.rows[r].logits.size(); ++i)
        worst = std::max(worst, std::fabs(double(tp.rows[r].logits[i]) - one.rows[r].logits[i]));
      EXPECT_EQ(argmax(tp.rows[r].logits), argmax(one.rows[r].logits)) << "tp " << ranks << " row " << r;
    }
    EXPECT_LE(worst, 1e-4) << "tp " << ranks;
    std::printf("cuda tp %d over nccl: max |delta logit| vs one GPU %.3e\n", ranks, worst);
    const LogitsFile again = run(ranks);
    for (size_t r = 0; r < tp.rows.size(); ++r) ASSERT_EQ(again.rows[r].logits, tp.rows[r].logits) << "tp " << ranks;
  }
#endif
}

// Pipelines of `herd worker --device cuda:N` processes (real workers on 127.0.0.1), greedy tokens
// against one process: two GPU workers whose hop goes GPU to GPU over NCCL (worker/device_hop.h;
// needs 2 GPUs: NCCL joins one rank per GPU), and a CPU worker before a GPU worker (the hop over
// the link, the GPU stage's input copied in).
std::vector<int32_t> greedy_tokens(Pipeline& p) { return test::greedy_with(p, {1, 403, 29, 118}, 24, {}); }

RemotePipelineOptions gpu_pipeline_options(std::vector<std::string> workers) {
  RemotePipelineOptions o;
  o.workers = std::move(workers);
  o.split = "0-2,3-4";
  o.isa = "scalar";
  o.exact = true;
  o.n_ctx = 256;
  o.model_path = test::model_path("stories260K.gguf");
  return o;
}

TEST_F(Cuda, TwoGpuWorkersOverAnNcclHopGiveOneGpusGreedyTokens) {
  const int gpus = static_cast<int>(cuda::list_devices().size());
  if (gpus < 2) GTEST_SKIP() << "needs 2 GPUs (a stage hop joins one NCCL rank per GPU); this host has " << gpus;
  HERD_REQUIRE_FILE(test::model_path("stories260K.gguf"));
  auto f = model::GgufFile::open(test::model_path("stories260K.gguf"));
  const auto cfg = model::load_config(*f);
  LocalPipeline one(*f, cfg, *be_, 256);  // the whole model on cuda:0 (stage splits are bit-exact)
  const auto want = greedy_tokens(one);
  test::WorkerProcess w0("*", {"--device", "cuda:0"}), w1("*", {"--device", "cuda:1"});
  RemotePipeline remote(*f, cfg, gpu_pipeline_options({w0.address(), w1.address()}));
  EXPECT_EQ(greedy_tokens(remote), want);
  EXPECT_NE(w0.child().err().find("over the device hop"), std::string::npos) << w0.child().err();
  EXPECT_NE(w1.child().err().find("over the device hop"), std::string::npos) << w1.child().err();
}

TEST_F(Cuda, ACpuWorkerThenAGpuWorkerGiveOneProcesssGreedyTokens) {
  HERD_REQUIRE_FILE(test::model_path("stories260K.gguf"));
  auto f = model::GgufFile::open(test::model_path("stories260K.gguf"));
  const auto cfg = model::load_config(*f);
  auto ref = make_reference_backend();
  LocalPipeline one(*f, cfg, *ref, 256);
  const auto want = greedy_tokens(one);
  test::WorkerProcess cpu("*", {}), gpu("*", {"--device", "cuda:0"});
  RemotePipeline remote(*f, cfg, gpu_pipeline_options({cpu.address(), gpu.address()}));
  EXPECT_EQ(greedy_tokens(remote), want);
  EXPECT_EQ(cpu.child().err().find("over the device hop"), std::string::npos) << "a CPU stage's hop is the link";
}

TEST_F(Cuda, AnAllocationBeyondTheGpuIsAClearError) {
  try {
    (void)be_->alloc(size_t(1) << 50);
    ADD_FAILURE() << "allocated a petabyte";
  } catch (const std::bad_alloc& e) {
    EXPECT_NE(std::string(e.what()).find("cannot allocate"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace herd
