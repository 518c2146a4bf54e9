// `--tp N` as a user runs it (herd run / chat / logits / bench): in-process tensor parallelism, and
// over `herd worker` processes (--workers ... --tp N).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <utility>

#include "tests/integration/cluster_util.h"
#include "tests/process.h"
#include "tests/reference_data.h"
#include "tests/test_paths.h"

namespace herd::test {
namespace {

ProcessResult herd(std::vector<std::string> args) {
  args.insert(args.begin(), herd_bin());
  return run_process(args, 120);
}

TEST(CliTp, GreedyRunOverThreeRanksReproducesReferenceText) {
  // stories260K: 8 heads / 4 KV heads over 3 ranks (4 + 2 + 2 heads). f32 sync is within 1e-5 of a
  // one-rank run here (test_tensor_parallel), far below the reference's top-2 gaps along this text.
  const auto ref = read_reference_text(reference_path("stories260K.p0.txt"));
  auto r = herd({"run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time", "--temp", "0", "-n",
                 std::to_string(ref.generated_ids.size()), "--tp", "3", "-t", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, ref.text.size()), ref.text);
}

TEST(CliTp, LogitsReplayOverTwoRanksMatchesLlamaCpp) {
  const std::string out =
      (std::filesystem::temp_directory_path() / ("herd-cli-tp-" + std::to_string(getpid()) + ".log1")).string();
  // f32: the reference replay's tolerance (test_reference_replay). f16: every partial sum rounded
  // to 11 significant bits (relative error <= 2^-11 ~ 5e-4) at 2 joins per layer over 5 layers,
  // logits of magnitude <= ~15: a few 1e-3 at most; 2e-2 leaves room, argmax must still agree.
  for (const auto& [sync, tol] : {std::pair<const char*, const char*>{"f32", "1e-3"}, {"f16", "2e-2"}}) {
    auto r = herd({"logits", "-m", model_path("stories260K.gguf"), "--replay", reference_path("stories260K.p1.log1"),
                   "--out", out, "--tp", "2", "--tp-sync", sync});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = herd({"compare", reference_path("stories260K.p1.log1"), out, "--tol", tol});
    EXPECT_EQ(r.exit_code, 0) << sync << ": " << r.out;
    EXPECT_NE(r.out.find("argmax agree 65/65"), std::string::npos) << sync << ": " << r.out;
  }
  std::remove(out.c_str());
}

TEST(CliTp, GreedyRunOverWorkerRanksReproducesReferenceText) {
  // The same bound as above: worker ranks compute what in-process ranks do (test_cluster_tp: the same
  // bits for the same shares; here the shares follow the workers' measured profiles).
  const auto ref = read_reference_text(reference_path("stories260K.p0.txt"));
  WorkerProcess a, b, c, d;
  const std::string two = a.address() + "," + b.address();
  const std::string four = two + "," + c.address() + "," + d.address();
  for (const auto& extra : {std::vector<std::string>{"--workers", two, "--tp", "2"},
                            {"--workers", four, "--tp", "2", "--split", "0-1,2-4"}}) {
    std::vector<std::string> args = {"run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time", "--temp",
                                     "0", "-n", std::to_string(ref.generated_ids.size()), "-t", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = herd(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.substr(0, ref.text.size()), ref.text) << extra[1];
    EXPECT_NE(r.err.find(extra.size() == 4 ? "1 stage ready" : "2 stages ready"), std::string::npos) << r.err;
  }
}

// --tp auto: the coordinator plans every group size that divides the workers (1 = a pipeline) and
// runs the one with the fastest predicted decode, a larger group only when 10% faster. Which one
// wins depends on this machine's measured profiles and links, so the test reads the predictions the
// coordinator prints and checks the choice against them, then the text (any choice is exact here).
TEST(CliTp, AutoRunsThePlannersChoiceAndSaysWhy) {
  const auto ref = read_reference_text(reference_path("stories260K.p0.txt"));
  WorkerProcess a, b;
  auto r = herd({"run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time", "--temp", "0", "-n",
                 std::to_string(ref.generated_ids.size()), "-t", "1", "--workers", a.address() + "," + b.address(),
                 "--tp", "auto"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, ref.text.size()), ref.text);
  const std::string key = "plan: --tp auto chose tp ";
  const size_t at = r.err.find(key);
  ASSERT_NE(at, std::string::npos) << r.err;
  int chosen = 0;
  double tp1 = 0, tp2 = 0;
  ASSERT_EQ(std::sscanf(r.err.c_str() + at + key.size(), "%d (predicted tp 1 %lf tok/s, tp 2 %lf tok/s)", &chosen, &tp1,
                        &tp2),
            3)
      << r.err.substr(at);
  EXPECT_EQ(chosen, tp2 > 1.1 * tp1 ? 2 : 1) << r.err.substr(at);
  // The plan line names a group ("workers 1-2") only for tp 2; a pipeline names single workers
  // (and may leave one out).
  EXPECT_EQ(r.err.find("plan: workers 1-2 layers") != std::string::npos, chosen == 2) << r.err;
  if (chosen == 1) {
    EXPECT_NE(r.err.find("plan: worker "), std::string::npos) << r.err;
  }

  // Refused where there is nothing to choose from, naming why.
  r = herd({"run", "-m", model_path("stories260K.gguf"), "-p", "hi", "--tp", "auto"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--tp auto needs --workers and no --split"), std::string::npos) << r.err;
  r = herd({"run", "-m", model_path("stories260K.gguf"), "-p", "hi", "--tp", "auto", "--workers",
            a.address() + "," + b.address(), "--plan-strategy", "even"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--tp auto compares plans priced by the planner's tensor-parallel model"), std::string::npos)
      << r.err;
  r = herd({"run", "-m", model_path("stories260K.gguf"), "-p", "hi", "--tp", "automatic"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("invalid value 'automatic' for --tp"), std::string::npos) << r.err;
  r = herd({"run", "-m", model_path("stories260K.gguf"), "-p", "hi", "--tp", "300"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("it must be in 1..256 or auto"), std::string::npos) << r.err;
}

TEST(CliTp, BenchNamesTheRanks) {
  auto r = herd({"bench", "-m", model_path("stories260K.gguf"), "-p", "8", "-n", "4", "-r", "1", "--tp", "2", "-t", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("tp2"), std::string::npos) << r.out;
  // The measured sync share, per test: rank 0 spends some time in its all-reduces (2 per layer).
  for (const char* test : {"pp8", "tg4"}) {
    const std::string key = std::string("tp sync: ") + test + ": ";
    const size_t at = r.err.find(key);
    ASSERT_NE(at, std::string::npos) << r.err;
    double share = -1;
    ASSERT_EQ(std::sscanf(r.err.c_str() + at + key.size(), "%lf%%", &share), 1) << r.err.substr(at);
    EXPECT_GT(share, 0.0) << r.err.substr(at);
    EXPECT_LE(share, 100.0) << r.err.substr(at);
  }
}

TEST(CliTp, ImpossibleOrUnsupportedSplitsAreClearErrors) {
  // randk: 8 heads but 2 KV heads: a third rank would have no whole KV-head group.
  auto r = herd({"logits", "-m", model_path("randk-Q4_1.gguf"), "-p", "hello", "--out", "/dev/null", "--tp", "3"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tensor parallelism over 3 ranks: the model has only 2 KV heads"), std::string::npos) << r.err;
  r = herd({"chat", "-m", model_path("stories260K.gguf"), "-p", "hi", "--tp", "2", "--workers", "127.0.0.1:9"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--tp 2 with 1 workers: the number of workers must be a multiple of --tp"), std::string::npos)
      << r.err;
  r = herd({"run", "-m", model_path("stories260K.gguf"), "-p", "hi", "--tp", "2", "--tp-sync", "bf16"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--tp-sync must be f32, f16 or q8"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace herd::test
