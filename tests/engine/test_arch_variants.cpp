// Architectures ../shared has no dump for, checked against logits llama.cpp computed for tiny seeded
// models (tests/data/tiny-*.log1): qwen2 (QKV bias, NEOX rope, GQA, rope base 1e6) and llama with
// tied embeddings and linear rope scaling. Plus the clear error for an unsupported architecture.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "engine/pipeline.h"
#include "coordinator/replay.h"
#include "kernels/backend.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "tests/test_paths.h"
#include "tests/tools/tiny_models.h"

namespace herd {
namespace {

std::string temp_file(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("herd-arch-" + std::to_string(getpid()) + "-" + name)).string();
}

class TinyArch : public ::testing::TestWithParam<test::TinyModelSpec> {};

TEST_P(TinyArch, MatchesLlamaCppLogits) {
  const auto& spec = GetParam();
  const std::string path = temp_file(spec.name + ".gguf");
  test::write_tiny_model(spec, test::model_path("stories260K.gguf"), path);
  const LogitsFile ref = LogitsFile::read(std::string(HERD_SOURCE_DIR) + "/tests/data/tiny-" + spec.name + ".log1");
  ASSERT_EQ(replay_tokens(ref, spec.name), test::tiny_model_tokens()) << "reference made for other tokens";

  auto f = model::GgufFile::open(path);
  const auto cfg = model::load_config(*f);
  EXPECT_EQ(cfg.has_qkv_bias, spec.qkv_bias);
  EXPECT_EQ(cfg.tied_embeddings, spec.tied);
  EXPECT_EQ(cfg.rope_mode, spec.arch == "qwen2" ? RopeMode::Neox : RopeMode::Normal);
  auto be = make_reference_backend();
  LocalPipeline pipe(*f, cfg, *be, 64);
  const LogitsFile ours = replay_logits(pipe, test::tiny_model_tokens(), ref.n_prompt);
  ASSERT_EQ(ours.rows.size(), ref.rows.size());
  for (size_t r = 0; r < ref.rows.size(); ++r) {
    double m = 0;
    size_t am_ref = 0, am_ours = 0;
    for (size_t i = 0; i < ref.rows[r].logits.size(); ++i) {
      m = std::max(m, std::fabs(static_cast<double>(ours.rows[r].logits[i]) - ref.rows[r].logits[i]));
      if (ref.rows[r].logits[i] > ref.rows[r].logits[am_ref]) am_ref = i;
      if (ours.rows[r].logits[i] > ours.rows[r].logits[am_ours]) am_ours = i;
    }
    EXPECT_LE(m, 1e-3) << spec.name << " row " << r;  // F32 weights: summation order only (~1e-5)
    EXPECT_EQ(am_ours, am_ref) << spec.name << " row " << r;
  }
  std::filesystem::remove(path);
}

INSTANTIATE_TEST_SUITE_P(Variants, TinyArch, ::testing::ValuesIn(test::tiny_model_specs()),
                         [](const auto& info) {
                           std::string n = info.param.name;
                           for (auto& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(Arch, UnsupportedArchitectureIsAClearError) {
  const std::string path = temp_file("neox.gguf");
  model::GgufWriter w;
  w.set_string("general.architecture", "gptneox");
  w.write(path);
  auto f = model::GgufFile::open(path);
  try {
    model::load_config(*f);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported architecture gptneox (supported: llama, qwen2)"),
              std::string::npos)
        << e.what();
  }
  std::filesystem::remove(path);
}

TEST(Arch, MissingHyperParameterNamesTheKey) {
  const std::string path = temp_file("nokey.gguf");
  model::GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 2);
  w.write(path);
  auto f = model::GgufFile::open(path);
  try {
    model::load_config(*f);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("llama.embedding_length"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

TEST(Arch, ShapeMismatchNamesTheTensor) {
  // A tiny llama whose attn_k has the wrong shape must be refused when its weights are loaded.
  const std::string good = temp_file("good.gguf");
  test::write_tiny_model(test::tiny_model_specs()[1], test::model_path("stories260K.gguf"), good);
  auto f = model::GgufFile::open(good);
  auto cfg = model::load_config(*f);
  cfg.n_kv_heads = cfg.n_heads;  // pretend the metadata promised full-size K/V
  try {
    model::load_stage_weights(*f, cfg, {0, cfg.n_layers, true, true});
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.attn_k.weight"), std::string::npos) << e.what();
  }
  std::filesystem::remove(good);
}

}  // namespace
}  // namespace herd
