// Q2_K and Q3_K against llama.cpp: teacher-forced replay of tests/data/lowbit-*.log1, the logits
// llama.cpp computed (scripts/gen-lowbit-reference.py) for the seeded models of
// tests/tools/tiny_models.h (write_lowbit_model: llama.cpp's Q2_K and Q3_K_M mixes, quantized by
// herd; same bytes on every platform).
//   exact math (the reference backend and each ISA's exact path) vs the -deq dumps, llama.cpp run on
//     the same weights dequantized to F32: max |Δlogit| <= 1e-3, argmax equal on every row. This is
//     what pins our reading of the bytes to llama.cpp's: a misread bit moves logits by far more.
//   the 8-bit path (each ISA) vs llama.cpp's quantized run: the tolerance of the other K-quants
//     (test_simd_replay: max |Δlogit| <= 0.35, argmax equal on >= 90% of rows).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "coordinator/logits_file.h"
#include "coordinator/replay.h"
#include "engine/pipeline.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "tests/logits_agreement.h"
#include "tests/test_paths.h"
#include "tests/tools/tiny_models.h"

namespace herd {
namespace {

struct Case {
  const char* mix;   // "Q2_K", "Q3_K_M"
  const char* isa;   // "scalar" (the reference backend), "avx2", "avx512"
  bool exact;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return std::string(info.param.mix) + "_" + info.param.isa + (info.param.exact ? "_exact" : "_q8");
}

class LowBitReplay : public ::testing::TestWithParam<Case> {};

TEST_P(LowBitReplay, MatchesLlamaCpp) {
  const Case& c = GetParam();
  if (std::string(c.isa) != "scalar" && !cpu_supports_isa(c.isa))
    GTEST_SKIP() << "this CPU cannot run the " << c.isa << " kernels: " << cpu_backend_description();
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("herd-lowbit-" + std::to_string(getpid()) + "-" + c.mix + ".gguf")).string();
  test::write_lowbit_model(c.mix, false, test::model_path("stories260K.gguf"), path);
  const std::string dump =
      std::string(HERD_SOURCE_DIR) + "/tests/data/lowbit-" + c.mix + (c.exact ? "-deq" : "") + ".log1";
  const LogitsFile ref = LogitsFile::read(dump);
  ASSERT_EQ(replay_tokens(ref, dump), test::tiny_model_tokens()) << "reference made for other tokens";

  auto f = model::GgufFile::open(path);
  const auto cfg = model::load_config(*f);
  CpuBackendOptions o;
  o.isa = c.isa;
  o.exact = c.exact;
  auto be = make_cpu_backend(o);
  LocalPipeline pipe(*f, cfg, *be, 64);
  const LogitsFile ours = replay_logits(pipe, test::tiny_model_tokens(), ref.n_prompt);
  ASSERT_EQ(ours.rows.size(), ref.rows.size());
  const double tol = c.exact ? 1e-3 : 0.35;
  const test::LogitsAgreement a = test::compare_logits(ours, ref);
  for (size_t r = 0; r < a.row_max.size(); ++r) EXPECT_LE(a.row_max[r], tol) << c.mix << " row " << r;
  if (c.exact) {
    EXPECT_EQ(a.argmax_equal, ref.rows.size());
  } else {
    EXPECT_GE(static_cast<double>(a.argmax_equal), 0.9 * static_cast<double>(ref.rows.size()));
  }
  std::printf("%s %s %s: %zu rows, max |delta logit| %.3e, argmax equal %zu/%zu\n", c.mix, c.isa,
              c.exact ? "exact" : "q8", ref.rows.size(), a.worst, a.argmax_equal, ref.rows.size());
  std::filesystem::remove(path);
}

INSTANTIATE_TEST_SUITE_P(
    Mixes, LowBitReplay,
    ::testing::Values(Case{"Q2_K", "scalar", true}, Case{"Q3_K_M", "scalar", true}, Case{"Q2_K", "avx2", true},
                      Case{"Q3_K_M", "avx2", true}, Case{"Q2_K", "avx512", true}, Case{"Q3_K_M", "avx512", true},
                      Case{"Q2_K", "avx2", false}, Case{"Q3_K_M", "avx2", false}, Case{"Q2_K", "avx512", false},
                      Case{"Q3_K_M", "avx512", false}),
    case_name);

}  // namespace
}  // namespace herd
