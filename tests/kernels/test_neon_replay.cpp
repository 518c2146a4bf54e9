// Teacher-forced replay of llama.cpp's reference logits through the Arm NEON backend, per kernel
// table, with a minimal loop over one worker Stage (what LocalPipeline + replay_logits do for a
// single stage: the prompt as one batch, then one token at a time), so the cross build needs only
// model/, engine/stage and coordinator/logits_file, not the transports.
//   exact path vs stories260K (F32) and the randk Q4_K_M -deq dump (the exact math of the
//     quantized weights): max |Δlogit| <= 1e-3 and argmax equal on every row, as for the scalar
//     reference and test_simd_replay.cpp (what is left is f32 summation order, far below 1e-3).
//   fast path vs llama.cpp's own quantized Q4_K_M run: max |Δlogit| <= 0.35 and argmax equal on
//     >= 90% of rows (test_simd_replay.cpp's bound: two independent 8-bit activation roundings).
//   thread counts 1 and 3 give bit-identical logits on both paths.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "coordinator/logits_file.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "model/weights.h"
#include "tests/test_paths.h"
#include "engine/stage.h"

namespace herd {
namespace {

LogitsFile replay(const std::string& model_file, const LogitsFile& ref, const char* isa, bool exact, int threads) {
  auto f = model::GgufFile::open(test::model_path(model_file));
  const auto cfg = model::load_config(*f);
  CpuBackendOptions o;
  o.isa = isa;
  o.exact = exact;
  auto be = make_cpu_backend(o);
  be->set_threads(threads);
  const auto n = static_cast<int64_t>(ref.rows.size());
  Stage stage(cfg, model::load_stage_weights(*f, cfg, {0, cfg.n_layers, true, true}), *be, KvOptions{n + 8});
  std::vector<int32_t> tokens;
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(ref.rows[i].pos, i) << "reference rows must be positions 0, 1, 2, ...";
    tokens.push_back(ref.rows[i].input_token);
  }
  LogitsFile out;
  out.n_vocab = static_cast<int32_t>(cfg.n_vocab);
  out.n_prompt = ref.n_prompt;
  std::vector<float> logits;
  auto keep = [&](int64_t first, int64_t count) {
    for (int64_t r = 0; r < count; ++r) {
      LogitsRow row;
      row.pos = static_cast<int32_t>(first + r);
      row.input_token = tokens[first + r];
      row.logits.assign(logits.begin() + r * cfg.n_vocab, logits.begin() + (r + 1) * cfg.n_vocab);
      out.rows.push_back(std::move(row));
    }
  };
  const int64_t n_prompt = std::clamp<int64_t>(ref.n_prompt, 0, n);
  if (n_prompt > 0) {
    stage.forward(tokens.data(), nullptr, n_prompt, 0, /*all_logits=*/true, logits);
    keep(0, n_prompt);
  }
  for (int64_t i = n_prompt; i < n; ++i) {
    stage.forward(&tokens[i], nullptr, 1, i, /*all_logits=*/true, logits);
    keep(i, 1);
  }
  return out;
}

size_t argmax(const std::vector<float>& v) { return static_cast<size_t>(std::max_element(v.begin(), v.end()) - v.begin()); }

struct Case {
  const char* isa;
  const char* model;
  const char* dump;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string n = std::string(info.param.isa) + "_" + info.param.dump;
  n = n.substr(0, n.find(".log1"));
  for (auto& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

#define REQUIRE_ISA_AND_FILES(c)                                                                      \
  if (cpu_supports_isa((c).isa)) {                                                                   \
  } else                                                                                              \
    GTEST_SKIP() << "this CPU cannot run the " << (c).isa << " kernels: " << cpu_backend_description(); \
  HERD_REQUIRE_FILE(test::model_path((c).model));                                                     \
  HERD_REQUIRE_FILE(test::reference_path((c).dump))

void compare(const Case& c, bool exact, double row_tol, double argmax_fraction) {
  const LogitsFile ref = LogitsFile::read(test::reference_path(c.dump));
  const LogitsFile ours = replay(c.model, ref, c.isa, exact, 2);
  ASSERT_EQ(ours.n_vocab, ref.n_vocab);
  ASSERT_EQ(ours.rows.size(), ref.rows.size());
  double worst = 0;
  size_t same = 0;
  for (size_t r = 0; r < ref.rows.size(); ++r) {
    double m = 0;
    for (size_t i = 0; i < ref.rows[r].logits.size(); ++i)
      m = std::max(m, std::fabs(static_cast<double>(ours.rows[r].logits[i]) - ref.rows[r].logits[i]));
    worst = std::max(worst, m);
    EXPECT_LE(m, row_tol) << c.dump << " row " << r;
    same += argmax(ours.rows[r].logits) == argmax(ref.rows[r].logits);
  }
  std::printf("%s %s %s: %zu rows, max |delta logit| %.3e, argmax equal %zu/%zu\n", c.isa, exact ? "exact" : "q8",
              c.dump, ref.rows.size(), worst, same, ref.rows.size());
  EXPECT_GE(static_cast<double>(same), argmax_fraction * static_cast<double>(ref.rows.size())) << c.dump;
  ::testing::Test::RecordProperty("max_abs_delta", std::to_string(worst));
}

class NeonReplayExact : public ::testing::TestWithParam<Case> {};
TEST_P(NeonReplayExact, MatchesDequantizedReferenceWithin1e3) {
  REQUIRE_ISA_AND_FILES(GetParam());
  compare(GetParam(), true, 1e-3, 1.0);
}

class NeonReplayFast : public ::testing::TestWithParam<Case> {};
TEST_P(NeonReplayFast, MatchesLlamaCppQuantizedRun) {
  REQUIRE_ISA_AND_FILES(GetParam());
  compare(GetParam(), false, 0.35, 0.9);
}

#define HERD_NEON_EXACT(isa) \
  Case{isa, "stories260K.gguf", "stories260K.p0.log1"}, Case{isa, "randk-Q4_K_M.gguf", "randk-Q4_K_M-deq.p0.log1"}
INSTANTIATE_TEST_SUITE_P(Shared, NeonReplayExact, ::testing::Values(HERD_NEON_EXACT("neon"), HERD_NEON_EXACT("neon-dotprod")),
                         case_name);
INSTANTIATE_TEST_SUITE_P(Shared, NeonReplayFast,
                         ::testing::Values(Case{"neon", "randk-Q4_K_M.gguf", "randk-Q4_K_M.p0.log1"},
                                           Case{"neon-dotprod", "randk-Q4_K_M.gguf", "randk-Q4_K_M.p0.log1"}),
                         case_name);

// Whole-model runs are bit-identical for 1 and 3 threads on both paths (best table of this CPU).
TEST(NeonReplayThreads, BitIdenticalAcrossThreadCounts) {
  const char* isa = cpu_supports_isa("neon-dotprod") ? "neon-dotprod" : "neon";
  HERD_REQUIRE_FILE(test::model_path("randk-Q4_K_M.gguf"));
  const LogitsFile ref = LogitsFile::read(test::reference_path("randk-Q4_K_M.p0.log1"));
  for (bool exact : {false, true}) {
    const LogitsFile t1 = replay("randk-Q4_K_M.gguf", ref, isa, exact, 1);
    const LogitsFile t3 = replay("randk-Q4_K_M.gguf", ref, isa, exact, 3);
    ASSERT_EQ(t1.rows.size(), t3.rows.size());
    for (size_t r = 0; r < t1.rows.size(); ++r) ASSERT_EQ(t1.rows[r].logits, t3.rows[r].logits) << "row " << r << " exact " << exact;
  }
}

}  // namespace
}  // namespace herd
