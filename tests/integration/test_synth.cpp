// herd synth and herd bench as a user runs them, plus the in-process pieces they are built from
// (the seeded normal stream, the synthetic vocabulary, the type mixes).
#include <gtest/gtest.h>
#include <sys/statvfs.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "coordinator/model_session.h"
#include "coordinator/replay.h"
#include "engine/pipeline.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/quant.h"
#include "model/gguf.h"
#include "model/synth.h"
#include "tests/process.h"
#include "tests/test_paths.h"

namespace herd::test {
namespace {

ProcessResult herd(std::vector<std::string> args, double timeout_s = 300) {
  args.insert(args.begin(), herd_bin());
  return run_process(args, timeout_s);
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("herd-synth-" + std::to_string(getpid()) + "-" + name)).string();
}

struct TempFile {
  std::string path;
  explicit TempFile(const std::string& name) : path(temp_path(name)) {}
  ~TempFile() { std::filesystem::remove(path); }
};

ProcessResult synth(const std::string& type, const std::string& out, const std::string& seed = "1",
                    const std::string& threads = "0") {
  return herd({"synth", "--shape", "stories110m", "--layers", "2", "--type", type, "--out", out, "--seed", seed,
               "-t", threads, "-q"});
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// stories110m with 2 layers: d 768, ff 2048, vocab 32000; matrices in `base` (attn_v/ffn_down of
// layer l in more[l]), token_embd in `embd`, output in `out`, 5 f32 norms.
uint64_t predicted_bytes(DType base, DType more0, DType more1, DType embd, DType out) {
  const uint64_t d = 768, ff = 2048, v = 32000;
  auto m = [](DType t, uint64_t rows, uint64_t cols) { return rows * row_bytes(t, static_cast<int64_t>(cols)); };
  uint64_t b = m(embd, v, d) + m(out, v, d) + 5 * 4 * d;
  for (DType more : {more0, more1}) b += 3 * m(base, d, d) + m(more, d, d) + 2 * m(base, ff, d) + m(more, d, ff);
  return b;
}

void expect_file_layout(const std::string& path, uint64_t predicted) {
  auto f = model::GgufFile::open(path);
  uint64_t sum = 0, padded = 0;
  for (const auto& t : f->tensors()) sum += t.n_bytes, padded += align_up(t.n_bytes, f->alignment());
  EXPECT_EQ(sum, predicted);
  EXPECT_EQ(f->file_size(), f->data_offset() + padded) << "header + aligned tensors, nothing else";
  EXPECT_EQ(std::filesystem::file_size(path), f->file_size());
}

DType type_of(const model::GgufFile& f, const std::string& name) {
  const auto* t = f.find_tensor(name);
  EXPECT_NE(t, nullptr) << name;
  return t ? t->type : DType::F32;
}

TEST(Synth, NormalStreamHasUnitVarianceAndIsSeeded) {
  const int64_t n = 200000;
  std::vector<float> a(n), b(n), c(n);
  model::synth_normal_row(7, 3, 11, a.data(), n);
  model::synth_normal_row(7, 3, 11, b.data(), n);
  model::synth_normal_row(7, 3, 12, c.data(), n);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  double s = 0, s2 = 0, s4 = 0;
  for (float x : a) s += x, s2 += double(x) * x, s4 += double(x) * x * x * x;
  const double mean = s / n, var = s2 / n - mean * mean;
  // Standard errors: mean 1/sqrt(n) = 0.0022, variance sqrt(2/n) = 0.0032; allow 5 sigma.
  EXPECT_NEAR(mean, 0.0, 0.011);
  EXPECT_NEAR(var, 1.0, 0.016);
  // Sum of 4 uniforms: kurtosis 3 - 1.2/4 = 2.7 (a Gaussian has 3): it is bell-shaped, bounded at 2*sqrt(3).
  EXPECT_NEAR(s4 / n, 2.7, 0.1);
}

TEST(Synth, TypeMixes) {
  EXPECT_EQ(model::parse_type_mix("q4_k_m").base, DType::Q4_K);
  EXPECT_EQ(model::parse_type_mix("Q4_K_M").more_bits, DType::Q6_K);
  EXPECT_EQ(model::parse_type_mix("Q4_0").output, DType::Q6_K);
  EXPECT_EQ(model::parse_type_mix("Q8_0").output, DType::Q8_0);
  EXPECT_EQ(model::parse_type_mix("Q5_K_M").embd, DType::Q5_K);
  EXPECT_THROW(model::parse_type_mix("Q3_K"), std::invalid_argument);
  EXPECT_THROW(model::parse_type_mix("Q4_K"), std::invalid_argument);
  // llama.cpp's 2- and 3-bit mixes (llama_tensor_get_type, dense models): output Q6_K, and
  //   Q2_K:   base and token_embd Q2_K; attn_output, ffn_down Q3_K; attn_v Q3_K (Q4_K with n_gqa >= 4)
  //   Q3_K_S: everything Q3_K;  Q3_K_L: attn_v, attn_output, ffn_down Q5_K
  //   Q3_K_M: attn_output Q4_K; attn_v Q5_K in layers 0, 1, else Q4_K; ffn_down Q5_K in layers < n/16
  using model::MixRole;
  const auto q2 = model::parse_type_mix("q2_k"), q3s = model::parse_type_mix("Q3_K_S");
  const auto q3m = model::parse_type_mix("Q3_K_M"), q3l = model::parse_type_mix("Q3_K_L");
  EXPECT_EQ(q2.base, DType::Q2_K);
  EXPECT_EQ(q2.embd, DType::Q2_K);
  EXPECT_EQ(q2.output, DType::Q6_K);
  EXPECT_EQ(q2.file_type, 10u);
  EXPECT_EQ(q3s.file_type, 11u);
  EXPECT_EQ(q3m.file_type, 12u);
  EXPECT_EQ(q3l.file_type, 13u);
  EXPECT_EQ(model::layer_matrix_type(q2, MixRole::AttnV, 5, 32, 1), DType::Q3_K);
  EXPECT_EQ(model::layer_matrix_type(q2, MixRole::AttnV, 5, 32, 4), DType::Q4_K);
  EXPECT_EQ(model::layer_matrix_type(q2, MixRole::AttnOutput, 5, 32, 4), DType::Q3_K);
  EXPECT_EQ(model::layer_matrix_type(q2, MixRole::FfnDown, 0, 32, 1), DType::Q3_K);
  for (MixRole role : {MixRole::AttnV, MixRole::AttnOutput, MixRole::FfnDown}) {
    EXPECT_EQ(model::layer_matrix_type(q3s, role, 0, 32, 1), DType::Q3_K);
    EXPECT_EQ(model::layer_matrix_type(q3l, role, 9, 32, 1), DType::Q5_K);
  }
  EXPECT_EQ(model::layer_matrix_type(q3m, MixRole::AttnV, 1, 32, 1), DType::Q5_K);
  EXPECT_EQ(model::layer_matrix_type(q3m, MixRole::AttnV, 2, 32, 1), DType::Q4_K);
  EXPECT_EQ(model::layer_matrix_type(q3m, MixRole::FfnDown, 1, 32, 1), DType::Q5_K);
  EXPECT_EQ(model::layer_matrix_type(q3m, MixRole::FfnDown, 2, 32, 1), DType::Q4_K);
  EXPECT_EQ(model::layer_matrix_type(q3m, MixRole::AttnOutput, 0, 32, 1), DType::Q4_K);
  // The _M rule is unchanged: attn_output stays at the base type.
  EXPECT_EQ(model::layer_matrix_type(model::parse_type_mix("Q4_K_M"), MixRole::AttnOutput, 0, 32, 1), DType::Q4_K);
  // llama.cpp's rule over 32 layers: 0-3, 28-31 and every third of 4..27 (6, 9, ...): 16 of 32.
  int n = 0;
  for (int i = 0; i < 32; ++i) n += model::more_bits_layer(i, 32);
  EXPECT_EQ(n, 16);
}

TEST(Synth, Q4_0FileHasTheShapeTypesAndPredictedSize) {
  TempFile out("q4_0.gguf");
  auto r = synth("Q4_0", out.path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_file_layout(out.path, predicted_bytes(DType::Q4_0, DType::Q4_0, DType::Q4_0, DType::Q4_0, DType::Q6_K));
  auto f = model::GgufFile::open(out.path);
  EXPECT_EQ(type_of(*f, "token_embd.weight"), DType::Q4_0);
  EXPECT_EQ(type_of(*f, "output.weight"), DType::Q6_K);
  EXPECT_EQ(type_of(*f, "blk.1.ffn_down.weight"), DType::Q4_0);
  EXPECT_EQ(type_of(*f, "blk.0.attn_norm.weight"), DType::F32);
  // The weights have the intended scale: std 0.02 (Q4_0 adds well under 20% noise).
  const auto* t = f->find_tensor("blk.0.ffn_up.weight");
  ASSERT_NE(t, nullptr);
  std::vector<float> row(768);
  double s2 = 0;
  for (int r = 0; r < 64; ++r) {
    dequantize_row(DType::Q4_0, static_cast<const uint8_t*>(f->tensor_data(*t)) + r * row_bytes(DType::Q4_0, 768),
                   row.data(), 768);
    for (float x : row) s2 += double(x) * x;
  }
  EXPECT_NEAR(std::sqrt(s2 / (64 * 768)), 0.02, 0.004);

  r = herd({"info", out.path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("2 layers, n_embd 768, n_ff 2048, heads 12 (kv 12)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("vocab 32000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("q4_0: 15"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("q6_K: 1"), std::string::npos) << r.out;
}

TEST(Synth, Q4_K_MGivesMoreBitsToHalfTheLayers) {
  TempFile out("q4_k_m.gguf");
  auto r = synth("Q4_K_M", out.path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Two layers: layer 1 is in the last eighth (more bits), layer 0 is not.
  expect_file_layout(out.path, predicted_bytes(DType::Q4_K, DType::Q4_K, DType::Q6_K, DType::Q4_K, DType::Q6_K));
  auto f = model::GgufFile::open(out.path);
  EXPECT_EQ(type_of(*f, "blk.0.attn_v.weight"), DType::Q4_K);
  EXPECT_EQ(type_of(*f, "blk.1.attn_v.weight"), DType::Q6_K);
  EXPECT_EQ(type_of(*f, "blk.1.ffn_down.weight"), DType::Q6_K);
  EXPECT_EQ(type_of(*f, "blk.1.ffn_up.weight"), DType::Q4_K);
  EXPECT_EQ(type_of(*f, "token_embd.weight"), DType::Q4_K);
  EXPECT_EQ(type_of(*f, "output.weight"), DType::Q6_K);
  EXPECT_EQ(f->get_int("general.file_type"), 15);
  r = herd({"info", out.path});
  EXPECT_NE(r.out.find("q4_K: 13"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("q6_K: 3"), std::string::npos) << r.out;
}

TEST(Synth, SameSeedSameBytesAnyThreadCountDifferentSeedDifferentBytes) {
  TempFile a("seed-a.gguf"), b("seed-b.gguf"), c("seed-c.gguf");
  ASSERT_EQ(synth("Q4_0", a.path, "42", "1").exit_code, 0);
  ASSERT_EQ(synth("Q4_0", b.path, "42", "3").exit_code, 0);
  ASSERT_EQ(synth("Q4_0", c.path, "43", "2").exit_code, 0);
  const std::string A = slurp(a.path), B = slurp(b.path), C = slurp(c.path);
  ASSERT_GT(A.size(), 40u << 20);
  EXPECT_TRUE(A == B) << "same seed must give identical bytes regardless of thread count";
  ASSERT_EQ(A.size(), C.size());
  EXPECT_FALSE(A == C) << "a different seed must change the weights";
}

TEST(Synth, GeneratedModelRuns) {
  TempFile out("run.gguf");
  ASSERT_EQ(synth("Q4_0", out.path).exit_code, 0);
  auto r = herd({"run", "-m", out.path, "-p", "x", "-n", "4", "--temp", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("generation: 4 tokens"), std::string::npos) << r.err;
}

// The 2- and 3-bit mixes end to end: the file holds the types llama.cpp's mix gives each tensor (2
// layers: n/16 = 0, so Q3_K_M's ffn_down is Q4_K in both; attn_v Q5_K in both), `herd run` generates,
// and teacher-forced logits are bit-identical through any split and thread count, on the fast (8-bit)
// and on the reference backend.
std::vector<std::vector<float>> forced_logits(const std::string& path, Backend& be, const std::string& split) {
  auto f = model::GgufFile::open(path);
  const auto cfg = model::load_config(*f);
  LocalPipeline pipe(*f, cfg, be, 64, split.empty() ? std::vector<model::LayerRange>{} : parse_split(split, cfg.n_layers));
  const std::vector<int32_t> tokens = {1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889};
  const LogitsFile out = replay_logits(pipe, tokens, 5);
  std::vector<std::vector<float>> rows;
  for (const auto& r : out.rows) rows.push_back(r.logits);
  return rows;
}

TEST(Synth, LowBitMixesHaveLlamaCppTypesRunAndSplitBitIdentically) {
  struct Case {
    const char* mix;
    DType base, v, o, down;
  };
  for (const Case c : {Case{"Q3_K_M", DType::Q3_K, DType::Q5_K, DType::Q4_K, DType::Q4_K},
                       Case{"Q2_K", DType::Q2_K, DType::Q3_K, DType::Q3_K, DType::Q3_K}}) {
    TempFile out(std::string(c.mix) + ".gguf");
    auto r = synth(c.mix, out.path);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto f = model::GgufFile::open(out.path);
    EXPECT_EQ(type_of(*f, "token_embd.weight"), c.base) << c.mix;
    EXPECT_EQ(type_of(*f, "output.weight"), DType::Q6_K) << c.mix;
    for (int l = 0; l < 2; ++l) {
      const std::string b = "blk." + std::to_string(l) + ".";
      EXPECT_EQ(type_of(*f, b + "attn_q.weight"), c.base) << c.mix;
      EXPECT_EQ(type_of(*f, b + "ffn_up.weight"), c.base) << c.mix;
      EXPECT_EQ(type_of(*f, b + "attn_v.weight"), c.v) << c.mix << " layer " << l;
      EXPECT_EQ(type_of(*f, b + "attn_output.weight"), c.o) << c.mix << " layer " << l;
      EXPECT_EQ(type_of(*f, b + "ffn_down.weight"), c.down) << c.mix << " layer " << l;
    }
    EXPECT_EQ(f->get_int("general.file_type").value_or(-1), std::string(c.mix) == "Q2_K" ? 10 : 12);

    r = herd({"run", "-m", out.path, "-p", "x", "-n", "4", "--temp", "0"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("generation: 4 tokens"), std::string::npos) << r.err;

    auto fast1 = make_cpu_backend();
    auto fast2 = make_cpu_backend();
    fast2->set_threads(2);
    auto ref = make_cpu_backend(CpuBackendOptions{false, "scalar"});
    const auto one = forced_logits(out.path, *fast1, "");
    ASSERT_EQ(one.size(), 12u);
    EXPECT_TRUE(one == forced_logits(out.path, *fast1, "0-0,1-1")) << c.mix << " split";
    EXPECT_TRUE(one == forced_logits(out.path, *fast2, "0-0,1-1")) << c.mix << " split, 2 threads";
    const auto ref_one = forced_logits(out.path, *ref, "");
    EXPECT_TRUE(ref_one == forced_logits(out.path, *ref, "0-0,1-1")) << c.mix << " reference split";
    EXPECT_FALSE(one == ref_one) << c.mix << ": the fast backend took the reference path";
  }
}

TEST(Synth, SyntheticVocabularyLoadsAndRoundTrips) {
  // A non-32000 vocabulary gets the synthetic SentencePiece vocabulary; write a tiny shape in-process.
  model::SynthOptions o;
  o.config.arch = "llama";
  o.config.name = "tiny";
  o.config.n_layers = 1;
  o.config.n_embd = 64;
  o.config.n_ff = 128;
  o.config.n_heads = 4;
  o.config.n_kv_heads = 2;
  o.config.head_dim = 16;
  o.config.n_vocab = 1000;
  o.config.n_ctx_train = 128;
  o.mix = model::parse_type_mix("Q8_0");
  TempFile out("vocab.gguf");
  const auto sum = model::write_synth_model(o, out.path);
  EXPECT_EQ(sum.tensors.size(), 1u + 9u + 2u);
  EXPECT_EQ(std::filesystem::file_size(out.path), sum.file_bytes);
  ModelSession s = ModelSession::open(out.path, {});
  EXPECT_EQ(s.tokenizer->n_vocab(), 1000);
  EXPECT_EQ(s.tokenizer->bos_id(), 1);
  for (const std::string text : {"hello world", "Zebra {42} caf\xC3\xA9"}) {
    const auto ids = s.tokenizer->encode(text, /*add_special=*/false, /*parse_special=*/false);
    EXPECT_FALSE(ids.empty());
    EXPECT_EQ(s.tokenizer->decode(ids), text);
  }
}

TEST(Synth, RefusesWhenTheDiskLacksRoomAndWritesNothing) {
  TempFile out("huge.gguf");
  struct statvfs st {};
  ASSERT_EQ(statvfs(std::filesystem::temp_directory_path().c_str(), &st), 0);
  const double free_bytes = double(st.f_bavail) * double(st.f_frsize);
  if (free_bytes > 1.7e12) GTEST_SKIP() << "the temp disk has room for 1.6 TB; cannot test the refusal";
  auto r = herd({"synth", "--shape", "llama3.1-405b", "--type", "F32", "--out", out.path});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not enough disk space"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out.path));
  EXPECT_FALSE(std::filesystem::exists(out.path + ".partial"));
}

TEST(Synth, UsageErrors) {
  auto r = herd({"synth", "--shape", "nosuch", "--type", "Q4_0", "--out", "/tmp/x.gguf"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("llama3-70b"), std::string::npos) << "lists the known shapes: " << r.err;
  r = herd({"synth", "--shape", "stories110m", "--type", "Q3_K", "--out", "/tmp/x.gguf"});
  EXPECT_EQ(r.exit_code, 2);
  r = herd({"synth", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--vocab-from"), std::string::npos);
}

std::vector<std::string> non_empty_lines(const std::string& text) {
  std::istringstream lines(text);
  std::string line;
  std::vector<std::string> rows;
  while (std::getline(lines, line))
    if (!line.empty()) rows.push_back(line);
  return rows;
}

// One JSON object per line; checks the structure (keys and value kinds), never the timings.
TEST(Bench, JsonRowsHaveTheExpectedKeys) {
  auto r = herd({"bench", "-m", model_path("stories260K.gguf"), "-p", "8", "-n", "4", "-r", "2", "-t", "1,2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> rows = non_empty_lines(r.out);
  ASSERT_EQ(rows.size(), 4u) << r.out;  // {1, 2} threads x {pp8, tg4}
  const char* tests[] = {"\"test\": \"pp8\"", "\"test\": \"tg4\"", "\"test\": \"pp8\"", "\"test\": \"tg4\""};
  const char* threads[] = {"\"n_threads\": 1,", "\"n_threads\": 1,", "\"n_threads\": 2,", "\"n_threads\": 2,"};
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string& j = rows[i];
    EXPECT_EQ(j.front(), '{');
    EXPECT_EQ(j.back(), '}');
    for (const char* k : {"\"model_filename\": \"", "\"model\": \"", "\"model_type\": \"", "\"model_size\": 1171200,",
                          "\"model_n_params\": 292800,", "\"weights_bytes_per_token\": ", "\"backend\": \"",
                          "\"n_prompt\": ", "\"n_gen\": ", "\"reps\": 2,", "\"samples_ns\": [",
                          "\"samples_ts\": [", "\"median_ts\": ", "\"spread_ts\": ", "\"avg_ts\": ", "\"stddev_ts\": "})
      EXPECT_NE(j.find(k), std::string::npos) << k << " in " << j;
    EXPECT_NE(j.find(tests[i]), std::string::npos) << j;
    EXPECT_NE(j.find(threads[i]), std::string::npos) << j;
    // samples_ns holds exactly 2 integers.
    const size_t a = j.find("\"samples_ns\": [") + 15, b = j.find(']', a);
    const std::string ns = j.substr(a, b - a);
    EXPECT_EQ(std::count(ns.begin(), ns.end(), ','), 1) << ns;
    EXPECT_EQ(ns.find('.'), std::string::npos) << ns;
  }
  // The markdown table went to stderr: header + separator + 4 rows.
  EXPECT_NE(r.err.find("| model"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" pp8 |"), std::string::npos) << r.err;
}

TEST(Bench, TableByDefaultAndUsageErrors) {
  auto r = herd({"bench", "-m", model_path("stories260K.gguf"), "-p", "4", "-n", "0", "-r", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("| model"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pp4"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("tg"), std::string::npos) << "-n 0 skips the tg test: " << r.out;
  EXPECT_EQ(herd({"bench", "-m", model_path("stories260K.gguf"), "-t", "1,x"}).exit_code, 2);
  EXPECT_EQ(herd({"bench", "-m", model_path("stories260K.gguf"), "-r", "0"}).exit_code, 2);
}

// --parallel: one tg row per sequence count (aggregate tokens: N x n_gen), the x1 row replacing the
// plain tg row; bad counts are usage errors.
TEST(Bench, ParallelRowsOnePerSequenceCount) {
  auto r = herd({"bench", "-m", model_path("stories260K.gguf"), "-p", "0", "-n", "3", "-r", "1", "--parallel", "1,3",
                 "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> rows = non_empty_lines(r.out);
  ASSERT_EQ(rows.size(), 2u) << r.out;
  EXPECT_NE(rows[0].find("\"test\": \"tg3 x1\""), std::string::npos) << rows[0];
  EXPECT_NE(rows[0].find("\"n_gen\": 3,"), std::string::npos) << rows[0];
  EXPECT_NE(rows[0].find("\"n_seq\": 1,"), std::string::npos) << rows[0];
  EXPECT_NE(rows[1].find("\"test\": \"tg3 x3\""), std::string::npos) << rows[1];
  EXPECT_NE(rows[1].find("\"n_gen\": 9,"), std::string::npos) << rows[1];
  EXPECT_NE(rows[1].find("\"n_seq\": 3,"), std::string::npos) << rows[1];
  EXPECT_EQ(herd({"bench", "-m", model_path("stories260K.gguf"), "--parallel", "0"}).exit_code, 2);
  EXPECT_EQ(herd({"bench", "-m", model_path("stories260K.gguf"), "--parallel", "2,x"}).exit_code, 2);
  EXPECT_EQ(herd({"bench", "-m", model_path("stories260K.gguf"), "--kv-type", "f8"}).exit_code, 1);
}

}  // namespace
}  // namespace herd::test
