// Architectures ../shared has no dump for, checked against logits llama.cpp computed for tiny seeded
// models (tests/data/tiny-*.log1, scripts/gen-arch-reference.py): qwen2 (QKV bias, NEOX rope, GQA,
// rope base 1e6), llama with tied embeddings and linear rope scaling, qwen3 (per-head q/k norms,
// head_dim 32 so q_dim 128 != n_embd 64), qwen3moe (6 experts, 2 used, expert width 48 != 96),
// Mixtral-style llama (4 experts, 2 used) and qwen3moe in Q8_0. Plus the clear errors for an
// unsupported architecture and malformed files. MoE splits and batches: test_moe.cpp.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "coordinator/generator.h"
#include "coordinator/replay.h"
#include "engine/pipeline.h"
#include "engine/sampler.h"
#include "engine/stage.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/tokenizer.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "tests/logits_agreement.h"
#include "tests/test_paths.h"
#include "tests/tools/tiny_models.h"

namespace herd {
namespace {

std::string temp_file(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("herd-arch-" + std::to_string(getpid()) + "-" + name)).string();
}

// A tiny model against llama.cpp's logits for it, on one backend:
//   exact: the reference backend (scalar f32 math). F32 weights: llama.cpp ran the same math in
//     another summation order, ~n_embd · 2^-24 relative per dot product (measured: <= 1e-5 on
//     logits of magnitude <= 10), so max |Δlogit| <= 1e-4 and every row's argmax equal. Q8_0
//     weights are not run exact: llama.cpp's dump quantizes activations (its only Q8_0 path).
//   cpu: make_cpu_backend's default (the best ISA, 8-bit activations where the type has a kernel).
//     F32 weights have no 8-bit kernel: the same 1e-4. Q8_0: llama.cpp's q8_0 x q8_0 dot products
//     with the same activation blocks (f16 scale per 32), so the values agree up to summation order
//     (measured 5e-7 with AVX-512) unless an activation lands on the other side of an 8-bit
//     rounding boundary: one quantum (|x|max / 127 of a block) times weights of 0.25 moves a logit
//     by ~1e-3 at most after the norms, the tolerance the other tiny architectures had; argmax equal.
struct ArchCase {
  test::TinyModelSpec spec;
  bool exact;
};

std::vector<ArchCase> arch_cases() {
  std::vector<ArchCase> v;
  for (const auto& s : test::tiny_model_specs()) {
    if (s.matrices == DType::F32) v.push_back({s, true});
    v.push_back({s, false});
  }
  return v;
}

std::string case_name(const ::testing::TestParamInfo<ArchCase>& info) {
  std::string n = info.param.spec.name + (info.param.exact ? "_exact" : "_cpu");
  for (auto& c : n)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return n;
}

std::unique_ptr<Backend> backend_for(const ArchCase& c) {
  return c.exact ? make_reference_backend() : make_cpu_backend();
}

class TinyArch : public ::testing::TestWithParam<ArchCase> {};

TEST_P(TinyArch, MatchesLlamaCppLogits) {
  const auto& spec = GetParam().spec;
  const std::string path = temp_file(spec.name + ".gguf");
  test::write_tiny_model(spec, test::model_path("stories260K.gguf"), path);
  const LogitsFile ref = LogitsFile::read(std::string(HERD_SOURCE_DIR) + "/tests/data/tiny-" + spec.name + ".log1");
  ASSERT_EQ(replay_tokens(ref, spec.name), test::tiny_model_tokens()) << "reference made for other tokens";

  auto f = model::GgufFile::open(path);
  const auto cfg = model::load_config(*f);
  EXPECT_EQ(cfg.has_qkv_bias, spec.qkv_bias);
  EXPECT_EQ(cfg.has_qk_norm, spec.qk_norm);
  EXPECT_EQ(cfg.tied_embeddings, spec.tied);
  EXPECT_EQ(cfg.n_expert, spec.n_expert);
  EXPECT_EQ(cfg.n_expert_used, spec.n_expert_used);
  if (spec.n_expert > 0) {
    EXPECT_EQ(cfg.n_ff_exp, spec.n_ff_exp > 0 ? spec.n_ff_exp : cfg.n_ff);
  }
  if (spec.head_dim > 0) {
    EXPECT_NE(cfg.q_dim(), cfg.n_embd) << "the case of a head_dim of its own";
  }
  EXPECT_EQ(cfg.rope_mode, spec.arch == "llama" ? RopeMode::Normal : RopeMode::Neox);
  auto be = backend_for(GetParam());
  LocalPipeline pipe(*f, cfg, *be, 64);
  const LogitsFile ours = replay_logits(pipe, test::tiny_model_tokens(), ref.n_prompt);
  ASSERT_EQ(ours.rows.size(), ref.rows.size());
  const bool q8 = spec.matrices != DType::F32;
  const double tol = q8 ? 1e-3 : 1e-4;
  const test::LogitsAgreement a = test::compare_logits(ours, ref);
  for (size_t r = 0; r < a.row_max.size(); ++r) EXPECT_LE(a.row_max[r], tol) << spec.name << " row " << r;
  EXPECT_EQ(a.argmax_equal, ref.rows.size());
  std::printf("tiny-%s on %s: %zu rows, max |delta logit| %.3e, argmax equal %zu/%zu\n", spec.name.c_str(),
              be->name().c_str(), ref.rows.size(), a.worst, a.argmax_equal, ref.rows.size());
  std::filesystem::remove(path);
}

// Greedy decoding from the first kTinyPrompt tokens reproduces llama.cpp's ids
// (tests/data/tiny-NAME.greedy.log1: the prompt, then each generated id fed back).
// Made for the architectures added with them (qwen3, qwen3moe, Mixtral-style llama).
class TinyGreedy : public TinyArch {};

std::vector<ArchCase> greedy_cases() {
  std::vector<ArchCase> v;
  for (const ArchCase& c : arch_cases())
    if (c.spec.qk_norm || c.spec.n_expert > 0) v.push_back(c);
  return v;
}

TEST_P(TinyGreedy, IdsMatchLlamaCpp) {
  const auto& spec = GetParam().spec;
  const std::string dump = std::string(HERD_SOURCE_DIR) + "/tests/data/tiny-" + spec.name + ".greedy.log1";
  const LogitsFile ref = LogitsFile::read(dump);
  const std::vector<int32_t> fed = replay_tokens(ref, dump);
  ASSERT_EQ(ref.n_prompt, test::kTinyPrompt);
  std::vector<int32_t> expected(fed.begin() + ref.n_prompt, fed.end());
  const auto& last = ref.rows.back().logits;
  expected.push_back(static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin()));

  const std::string path = temp_file(spec.name + "-greedy.gguf");
  test::write_tiny_model(spec, test::model_path("stories260K.gguf"), path);
  auto f = model::GgufFile::open(path);
  const auto cfg = model::load_config(*f);
  auto tok = model::Tokenizer::from_gguf(*f);
  auto be = backend_for(GetParam());
  LocalPipeline pipe(*f, cfg, *be, 64);
  Generator gen(pipe, *tok);
  SamplerParams sp;
  sp.temperature = 0;
  Sampler sampler(sp, static_cast<int32_t>(cfg.n_vocab));
  const std::vector<int32_t> prompt(fed.begin(), fed.begin() + ref.n_prompt);
  const GenerationStats st = gen.generate(prompt, static_cast<int64_t>(expected.size()), sampler,
                                          [](const std::string&) { return true; });
  EXPECT_EQ(st.tokens, expected);
  std::filesystem::remove(path);
}

INSTANTIATE_TEST_SUITE_P(Variants, TinyArch, ::testing::ValuesIn(arch_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(Variants, TinyGreedy, ::testing::ValuesIn(greedy_cases()), case_name);

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
    EXPECT_NE(std::string(e.what()).find("unsupported architecture gptneox (supported: llama, qwen2, qwen3, qwen3moe)"),
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

const test::TinyModelSpec& spec_named(const std::string& name) {
  for (const auto& s : test::tiny_model_specs())
    if (s.name == name) return s;
  throw std::invalid_argument("no tiny model " + name);
}

// Splitting the MoE layers over 2 and 3 stages gives the bits of one stage (each stage runs the
// same ops on the same rows): exact and 8-bit paths, F32 and Q8_0 experts (packed expert views).
TEST(MoeSplit, BitIdenticalToOneStage) {
  for (const auto& [name, exact] : {std::pair{"qwen3moe", true}, std::pair{"qwen3moe", false},
                                    std::pair{"qwen3moe-q8", false}}) {
    const std::string path = temp_file(std::string(name) + "-split.gguf");
    test::write_tiny_model(spec_named(name), test::model_path("stories260K.gguf"), path);
    auto f = model::GgufFile::open(path);
    const auto cfg = model::load_config(*f);
    ASSERT_EQ(cfg.n_layers, 3);
    auto be = exact ? make_reference_backend() : make_cpu_backend();
    auto replay = [&](const std::string& split) {
      LocalPipeline pipe(*f, cfg, *be, 64, split.empty() ? std::vector<model::LayerRange>{} : parse_split(split, 3));
      return replay_logits(pipe, test::tiny_model_tokens(), test::kTinyPrompt);
    };
    const LogitsFile one = replay("");
    for (const char* split : {"0-0,1-2", "0-1,2-2", "0-0,1-1,2-2"}) {
      const LogitsFile many = replay(split);
      ASSERT_EQ(one.rows.size(), many.rows.size());
      for (size_t r = 0; r < one.rows.size(); ++r)
        ASSERT_EQ(0, std::memcmp(one.rows[r].logits.data(), many.rows[r].logits.data(),
                                 one.rows[r].logits.size() * sizeof(float)))
            << name << (exact ? " exact" : " cpu") << " split " << split << " row " << r;
    }
    std::filesystem::remove(path);
  }
}

// Routing ties go to the lower expert index: with a router of zeros every expert has p = 1/n, so
// experts 0 and 1 must be the ones chosen. The others are pointed at NaNs: choosing any of them
// would poison the logits.
TEST(MoeRouting, TiesGoToTheLowerExpertIndex) {
  const std::string path = temp_file("ties.gguf");
  test::write_tiny_model(spec_named("qwen3moe"), test::model_path("stories260K.gguf"), path);
  auto f = model::GgufFile::open(path);
  const auto cfg = model::load_config(*f);
  ASSERT_EQ(cfg.n_expert_used, 2);
  model::StageWeights w = model::load_stage_weights(*f, cfg, {0, cfg.n_layers, true, true});
  w.file_mapped = false;  // some matrices now point at our buffers
  const std::vector<float> zeros(static_cast<size_t>(cfg.n_expert * cfg.n_embd), 0.0f);
  const std::vector<float> nans(static_cast<size_t>(cfg.n_ff_exp * cfg.n_embd), std::nanf(""));
  for (auto& l : w.layers) {
    l.w_router.data = zeros.data();
    for (int64_t e = cfg.n_expert_used; e < cfg.n_expert; ++e)
      for (auto* m : {&l.e_gate[e], &l.e_up[e], &l.e_down[e]}) m->data = nans.data();
  }
  auto be = make_reference_backend();
  Stage stage(cfg, std::move(w), *be, KvOptions{16});
  std::vector<float> logits;
  const auto& toks = test::tiny_model_tokens();
  stage.forward(toks.data(), nullptr, 6, 0, true, logits);
  for (float v : logits) ASSERT_TRUE(std::isfinite(v)) << "an expert past the first two was chosen";
  std::filesystem::remove(path);
}

// What a malformed mixture of experts is refused with: the key or the tensor, named.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Arch, MoeExpertsUsedBeyondCountNamesTheKey) {
  test::TinyModelSpec spec = spec_named("mixtral");
  spec.n_expert_used = spec.n_expert + 1;
  const std::string path = temp_file("used.gguf");
  test::write_tiny_model(spec, test::model_path("stories260K.gguf"), path);
  auto f = model::GgufFile::open(path);
  EXPECT_NE(error_of([&] { model::load_config(*f); }).find("llama.expert_used_count = 5 is out of range"),
            std::string::npos)
      << error_of([&] { model::load_config(*f); });
  std::filesystem::remove(path);
}

TEST(Arch, MoeMissingExpertCountNamesTheKey) {
  test::TinyModelSpec spec = spec_named("qwen3");
  spec.arch = "qwen3moe";  // a qwen3moe file without expert_count
  const std::string path = temp_file("nocount.gguf");
  test::write_tiny_model(spec, test::model_path("stories260K.gguf"), path);
  auto f = model::GgufFile::open(path);
  EXPECT_NE(error_of([&] { model::load_config(*f); }).find("missing metadata key qwen3moe.expert_count"),
            std::string::npos);
  std::filesystem::remove(path);
}

TEST(Arch, MoeTensorErrorsNameTheTensor) {
  const std::string moe = temp_file("moe.gguf"), dense = temp_file("dense.gguf");
  test::write_tiny_model(spec_named("qwen3moe"), test::model_path("stories260K.gguf"), moe);
  test::write_tiny_model(spec_named("qwen3"), test::model_path("stories260K.gguf"), dense);
  const model::LayerRange all{0, 2, true, true};
  {
    auto f = model::GgufFile::open(moe);
    auto cfg = model::load_config(*f);
    cfg.n_ff_exp += 16;  // metadata promising wider experts than the file's tensors
    EXPECT_NE(error_of([&] { model::load_stage_weights(*f, cfg, all); })
                  .find("tensor blk.0.ffn_gate_exps.weight has shape [64, 48, 6], expected [64, 64, 6]"),
              std::string::npos)
        << error_of([&] { model::load_stage_weights(*f, cfg, all); });
    cfg = model::load_config(*f);
    cfg.n_expert = 8;  // more experts than the tensors hold: the router is the first to disagree
    EXPECT_NE(error_of([&] { model::load_stage_weights(*f, cfg, all); }).find("blk.0.ffn_gate_inp.weight"),
              std::string::npos);
  }
  {
    auto f = model::GgufFile::open(dense);
    auto cfg = model::load_config(*f);
    cfg.n_expert = 4;  // expert metadata on a file without a router or experts
    cfg.n_expert_used = 2;
    cfg.n_ff_exp = cfg.n_ff;
    EXPECT_NE(error_of([&] { model::load_stage_weights(*f, cfg, all); }).find("missing tensor blk.0.ffn_gate_inp.weight"),
              std::string::npos);
    EXPECT_NE(error_of([&] { model::stage_weight_bytes(*f, cfg, all); }).find("blk.0.ffn_gate_inp.weight"),
              std::string::npos);
  }
  std::filesystem::remove(moe);
  std::filesystem::remove(dense);
}

// A stage maps only its layers' tensors: the MoE names replace the dense ones, q/k norms join.
TEST(Arch, MoeStageTensorNames) {
  const std::string path = temp_file("names.gguf");
  test::write_tiny_model(spec_named("qwen3moe"), test::model_path("stories260K.gguf"), path);
  auto f = model::GgufFile::open(path);
  const auto cfg = model::load_config(*f);
  const auto names = model::stage_tensor_names(*f, cfg, {1, 2, false, false});
  auto has = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  for (const char* n : {"blk.1.ffn_gate_inp.weight", "blk.1.ffn_gate_exps.weight", "blk.1.ffn_up_exps.weight",
                        "blk.1.ffn_down_exps.weight", "blk.1.attn_q_norm.weight", "blk.1.attn_k_norm.weight"})
    EXPECT_TRUE(has(n)) << n;
  EXPECT_FALSE(has("blk.1.ffn_gate.weight"));
  EXPECT_FALSE(has("blk.0.ffn_gate_exps.weight"));
  EXPECT_FALSE(has("blk.2.ffn_gate_exps.weight"));
  EXPECT_EQ(names.size(), 12u);  // attn_norm q k v output ffn_norm, 2 q/k norms, router, 3 expert tensors
  uint64_t bytes = 0;
  for (const auto& n : names) bytes += f->find_tensor(n)->n_bytes;
  EXPECT_EQ(model::stage_weight_bytes(*f, cfg, {1, 2, false, false}), bytes);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace herd
