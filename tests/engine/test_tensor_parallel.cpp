// Tensor parallelism in one process (engine/tp_pipeline.h): the shard plan, brute-forced on small
// shapes; teacher-forced replay through TP 2 and TP 3 (uneven: stories260K's 8 heads, 4 KV-head
// groups, over 3 ranks = 4 + 2 + 2 heads) against the single-rank run of the same backend; the
// same bits on 20 repeated runs; named errors for a model that cannot be split.
//
// Tolerances, from the math:
//   f32 sync on a continuous path (the reference backend, --exact, F32 weights): a rank's share of
//     the attention-output and FFN-down dot products is summed separately and the partials added in
//     rank order: a reordering of f32 sums, relative change <= n * 2^-24 of the sum of |terms|
//     (n <= 1536 terms: <= 1e-4 relative), compounding over the few layers of these models; the
//     logits (|l| <= ~20) then move by well under 1e-4 (the bound), argmax equal everywhere.
//   the 8-bit path (quantized weights, the default kernels): its activations are rounded to 8 bits
//     before every matmul, a step function: an f32-rounding difference of a hidden value flips a
//     rounding now and then, so TP moves logits by as much as the 8-bit path's own error (the
//     bound the other 8-bit replays use, test_lowbit_replay: max |Δlogit| <= 0.35, argmax equal on
//     >= 90% of rows), not by f32 rounding.
//   q8 sync: each rank's partial is rounded to Q8_0 (blocks of 32, one scale: error <= max|block| /
//     254 per value), the 8-bit activation path's rounding applied to the residual updates:
//     the same 0.35 / 90% bound.
#include <gtest/gtest.h>

#include <random>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "coordinator/logits_file.h"
#include "coordinator/replay.h"
#include "engine/pipeline.h"
#include "engine/shard_plan.h"
#include "engine/tp_pipeline.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "tests/logits_agreement.h"
#include "tests/test_paths.h"
#include "tests/tools/tiny_models.h"

namespace herd {
namespace {

// ---- the shard plan -------------------------------------------------------------------------

std::vector<std::vector<double>> weight_sets(int ranks) {
  std::vector<std::vector<double>> sets;
  sets.push_back(std::vector<double>(static_cast<size_t>(ranks), 1.0));  // equal
  std::vector<double> up, down, one_fast, odd;
  for (int r = 0; r < ranks; ++r) {
    up.push_back(1.0 + r);
    down.push_back(static_cast<double>(ranks - r));
    one_fast.push_back(r == ranks / 2 ? 10.0 : 1.0);
    odd.push_back(0.3 + 0.7 * ((r * 7 + 3) % 5));
  }
  for (auto* s : {&up, &down, &one_fast, &odd}) sets.push_back(*s);
  return sets;
}

void expect_partition(const std::vector<ShardRange>& rs, int64_t n, int64_t min_each, const std::string& what) {
  int64_t at = 0;
  for (const ShardRange& r : rs) {
    EXPECT_EQ(r.begin, at) << what;
    EXPECT_GE(r.size(), min_each) << what;
    at = r.end;
  }
  EXPECT_EQ(at, n) << what;
}

TEST(ShardPlan, ProportionalRangesBruteForce) {
  for (int64_t n = 1; n <= 40; ++n)
    for (int ranks = 1; ranks <= 9; ++ranks)
      for (const auto& w : weight_sets(ranks)) {
        const std::string what = "n " + std::to_string(n) + ", " + std::to_string(ranks) + " ranks";
        const double total = std::accumulate(w.begin(), w.end(), 0.0);
        // Without a minimum: Hamilton's method, each count the floor or the ceiling of its quota,
        // and a larger weight never gets fewer units.
        const auto free = proportional_ranges(n, w, 0);
        expect_partition(free, n, 0, what);
        for (int r = 0; r < ranks; ++r) {
          const double q = static_cast<double>(n) * w[r] / total;
          EXPECT_LT(std::fabs(static_cast<double>(free[r].size()) - q), 1.0) << what << " rank " << r;
          for (int s = 0; s < ranks; ++s)
            if (w[r] > w[s]) {
              EXPECT_GE(free[r].size(), free[s].size()) << what;
            }
        }
        if (n < ranks) {
          EXPECT_THROW(proportional_ranges(n, w, 1), std::invalid_argument) << what;
          continue;
        }
        // With at least one each: a partition, equal to the free one when every quota reaches 1.
        const auto min1 = proportional_ranges(n, w, 1);
        expect_partition(min1, n, 1, what);
        bool all_reach = true;
        for (int r = 0; r < ranks; ++r) all_reach &= free[r].size() >= 1;
        if (all_reach) {
          EXPECT_EQ(min1, free) << what;
        }
      }
}

TEST(ShardPlan, EqualWeightsSplitEvenlyAndUnevenCountsGoToTheFirstRanks) {
  const std::vector<double> w3(3, 1.0);
  const auto r = proportional_ranges(4, w3, 1);  // stories260K's 4 KV heads over 3 ranks
  EXPECT_EQ(r, (std::vector<ShardRange>{{0, 2}, {2, 3}, {3, 4}}));
  const std::vector<double> w2{1.0, 3.0};  // a rank three times as fast gets three quarters
  EXPECT_EQ(proportional_ranges(8, w2, 1), (std::vector<ShardRange>{{0, 2}, {2, 8}}));
}

TEST(ShardPlan, WholeKvGroupsAndWholeQuantBlocks) {
  for (int64_t kv = 1; kv <= 8; ++kv)
    for (int64_t gqa = 1; gqa <= 3; ++gqa)
      for (int ranks = 1; ranks <= kv + 1; ++ranks)
        for (const auto& w : weight_sets(ranks)) {
          const ShardShape s{kv * gqa, kv, 1, 32 * 12, 32, 100};
          const std::string what = std::to_string(kv) + " KV heads, " + std::to_string(ranks) + " ranks";
          if (ranks > kv) {
            try {
              plan_shards(s, w);
              ADD_FAILURE() << what << ": no error";
            } catch (const std::invalid_argument& e) {
              EXPECT_NE(std::string(e.what()).find("only " + std::to_string(kv) + " KV heads"), std::string::npos)
                  << e.what();
            }
            continue;
          }
          const ShardPlan p = plan_shards(s, w);
          expect_partition(p.kv_heads, kv, 1, what);
          expect_partition(p.ffn_rows, s.n_ff, 32, what);
          expect_partition(p.vocab, s.n_vocab, 1, what);
          for (const ShardRange& r : p.ffn_rows) EXPECT_EQ(r.begin % 32, 0) << what;
        }
}

TEST(ShardPlan, BadWeightsAreNamedErrors) {
  const std::vector<double> zero{1.0, 0.0}, none{};
  EXPECT_THROW(proportional_ranges(4, zero, 1), std::invalid_argument);
  EXPECT_THROW(proportional_ranges(4, none, 1), std::invalid_argument);
  const std::vector<double> w2(2, 1.0);
  EXPECT_THROW(plan_shards(ShardShape{8, 4, 1, 32, 32, 10}, w2), std::invalid_argument);  // one FFN block for 2 ranks
}

TEST(ShardPlan, RatesWithinTheToleranceAreTakenAsEqual) {
  const std::vector<double> noise = {2.08e10, 1.92e10};  // 52:48, two idle workers on one host
  EXPECT_EQ(same_speed_weights(noise), (std::vector<double>{2.0e10, 2.0e10}));
  const std::vector<double> real = {1.0, 1.2};  // a real 20% difference keeps its shares
  EXPECT_EQ(same_speed_weights(real), real);
  const std::vector<double> mixed = {1.5, 1.0, 1.09, 1.05};
  const auto m = same_speed_weights(mixed);
  EXPECT_DOUBLE_EQ(m[0], 1.5);
  EXPECT_DOUBLE_EQ(m[1], (1.0 + 1.09 + 1.05) / 3);
  EXPECT_EQ(m[1], m[2]);
  EXPECT_EQ(m[1], m[3]);
  const std::vector<double> bad = {1.0, 0.0};
  EXPECT_THROW(same_speed_weights(bad), std::invalid_argument);
}

// Brute force over random rates: runs of equal outputs are the sorted runs the rule defines.
TEST(ShardPlan, SameSpeedWeightsBruteForce) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> u(1.0, 2.0);
  for (int iter = 0; iter < 2000; ++iter) {
    const size_t n = 1 + iter % 6;
    std::vector<double> r(n);
    for (auto& v : r) v = u(rng);
    const auto w = same_speed_weights(r);
    ASSERT_EQ(w.size(), n);
    std::vector<size_t> order(n);
    for (size_t i = 0; i < n; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return r[a] < r[b]; });
    size_t b = 0;
    while (b < n) {
      size_t e = b + 1;
      while (e < n && w[order[e]] == w[order[b]]) ++e;
      double lo = r[order[b]], hi = r[order[e - 1]], sum = 0;
      for (size_t i = b; i < e; ++i) sum += r[order[i]];
      EXPECT_LE(hi, lo * (1 + kSameSpeedTolerance)) << "a run wider than the tolerance";
      EXPECT_NEAR(w[order[b]], sum / static_cast<double>(e - b), 1e-12) << "not the run's mean";
      if (e < n) {
        EXPECT_GT(r[order[e]], lo * (1 + kSameSpeedTolerance)) << "the next rate belonged to this run";
      }
      b = e;
    }
  }
}

TEST(ShardPlan, AttentionUnitsOfSeveralGroupsKeepTheirBoundaries) {
  // 12 KV heads (stories110m) with attn_output in 256-column blocks over 64-column groups: units of
  // 4 groups, so at most 3 ranks, and every boundary on a unit.
  for (int ranks = 1; ranks <= 4; ++ranks)
    for (const auto& w : weight_sets(ranks)) {
      const ShardShape s{12, 12, 4, 256 * 8, 256, 1000};
      if (ranks > 3) {
        try {
          plan_shards(s, w);
          ADD_FAILURE() << "4 ranks over 3 units";
        } catch (const std::invalid_argument& e) {
          EXPECT_NE(std::string(e.what()).find("3 units"), std::string::npos) << e.what();
        }
        continue;
      }
      const ShardPlan p = plan_shards(s, w);
      expect_partition(p.kv_heads, 12, 4, std::to_string(ranks) + " ranks");
      for (const ShardRange& r : p.kv_heads) EXPECT_EQ(r.begin % 4, 0);
    }
}

// ---- replay through TP ------------------------------------------------------------------------

struct Model {
  std::unique_ptr<model::GgufFile> file;
  model::ModelConfig config;
  std::vector<int32_t> tokens;
  int64_t n_prompt = 0;
  std::string temp;  // a written tiny model, removed at the end
  ~Model() {
    if (!temp.empty()) std::filesystem::remove(temp);
  }
};

std::unique_ptr<Model> open_shared(const std::string& name) {
  auto m = std::make_unique<Model>();
  const LogitsFile ref = LogitsFile::read(test::reference_path(name + ".p0.log1"));
  m->tokens = replay_tokens(ref, name);
  m->n_prompt = ref.n_prompt;
  m->file = model::GgufFile::open(test::model_path(name + ".gguf"));
  m->config = model::load_config(*m->file);
  return m;
}

std::unique_ptr<Model> open_tiny(const std::string& spec_name) {
  auto m = std::make_unique<Model>();
  for (const auto& spec : test::tiny_model_specs())
    if (spec.name == spec_name) {
      m->temp = (std::filesystem::temp_directory_path() /
                 ("herd-tp-" + std::to_string(getpid()) + "-" + spec_name + ".gguf")).string();
      test::write_tiny_model(spec, test::model_path("stories260K.gguf"), m->temp);
    }
  if (m->temp.empty()) throw std::runtime_error("no tiny model " + spec_name);
  m->tokens = test::tiny_model_tokens();
  m->n_prompt = test::kTinyPrompt;
  m->file = model::GgufFile::open(m->temp);
  m->config = model::load_config(*m->file);
  return m;
}

std::unique_ptr<Backend> backend(const std::string& isa, bool exact) {
  return isa == "scalar" ? make_reference_backend() : make_cpu_backend(CpuBackendOptions{exact, isa});
}

LogitsFile single(const Model& m, const std::string& isa, bool exact) {
  auto be = backend(isa, exact);
  LocalPipeline pipe(*m.file, m.config, *be, KvOptions{static_cast<int64_t>(m.tokens.size()) + 4, 1, DType::F32});
  return replay_logits(pipe, m.tokens, m.n_prompt);
}

std::unique_ptr<TpPipeline> tp_pipeline(const Model& m, int ranks, const std::string& isa, bool exact,
                                        TpSync sync = TpSync::F32) {
  TpOptions o;
  o.n_ranks = ranks;
  o.sync = sync;
  o.make_backend = [isa, exact](int) { return backend(isa, exact); };
  return std::make_unique<TpPipeline>(*m.file, m.config,
                                      KvOptions{static_cast<int64_t>(m.tokens.size()) + 4, 1, DType::F32}, o);
}

LogitsFile tp(const Model& m, int ranks, const std::string& isa, bool exact, TpSync sync = TpSync::F32) {
  auto pipe = tp_pipeline(m, ranks, isa, exact, sync);
  return replay_logits(*pipe, m.tokens, m.n_prompt);
}

struct ReplayCase {
  const char* model;  // shared/models NAME.gguf, or "tiny:SPEC"
  int ranks;
  const char* isa;    // "scalar" (reference backend) or a CPU ISA
  bool exact;         // continuous math: the f32 bound holds
};

std::string case_name(const ::testing::TestParamInfo<ReplayCase>& info) {
  std::string s = std::string(info.param.model) + "_tp" + std::to_string(info.param.ranks) + "_" + info.param.isa +
                  (info.param.exact ? "_exact" : "_q8path");
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

std::unique_ptr<Model> open_case(const ReplayCase& c) {
  const std::string name = c.model;
  return name.rfind("tiny:", 0) == 0 ? open_tiny(name.substr(5)) : open_shared(name);
}

class TpReplay : public ::testing::TestWithParam<ReplayCase> {};

TEST_P(TpReplay, F32SyncMatchesTheSingleRankRun) {
  const ReplayCase& c = GetParam();
  auto m = open_case(c);
  const LogitsFile one = single(*m, c.isa, c.exact);
  const LogitsFile split = tp(*m, c.ranks, c.isa, c.exact);
  ASSERT_EQ(split.rows.size(), one.rows.size());
  const test::LogitsAgreement a = test::compare_logits(split, one);
  const double tol = c.exact ? 1e-4 : 0.35;
  for (size_t r = 0; r < a.row_max.size(); ++r) EXPECT_LE(a.row_max[r], tol) << c.model << " row " << r;
  if (c.exact) EXPECT_EQ(a.argmax_equal, one.rows.size());
  else EXPECT_GE(static_cast<double>(a.argmax_equal), 0.9 * static_cast<double>(one.rows.size()));
  std::printf("%s tp%d %s%s: %zu rows, max |delta logit| %.3e, argmax equal %zu/%zu\n", c.model, c.ranks, c.isa,
              c.exact ? " exact" : " 8-bit path", one.rows.size(), a.worst, a.argmax_equal, one.rows.size());
}

INSTANTIATE_TEST_SUITE_P(
    Models, TpReplay,
    ::testing::Values(
        // stories260K: llama, 8 heads / 4 KV heads, F32 (TP 3 = 2 + 1 + 1 KV-head groups, ffn 172 = 58 + 57 + 57).
        ReplayCase{"stories260K", 2, "scalar", true}, ReplayCase{"stories260K", 3, "scalar", true},
        ReplayCase{"stories260K", 2, "auto", true}, ReplayCase{"stories260K", 3, "auto", true},
        // qwen2 (q/k/v biases sliced with their heads, NEOX rope); llama with tied embeddings (the
        // output rows are rows of the embedding table).
        ReplayCase{"tiny:qwen2", 2, "scalar", true}, ReplayCase{"tiny:llama-tied", 2, "auto", true},
        // K-quants (Q4_K + Q6_K): columns cut at whole 256-value blocks, exact math and the 8-bit path.
        ReplayCase{"randk-Q4_K_M", 2, "auto", true}, ReplayCase{"randk-Q4_K_M", 2, "auto", false},
        ReplayCase{"randk-Q4_1", 2, "auto", false}, ReplayCase{"stories260K-Q4_K_M", 2, "auto", false}),
    case_name);
// ("auto": the best kernels this CPU has, which is what a user runs; every ISA is checked against
// the reference in tests/kernels/, and the scalar cases above run everywhere.)

TEST(TpReplayQ8Sync, WithinTheEightBitTolerance) {
  auto m = open_shared("stories260K");
  const LogitsFile one = single(*m, "scalar", true);
  for (int ranks : {2, 3}) {
    const LogitsFile q8 = tp(*m, ranks, "scalar", true, TpSync::Q8);
    const test::LogitsAgreement a = test::compare_logits(q8, one);
    EXPECT_LE(a.worst, 0.35) << "tp " << ranks;
    EXPECT_GE(static_cast<double>(a.argmax_equal), 0.9 * static_cast<double>(one.rows.size())) << "tp " << ranks;
    EXPECT_GT(a.worst, 0.0) << "q8 sync rounds the partials: it cannot give the f32 bits";
    std::printf("stories260K tp%d q8 sync: max |delta logit| %.3e, argmax equal %zu/%zu\n", ranks, a.worst,
                a.argmax_equal, one.rows.size());
  }
}

TEST(TpDeterminism, SameBitsOnTwentyRuns) {
  // The 8-bit path (Q5_0/Q8_0/F16 matrices), the most sensitive to any reordering, over 2 ranks;
  // F32 weights over 3 uneven ranks.
  for (const auto& [name, ranks] : {std::pair<const char*, int>{"stories260K-Q4_K_M", 2}, {"stories260K", 3}}) {
    auto m = open_shared(name);
    for (TpSync sync : {TpSync::F32, TpSync::Q8}) {
      auto pipe = tp_pipeline(*m, ranks, "auto", false, sync);
      const LogitsFile first = replay_logits(*pipe, m->tokens, m->n_prompt);
      for (int run = 1; run < 20; ++run) {
        const LogitsFile again = replay_logits(*pipe, m->tokens, m->n_prompt);  // from position 0: a rewind
        ASSERT_EQ(again.rows.size(), first.rows.size());
        for (size_t r = 0; r < first.rows.size(); ++r)
          ASSERT_EQ(std::memcmp(again.rows[r].logits.data(), first.rows[r].logits.data(),
                                first.rows[r].logits.size() * sizeof(float)), 0)
              << name << " " << tp_sync_name(sync) << " run " << run << " row " << r;
      }
    }
    // A fresh pipeline (new threads, a new group) gives the same bits too.
    const LogitsFile a = tp(*m, ranks, "auto", false), b = tp(*m, ranks, "auto", false);
    for (size_t r = 0; r < a.rows.size(); ++r) ASSERT_EQ(a.rows[r].logits, b.rows[r].logits) << name << " row " << r;
  }
}

TEST(TpBatch, TwoSequencesInOneBatchGetTheBitsEachGetsAlone) {
  // Each rank's matmuls are row-independent and the joins are element-wise, so TP keeps batch
  // invariance: a step of two sequences (8 prompt rows of one, 3 of the other) gives each the logits
  // it gets alone. The 8-bit path over 3 uneven ranks.
  auto m = open_shared("stories260K");
  TpOptions o;
  o.n_ranks = 3;
  o.make_backend = [](int) { return make_cpu_backend(); };
  TpPipeline pipe(*m->file, m->config, KvOptions{64, 2, DType::F16}, o);
  const std::vector<int32_t> a(m->tokens.begin(), m->tokens.begin() + 8), b(m->tokens.begin() + 8, m->tokens.begin() + 11);
  Batch both;
  both.add_run(a.data(), 8, 0, 0, true);
  both.add_run(b.data(), 3, 0, 1, true);
  const BatchOutput together = pipe.eval(both);
  const int64_t V = m->config.n_vocab;
  Batch alone;
  alone.add_run(a.data(), 8, 0, 0, true);
  const BatchOutput oa = pipe.eval(alone);
  alone.clear();
  alone.add_run(b.data(), 3, 0, 1, true);
  const BatchOutput ob = pipe.eval(alone);
  ASSERT_EQ(together.logits.size(), static_cast<size_t>(11 * V));
  EXPECT_EQ(std::vector<float>(together.logits.begin(), together.logits.begin() + 8 * V), oa.logits);
  EXPECT_EQ(std::vector<float>(together.logits.begin() + 8 * V, together.logits.end()), ob.logits);
}

TEST(TpErrors, MoreRanksThanKvHeadsIsANamedError) {
  auto m = open_shared("randk-Q4_1");  // 8 heads, 2 KV heads
  try {
    tp_pipeline(*m, 3, "scalar", true);
    FAIL() << "3 ranks over 2 KV heads were accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("3 ranks"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("only 2 KV heads"), std::string::npos) << e.what();
  }
}

TEST(TpErrors, RanksBeyondTheWholeBlockUnitsAreANamedError) {
  // stories260K-Q4_K_M: head_dim 8, so a KV-head group is 16 columns of attn_output (Q5_0, blocks
  // of 32): units of 2 groups, 2 units, and 3 ranks would cut a block.
  auto m = open_shared("stories260K-Q4_K_M");
  try {
    tp_pipeline(*m, 3, "auto", false);
    FAIL() << "a cut inside a quant block was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("span 2 groups: 2 units"), std::string::npos) << e.what();
  }
}

TEST(TpErrors, MixtureOfExpertsIsRefused) {
  auto m = open_tiny("mixtral");
  try {
    tp_pipeline(*m, 2, "scalar", true);
    FAIL() << "a MoE model was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("mixture-of-experts"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace herd
