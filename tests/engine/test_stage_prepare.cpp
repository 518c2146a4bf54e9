// A stage's prepared weights (Backend::prepare_matmul: on x86 the 16-row packed copies of Q4_0,
// Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K, after which the file pages they were copied from are dropped) change nothing
// observable: the mapping still reads the file's bytes, and the logits of a prompt and of a decode
// step are bit-identical to a stage whose backend prepares nothing (the kernels then repack each
// 16-row tile on the fly, the same arithmetic; the embedding rows come from the file).
#include <gtest/gtest.h>

#include <cctype>
#include <algorithm>
#include <cstring>
#include <span>
#include <filesystem>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "model/weights.h"
#include "tests/test_paths.h"
#include "engine/stage.h"

namespace herd {
namespace {

// Forwards every op to another backend but keeps the default prepare_matmul (prepares nothing).
class Unprepared : public Backend {
 public:
  explicit Unprepared(Backend& b) : b_(b) {}
  std::string name() const override { return b_.name(); }
  bool supports(Op op, DType t) const override { return b_.supports(op, t); }
  void set_threads(int n) override { b_.set_threads(n); }
  void matmul(const WeightMatrix& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy) override {
    b_.matmul(w, x, n, ldx, y, ldy);
  }
  void get_rows(const WeightMatrix& w, const int32_t* ids, int64_t n, float* out, int64_t ldo) override {
    b_.get_rows(w, ids, n, out, ldo);
  }
  void rmsnorm(const float* x, int64_t ldx, const float* w, int64_t n, int64_t dim, float eps, float* out,
               int64_t ldo) override {
    b_.rmsnorm(x, ldx, w, n, dim, eps, out, ldo);
  }
  void rope(float* x, int64_t n, int64_t ld, int64_t heads, int64_t hd, const int32_t* pos,
            const RopeParams& p) override {
    b_.rope(x, n, ld, heads, hd, pos, p);
  }
  void softmax(float* x, int64_t n) override { b_.softmax(x, n); }
  void attention(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv, const AttentionShape& s,
                 float scale, float* out, int64_t ldo) override {
    b_.attention(q, ldq, k, v, ldkv, s, scale, out, ldo);
  }
  void silu_mul(const float* g, const float* u, float* out, int64_t n) override { b_.silu_mul(g, u, out, n); }
  void add(const float* a, const float* b, float* out, int64_t n) override { b_.add(a, b, out, n); }

 private:
  Backend& b_;
};

class StagePrepare : public ::testing::TestWithParam<std::string> {};

TEST_P(StagePrepare, SameBitsAndFileBytesAfterPageRelease) {
  const std::string path = GetParam();
  HERD_REQUIRE_FILE(path);
  auto f = model::GgufFile::open(path);
  const auto cfg = model::load_config(*f);
  const model::LayerRange all{0, cfg.n_layers, true, true};
  const auto w = model::load_stage_weights(*f, cfg, all);
  ASSERT_TRUE(w.file_mapped);
  const WeightMatrix& wq = w.layers[0].wq;  // a matrix the x86 backends pack for these types
  const size_t wq_bytes = static_cast<size_t>(wq.rows) * wq.row_stride;
  const auto* wq_data = static_cast<const uint8_t*>(wq.data);
  const std::vector<uint8_t> wq_before(wq_data, wq_data + wq_bytes);

  auto be = make_cpu_backend();
  be->set_threads(2);
  Stage prepared(cfg, model::load_stage_weights(*f, cfg, all), *be, KvOptions{32});
  EXPECT_EQ(0, std::memcmp(wq_data, wq_before.data(), wq_bytes)) << "mapping changed after the page release";
  Unprepared plain_be(*be);
  Stage plain(cfg, model::load_stage_weights(*f, cfg, all), plain_be, KvOptions{32});

  std::vector<int32_t> tokens;
  for (int32_t i = 0; i < 13; ++i) tokens.push_back((7 * i + 3) % static_cast<int32_t>(cfg.n_vocab));
  std::vector<float> a, b;
  prepared.forward(tokens.data(), nullptr, 12, 0, true, a);  // prompt (a batch)
  plain.forward(tokens.data(), nullptr, 12, 0, true, b);
  ASSERT_EQ(a.size(), static_cast<size_t>(12 * cfg.n_vocab));
  EXPECT_EQ(a, b) << be->name();
  prepared.forward(tokens.data() + 12, nullptr, 1, 12, false, a);  // one decode step
  plain.forward(tokens.data() + 12, nullptr, 1, 12, false, b);
  EXPECT_EQ(a, b) << be->name();
}

// Backend::packed_layout's contract (what the streamed weights of worker/streamed_weights.cpp rely
// on to write a packed copy a slab at a time): it names the layout and size prepare_matmul makes,
// and the copy of rows [r0, r1) (r0 a multiple of group_rows) is bytes r0 / group_rows * G.. of
// the whole copy. Checked on every matrix of layer 0 and the output, in slabs of 3 groups.
TEST_P(StagePrepare, PackedLayoutSaysWhatPrepareMakesAndSlabsAreItsParts) {
  const std::string path = GetParam();
  HERD_REQUIRE_FILE(path);
  auto f = model::GgufFile::open(path);
  const auto cfg = model::load_config(*f);
  auto w = model::load_stage_weights(*f, cfg, model::LayerRange{0, 1, true, cfg.n_layers == 1});
  auto out = model::load_stage_weights(*f, cfg, model::LayerRange{cfg.n_layers - 1, cfg.n_layers, false, true});
  auto be = make_cpu_backend();
  std::vector<WeightMatrix*> ms = layer_matmuls(w.layers[0], cfg.is_moe());
  ms.push_back(&out.output);
  int packed = 0;
  for (WeightMatrix* m : ms) {
    const PackedLayout pl = be->packed_layout(*m);
    WeightMatrix whole = *m;
    WeightMatrix* one = &whole;
    be->prepare_matmul(std::span<WeightMatrix* const>(&one, 1));
    if (pl.id == 0) {
      EXPECT_EQ(whole.packed.data, nullptr) << dtype_name(m->type) << ": prepared without a layout";
      continue;
    }
    ++packed;
    ASSERT_NE(whole.packed.data, nullptr) << dtype_name(m->type);
    ASSERT_EQ(whole.packed.layout, pl.id);
    ASSERT_EQ(whole.packed.size, pl.bytes);
    ASSERT_GT(pl.group_rows, 0);
    size_t at = 0;
    for (int64_t r0 = 0; r0 < m->rows; r0 += 3 * pl.group_rows) {
      WeightMatrix part = *m;
      part.data = static_cast<const uint8_t*>(m->data) + static_cast<size_t>(r0) * m->row_stride;
      part.rows = std::min(m->rows, r0 + 3 * pl.group_rows) - r0;
      WeightMatrix* p = &part;
      be->prepare_matmul(std::span<WeightMatrix* const>(&p, 1));
      ASSERT_NE(part.packed.data, nullptr);
      ASSERT_EQ(part.packed.size, be->packed_layout(part).bytes);
      ASSERT_LE(at + part.packed.size, whole.packed.size);
      ASSERT_EQ(0, std::memcmp(part.packed.data, whole.packed.data + at, part.packed.size))
          << dtype_name(m->type) << " rows " << r0 << "..";
      at += part.packed.size;
    }
    EXPECT_EQ(at, whole.packed.size);
  }
  if (be->name().find("avx") != std::string::npos) {
    EXPECT_GT(packed, 0) << "the x86 kernels pack these types";
  }
}

// SmolLM2 ties its output to token_embd (Q8_0 in this file): the stage shares the packed copy of
// the output with tok_embd, so the embedding lookups read it (KernelTableBackend::get_rows).
INSTANTIATE_TEST_SUITE_P(Models, StagePrepare,
                         ::testing::Values(test::model_path("randk-Q4_0.gguf"), test::model_path("randk-Q4_1.gguf"),
                                           test::model_path("randk-Q8_0.gguf"),
                                           test::model_path("randk-Q4_K_M.gguf"), test::model_path("randk-Q5_K_M.gguf"),
                                           test::smollm2_path()),
                         [](const auto& info) {
                           std::string n = std::filesystem::path(info.param).filename().string();
                           for (auto& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

}  // namespace
}  // namespace herd
