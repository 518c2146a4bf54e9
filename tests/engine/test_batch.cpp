// Batches of several sequences: malformed batches are refused with the reason; each sequence of a
// batch gets logits bit-identical to running it alone (every KV type, the fast and the reference
// backends, split stages, qwen2's recipe); KV rows round-trip exactly as kernels/quant.h defines;
// the pipeline's per-sequence record follows rewinds and failures.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <unistd.h>

#include "engine/batch.h"
#include "engine/kv_cache.h"
#include "engine/pipeline.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/quant.h"
#include "model/gguf.h"
#include "tests/engine/batch_schedule.h"
#include "tests/test_paths.h"
#include "tests/tools/tiny_models.h"

namespace herd {
namespace {

TEST(BatchRuns, SplitsRowsIntoSequenceRuns) {
  Batch b;
  const int32_t toks[] = {5, 6, 7};
  b.add_run(toks, 3, 4, 1, false);
  b.add(9, 0, 0, true);
  std::vector<SeqRun> runs;
  ASSERT_EQ("", batch_runs(b, 2, 16, runs));
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].seq, 1);
  EXPECT_EQ(runs[0].pos0, 4);
  EXPECT_EQ(runs[0].size(), 3);
  EXPECT_EQ(runs[1].seq, 0);
  EXPECT_EQ(runs[1].begin, 3);
  EXPECT_EQ(b.n_outputs(), 2);
}

TEST(BatchRuns, RefusesMalformedBatchesWithTheReason) {
  std::vector<SeqRun> runs;
  Batch empty;
  EXPECT_EQ("empty batch", batch_runs(empty, 1, 8, runs));
  Batch b;
  b.add(1, 0, 2, true);
  EXPECT_NE(batch_runs(b, 2, 8, runs).find("sequence id 2 outside 0..1"), std::string::npos);
  b.clear();
  b.add(1, 8, 0, true);
  EXPECT_EQ(batch_runs(b, 1, 8, runs).rfind("context full", 0), 0u);
  b.clear();
  b.add(1, 0, 0, false);
  b.add(1, 2, 0, true);
  EXPECT_NE(batch_runs(b, 1, 8, runs).find("not consecutive"), std::string::npos);
  b.clear();
  b.add(1, 0, 0, false);
  b.add(1, 0, 1, false);
  b.add(1, 1, 0, true);
  EXPECT_NE(batch_runs(b, 2, 8, runs).find("two separate runs"), std::string::npos);
  b.clear();
  b.add(1, 0, 0, true);
  b.seq.push_back(0);
  EXPECT_NE(batch_runs(b, 1, 8, runs).find("differ in length"), std::string::npos);
}

// KV rows: what store_rows writes and load_rows reads back is exactly quantize_row/dequantize_row,
// and attention over typed rows equals attention over those values.
TEST(KvRows, StoreLoadAndAttentionMatchTheFormatDefinition) {
  for (const char* isa : {"scalar", "auto"}) {
    CpuBackendOptions o;
    o.isa = isa;
    auto be = make_cpu_backend(o);
    const int64_t heads = 4, kv_heads = 2, hd = 32, kvd = kv_heads * hd, n_kv = 9;
    std::vector<float> kf(n_kv * kvd), vf(n_kv * kvd), q(2 * heads * hd);
    for (size_t i = 0; i < kf.size(); ++i) {
      kf[i] = std::sin(0.37f * i) * 2.5f;
      vf[i] = std::cos(0.11f * i) * 1.5f;
    }
    for (size_t i = 0; i < q.size(); ++i) q[i] = std::sin(0.05f * i + 1);
    for (DType t : {DType::F32, DType::F16, DType::Q8_0}) {
      SCOPED_TRACE(std::string(isa) + " " + std::string(dtype_name(t)));
      ASSERT_TRUE(be->supports(Op::Attention, t));
      KvCache cache(*be, 1, 2, 16, kvd, t);
      be->store_rows(kf.data(), n_kv, kvd, kvd, t, cache.k_row(0, 1, 0), cache.row_bytes());
      be->store_rows(vf.data(), n_kv, kvd, kvd, t, cache.v_row(0, 1, 0), cache.row_bytes());
      std::vector<float> kd(kf.size()), vd(vf.size()), back(kf.size());
      std::vector<uint8_t> enc(row_bytes(t, kvd));
      for (int64_t r = 0; r < n_kv; ++r) {
        quantize_row(t, kf.data() + r * kvd, enc.data(), kvd);
        dequantize_row(t, enc.data(), kd.data() + r * kvd, kvd);
        quantize_row(t, vf.data() + r * kvd, enc.data(), kvd);
        dequantize_row(t, enc.data(), vd.data() + r * kvd, kvd);
      }
      be->load_rows(cache.k_row(0, 1, 0), cache.row_bytes(), n_kv, kvd, t, back.data(), kvd);
      ASSERT_EQ(0, std::memcmp(back.data(), kd.data(), back.size() * sizeof(float)));
      if (t != DType::F32) {
        EXPECT_NE(kd, kf) << "the type should round";
      }
      const AttentionShape s{2, heads, kv_heads, hd, n_kv};
      std::vector<float> want(2 * heads * hd), got(2 * heads * hd);
      be->attention(q.data(), heads * hd, kd.data(), vd.data(), kvd, s, 0.2f, want.data(), heads * hd);
      be->attention_rows(q.data(), heads * hd, cache.k(0, 1), cache.v(0, 1), s, 0.2f, got.data(), heads * hd);
      EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)));
    }
  }
}

// A context far past the host's memory (`-c 16777216` with many slots) is refused before any
// allocation, with the size it would need, instead of std::bad_alloc or the OOM killer.
TEST(KvCacheShape, TooLargeForThisHostSaysHowMuchItNeeds) {
  auto be = make_cpu_backend();
  try {
    KvCache cache(*be, 80, 4096, int64_t{1} << 24, 1024, DType::F16);
    ADD_FAILURE() << "a 40 PiB KV cache was allocated";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("needs"), std::string::npos) << m;
    EXPECT_NE(m.find("GiB"), std::string::npos) << m;
    EXPECT_NE(m.find("16777216 tokens"), std::string::npos) << m;
    EXPECT_NE(m.find("lower -c"), std::string::npos) << m;
  }
}

TEST(KvCacheShape, RefusesWhatCannotWork) {
  auto be = make_cpu_backend();
  EXPECT_THROW(KvCache(*be, 2, 0, 16, 64, DType::F16), std::invalid_argument);
  EXPECT_THROW(KvCache(*be, 2, 1, 16, 48, DType::Q8_0), std::invalid_argument);  // 48 % 32
  EXPECT_THROW(KvCache(*be, 2, 1, 16, 64, DType::Q4_0), std::invalid_argument);
  EXPECT_THROW(parse_kv_type("f8"), std::invalid_argument);
  EXPECT_EQ(parse_kv_type("q8_0"), DType::Q8_0);
}

struct InvarianceCase {
  std::string name;  // model file in shared/models, or "tiny-NAME" (tests/tools/tiny_models.h)
  std::string isa;
  DType kv;
  std::string split;  // "" = one stage
};

bool is_tiny(const InvarianceCase& c) { return c.name.rfind("tiny-", 0) == 0; }

std::string model_file(const InvarianceCase& c) {
  if (!is_tiny(c)) return test::model_path(c.name);
  const std::string tiny = c.name.substr(5);
  const std::string path = (std::filesystem::temp_directory_path() / ("herd-batch-" + std::to_string(getpid()) +
                                                                       "-" + tiny + ".gguf")).string();
  for (const auto& spec : test::tiny_model_specs())
    if (spec.name == tiny) test::write_tiny_model(spec, test::model_path("stories260K.gguf"), path);
  return path;
}

class BatchInvariance : public ::testing::TestWithParam<InvarianceCase> {};

// A case's model, open, with its backend and split; a tiny model's temporary file goes with it.
struct CaseModel {
  CaseModel(const InvarianceCase& c, const std::string& path)
      : path(path), tiny(is_tiny(c)), f(model::GgufFile::open(path)), cfg(model::load_config(*f)) {
    CpuBackendOptions o;
    o.isa = c.isa;
    be = make_cpu_backend(o);
    if (!c.split.empty()) ranges = parse_split(c.split, cfg.n_layers);
  }
  ~CaseModel() {
    if (tiny) std::filesystem::remove(path);
  }
  std::string path;
  bool tiny;
  std::unique_ptr<model::GgufFile> f;
  model::ModelConfig cfg;
  std::unique_ptr<Backend> be;
  std::vector<model::LayerRange> ranges;  // empty: one stage
};

TEST_P(BatchInvariance, EachSequenceGetsTheLogitsItGetsAlone) {
  const InvarianceCase& c = GetParam();
  const std::string path = model_file(c);
  HERD_REQUIRE_FILE(path);
  CaseModel m(c, path);
  const auto& f = m.f;
  const auto& cfg = m.cfg;
  const auto& be = m.be;
  const auto& ranges = m.ranges;
  be->set_threads(2);
  const auto scripts = test::make_scripts(4, static_cast<int32_t>(cfg.n_vocab));
  std::vector<test::SeqLogits> alone;
  {
    LocalPipeline one(*f, cfg, *be, KvOptions{64, 1, c.kv}, ranges);
    for (const auto& sc : scripts) alone.push_back(test::run_alone(one, sc));
  }
  LocalPipeline many(*f, cfg, *be, KvOptions{64, 4, c.kv}, ranges);
  EXPECT_EQ("", test::compare_bits(test::run_together(many, scripts), alone));
  EXPECT_EQ("", test::compare_bits(test::run_in_flight(many, scripts, 2), alone)) << "two batches in flight";
  // Slot reuse: sequence 0's slot takes a new sequence from position 0 (a rewind), same bits.
  EXPECT_EQ("", test::compare_bits({test::run_alone(many, scripts[3], 0)}, {alone[3]}));
}

// The last layer's feed-forward runs only on the rows that want logits (Stage::begin_feed_forward):
// a prompt with logits on its last row only gives that row the bits it gets when every row wants
// logits, a prompt with no logits row still fills the cache (the next token's logits are the
// same bits), on one stage and split.
TEST_P(BatchInvariance, RowsWithoutLogitsSkipTheLastFeedForwardWithoutChangingAnyBits) {
  const InvarianceCase& c = GetParam();
  const std::string path = model_file(c);
  HERD_REQUIRE_FILE(path);
  CaseModel m(c, path);
  const auto& f = m.f;
  const auto& cfg = m.cfg;
  const auto& be = m.be;
  const auto& ranges = m.ranges;
  std::vector<int32_t> prompt;
  for (int32_t i = 0; i < 9; ++i) prompt.push_back((11 * i + 5) % static_cast<int32_t>(cfg.n_vocab));
  const int32_t next = 3 % static_cast<int32_t>(cfg.n_vocab);
  const int64_t nv = cfg.n_vocab, np = static_cast<int64_t>(prompt.size());
  // mode 0: every row wants logits; 1: only the last; 2: none (then the next token's logits).
  std::vector<float> last_row[3], next_row[3];
  for (int mode = 0; mode < 3; ++mode) {
    LocalPipeline p(*f, cfg, *be, KvOptions{32, 1, c.kv}, ranges);
    Batch b;
    for (int64_t i = 0; i < np; ++i) b.add(prompt[i], static_cast<int32_t>(i), 0, mode == 0 || (mode == 1 && i == np - 1));
    const std::vector<float> out = p.eval(b).logits;
    ASSERT_EQ(static_cast<int64_t>(out.size()), (mode == 0 ? np : mode == 1 ? 1 : 0) * nv);
    if (mode < 2) last_row[mode].assign(out.end() - nv, out.end());
    Batch b2;
    b2.add(next, static_cast<int32_t>(np), 0, true);
    next_row[mode] = p.eval(b2).logits;
  }
  EXPECT_EQ(0, std::memcmp(last_row[0].data(), last_row[1].data(), sizeof(float) * nv)) << "last prompt row";
  for (int mode = 1; mode < 3; ++mode)
    EXPECT_EQ(0, std::memcmp(next_row[0].data(), next_row[mode].data(), sizeof(float) * nv)) << "next token, mode " << mode;
}

INSTANTIATE_TEST_SUITE_P(
    Models, BatchInvariance,
    ::testing::Values(InvarianceCase{"stories260K.gguf", "auto", DType::F32, ""},
                      InvarianceCase{"stories260K.gguf", "auto", DType::F16, "0-1,2-4"},
                      InvarianceCase{"stories260K.gguf", "scalar", DType::Q8_0, ""},
                      InvarianceCase{"randk-Q4_0.gguf", "auto", DType::F16, ""},
                      InvarianceCase{"randk-Q4_K_M.gguf", "auto", DType::Q8_0, "0-2,3-3"},
                      InvarianceCase{"randk-Q6_K.gguf", "auto", DType::F32, ""},
                      InvarianceCase{"tiny-qwen2", "auto", DType::F16, ""},
                      // Mixtures of experts: tokens of several sequences share expert calls.
                      InvarianceCase{"tiny-qwen3moe", "scalar", DType::F32, ""},
                      InvarianceCase{"tiny-qwen3moe", "auto", DType::F16, "0-0,1-1,2-2"},
                      InvarianceCase{"tiny-qwen3moe-q8", "auto", DType::F16, ""},
                      InvarianceCase{"tiny-qwen3moe-q8", "auto", DType::Q8_0, "0-1,2-2"},
                      InvarianceCase{"tiny-mixtral", "auto", DType::F32, ""}),
    [](const auto& info) {
      std::string n = info.param.name + "_" + info.param.isa + "_" + std::string(dtype_name(info.param.kv)) +
                      (info.param.split.empty() ? "" : "_split");
      for (auto& ch : n)
        if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return n;
    });

// The pipeline's record of each slot follows rewinds, refuses gaps, and is rolled back when a
// batch fails.
TEST(PipelineRecord, FollowsRewindsAndRefusesGaps) {
  auto f = model::GgufFile::open(test::model_path("stories260K.gguf"));
  const auto cfg = model::load_config(*f);
  auto be = make_cpu_backend();
  LocalPipeline p(*f, cfg, *be, KvOptions{16, 2, DType::F16});
  const int32_t toks[] = {1, 2, 3, 4, 5};
  Batch b;
  b.add_run(toks, 5, 0, 1, false);
  p.eval(b);
  EXPECT_EQ(p.cached(1), std::vector<int32_t>(toks, toks + 5));
  EXPECT_TRUE(p.cached(0).empty());
  b.clear();
  b.add(9, 3, 1, true);  // rewind to position 3
  p.eval(b);
  EXPECT_EQ(p.cached(1), (std::vector<int32_t>{1, 2, 3, 9}));
  b.clear();
  b.add(9, 6, 1, true);  // a gap: positions 4, 5 were never evaluated
  EXPECT_THROW(p.submit(b), std::invalid_argument);
  b.clear();
  b.add(static_cast<int32_t>(cfg.n_vocab), 4, 1, true);  // a token outside the vocabulary
  EXPECT_THROW(p.submit(b), std::out_of_range);
  EXPECT_EQ(p.cached(1).size(), 4u) << "a refused batch changes nothing";
  b.clear();
  b.add(1, 16, 0, true);
  EXPECT_THROW(p.submit(b), std::out_of_range);  // context full
  EXPECT_EQ(p.in_flight(), 0u);
}

// status(): a local split reports each stage's layers, memory and measured compute time.
TEST(PipelineStatus, LocalSplitReportsItsStagesAndComputeTimes) {
  auto f = model::GgufFile::open(test::model_path("stories260K.gguf"));
  const auto cfg = model::load_config(*f);
  auto be = make_cpu_backend();
  be->set_threads(2);
  const KvOptions kv{32, 2, DType::F16};
  LocalPipeline p(*f, cfg, *be, kv, parse_split("0-1,2-4", cfg.n_layers));
  PipelineStatus st = p.status();
  ASSERT_EQ(st.stages.size(), 2u);
  EXPECT_EQ(st.batches, 0u);
  EXPECT_EQ(st.stages[0].compute_ms, 0.0) << "nothing measured yet";
  const int32_t toks[] = {1, 2, 3, 4, 5};
  Batch b;
  b.add_run(toks, 5, 0, 1, true);
  p.eval(b);
  st = p.status();
  ASSERT_EQ(st.stages.size(), 2u);
  EXPECT_EQ(st.batches, 1u);
  EXPECT_TRUE(st.hop_ms.empty());
  const int64_t first[] = {0, 2}, end[] = {2, 5};
  const auto ranges = parse_split("0-1,2-4", cfg.n_layers);
  for (size_t i = 0; i < 2; ++i) {
    const StageStatus& s = st.stages[i];
    EXPECT_EQ(s.name, "local");
    EXPECT_EQ(s.device, be->name() + ", 2 threads");
    EXPECT_EQ(s.first_layer, first[i]);
    EXPECT_EQ(s.end_layer, end[i]);
    // Its tensors and a KV cache of 2 x (layers x slots x positions) rows of kv_dim f16 values.
    const uint64_t kv_bytes = 2ull * static_cast<uint64_t>((end[i] - first[i]) * kv.n_seq * kv.n_ctx) *
                              static_cast<uint64_t>(cfg.kv_dim()) * 2;
    EXPECT_EQ(s.memory_bytes, model::stage_weight_bytes(*f, cfg, ranges[i]) + kv_bytes);
    EXPECT_GT(s.compute_ms, 0.0);
    EXPECT_EQ(s.overhead_ms, 0.0);
  }
  EXPECT_GE(st.batch_ms, st.stages[0].compute_ms + st.stages[1].compute_ms);
}

// The moving mean: the first batch sets it, each later one moves it by a tenth of the difference.
TEST(PipelineStatus, TimesAreExponentialMovingMeans) {
  PipelineStats s;
  s.reset({StageStatus{"a", "d", 0, 1, 0}}, 2);
  const double hops1[] = {1, 2}, hops2[] = {11, 2};
  const double c1[] = {10}, c2[] = {20}, o1[] = {4};
  s.record(c1, o1, hops1, 100);
  s.record(c2, o1, hops2, 200);
  const PipelineStatus st = s.snapshot();
  EXPECT_EQ(st.batches, 2u);
  EXPECT_DOUBLE_EQ(st.stages[0].compute_ms, 11);
  EXPECT_DOUBLE_EQ(st.stages[0].overhead_ms, 4);
  EXPECT_DOUBLE_EQ(st.hop_ms[0], 2);
  EXPECT_DOUBLE_EQ(st.hop_ms[1], 2);
  EXPECT_DOUBLE_EQ(st.batch_ms, 110);
  EXPECT_THROW(s.record(c1, {}, {}, 1), std::logic_error) << "times for another layout";
  s.reset({StageStatus{"a", "d", 0, 1, 0}}, 2);
  EXPECT_EQ(s.snapshot().batches, 0u) << "a new layout starts again";
}

}  // namespace
}  // namespace herd
