// Model shapes against the GGUF tensor sizes (exact) and the published file sizes (named shapes).
#include <gtest/gtest.h>

#include "model/gguf.h"
#include "model/weights.h"
#include "partition/memory_model.h"
#include "partition/model_shape.h"
#include "partition/shapes.h"
#include "tests/test_paths.h"

namespace herd::partition {
namespace {

void expect_exact(const std::string& path) {
  HERD_REQUIRE_FILE(path);
  auto f = model::GgufFile::open(path, {.map_all = false});
  const model::ModelConfig c = model::load_config(*f);
  const ModelShape m = shape_from_gguf(*f, c);
  ASSERT_EQ(m.n_layers(), c.n_layers);
  // Every contiguous range, as every stage of every plan sees it.
  for (int64_t a = 0; a < c.n_layers; ++a)
    for (int64_t b = a + 1; b <= c.n_layers; ++b)
      ASSERT_EQ(m.stage_bytes(a, b), model::stage_weight_bytes(*f, c, {a, b, a == 0, b == c.n_layers}))
          << path << " layers " << a << ".." << b;
  // The whole model is every tensor of the file.
  uint64_t all = 0;
  for (const auto& t : f->tensors()) all += t.n_bytes;
  EXPECT_EQ(m.total_bytes(), all);
}

TEST(ModelShape, ExactBytesStories260K) { expect_exact(test::model_path("stories260K.gguf")); }
TEST(ModelShape, ExactBytesStories260KQ4KM) { expect_exact(test::model_path("stories260K-Q4_K_M.gguf")); }
TEST(ModelShape, ExactBytesSmolLM2TiedEmbeddings) { expect_exact(test::smollm2_path()); }

TEST(ModelShape, SmolLM2MemoryNumbers) {
  HERD_REQUIRE_FILE(test::smollm2_path());
  auto f = model::GgufFile::open(test::smollm2_path(), {.map_all = false});
  const model::ModelConfig c = model::load_config(*f);
  const ModelShape m = shape_from_gguf(*f, c);
  DeviceProfile d;
  d.name = "x";
  d.free_bytes = d.total_bytes = 8ull << 30;
  d.overhead_bytes = 100;
  PlanOptions o;
  o.n_ctx = 1024;
  o.n_parallel = 3;
  const StageMemory s = stage_memory(m, d, 10, 20, o);
  // K and V, f32, 10 layers, kv_dim = 3 heads x 64.
  EXPECT_EQ(c.kv_dim(), 192);
  EXPECT_EQ(s.kv, 2ull * 4 * 10 * 1024 * 192 * 3);
  EXPECT_EQ(s.weights, model::stage_weight_bytes(*f, c, {10, 20, false, false}));
  EXPECT_EQ(s.overhead, 100u);
  EXPECT_GE(s.margin, 64ull << 20);
  // The last stage holds token_embd again (tied) and the logits buffer.
  const StageMemory last = stage_memory(m, d, 20, 30, o);
  EXPECT_EQ(last.weights, model::stage_weight_bytes(*f, c, {20, 30, false, true}));
  EXPECT_EQ(last.weights - s.weights, f->find_tensor("token_embd.weight")->n_bytes + f->find_tensor("output_norm.weight")->n_bytes);
  EXPECT_EQ(last.scratch - s.scratch, 4ull * c.n_vocab * 3);
  o.kv_elem_bytes = 2;
  EXPECT_EQ(stage_memory(m, d, 10, 20, o).kv, s.kv / 2);
}

TEST(ModelShape, NamedShapesMatchPublishedSizes) {
  // Published GGUF file sizes (bartowski / QuantFactory / TheBloke, decimal GB); our mix
  // approximation must land within 2%.
  struct Case {
    const char* shape;
    const char* type;
    double gb;
  } cases[] = {
      {"llama3-8b", "Q4_K_M", 4.92},   {"llama3-8b", "Q8_0", 8.54},     {"llama3-70b", "Q4_K_M", 42.52},
      {"llama3.1-405b", "Q4_K_M", 243.1}, {"tinyllama-1.1b", "Q4_K_M", 0.669}, {"llama3-8b", "F16", 16.07},
      {"llama3-8b", "Q2_K", 3.17},     {"llama3-8b", "Q3_K_S", 3.66},   {"llama3-8b", "Q3_K_M", 4.01},
      {"llama3-8b", "Q3_K_L", 4.32},
  };
  for (const auto& k : cases) {
    const ModelShape m = shape_from_name(k.shape, k.type);
    EXPECT_NEAR(static_cast<double>(m.total_bytes()) / 1e9, k.gb, 0.02 * k.gb) << k.shape << " " << k.type;
  }
}

TEST(ModelShape, NamedShapeHyperParameters) {
  auto s = find_shape("Llama-3.1-405B");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->n_layers, 126);
  EXPECT_EQ(s->n_embd, 16384);
  EXPECT_EQ(s->n_ff, 53248);
  EXPECT_EQ(s->n_heads, 128);
  EXPECT_EQ(s->n_kv_heads, 8);
  EXPECT_EQ(s->n_vocab, 128256);
  const auto c = shape_config(*find_shape("stories110m"));
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_FALSE(c.tied_embeddings);
  // Plain types are exact: F16 stories110M = 2 bytes per matrix weight + f32 norms.
  const ModelShape m = shape_from_name("stories110m", "F16");
  const uint64_t per_layer = 2ull * (4 * 768 * 768 + 3 * 768 * 2048) + 4ull * 2 * 768;
  EXPECT_EQ(m.layer_bytes[5], per_layer);
  EXPECT_EQ(m.total_bytes(), 12 * per_layer + 2ull * 2 * 32000 * 768 + 4ull * 768);
  EXPECT_FALSE(find_shape("gpt-5"));
  EXPECT_THROW(shape_from_name("gpt-5", "Q4_0"), std::invalid_argument);
  EXPECT_THROW(shape_from_name("llama3-8b", "Q3_XXL"), std::invalid_argument);
}

}  // namespace
}  // namespace herd::partition
