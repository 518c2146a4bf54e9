// `mpirun -np N herd mpi ...`: rank 0 coordinates, ranks 1..N-1 are workers. Greedy output must be
// byte-identical to a single-process `herd run`; errors on rank 0 must end every rank (no hang:
// every mpirun here has a hard time limit). Skipped, with a message, when mpirun is not installed
// or herd was built without MPI (CI installs Open MPI, so there it runs).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "tests/process.h"
#include "tests/test_paths.h"

namespace herd::test {
namespace {

class Mpi : public ::testing::Test {
 protected:
  void SetUp() override {
    mpirun_ = find_mpirun();
    if (mpirun_.empty()) GTEST_SKIP() << "mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)";
    const ProcessResult r = run_process({herd_bin(), "mpi", "--help"}, 30);
    if (r.err.find("no MPI support") != std::string::npos) GTEST_SKIP() << "herd was built without MPI";
    HERD_REQUIRE_FILE(model_path("stories260K.gguf"));
  }
  // As root (CI, this container) mpirun needs --allow-run-as-root; 4 ranks on 2 cores need --oversubscribe.
  ProcessResult mpi(int np, std::vector<std::string> args, double timeout_s = 120) {
    std::vector<std::string> argv = {mpirun_, "--allow-run-as-root", "--oversubscribe", "-np", std::to_string(np),
                                     herd_bin(), "mpi"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_process(argv, timeout_s);
  }
  static std::vector<std::string> greedy_args() {
    return {"-m", model_path("stories260K.gguf"), "-p", "Once upon a time", "--temp", "0", "-n", "24", "-t", "1"};
  }
  static ProcessResult local(std::vector<std::string> args) {
    args.insert(args.begin(), {herd_bin(), "run"});
    return run_process(args, 60);
  }
  std::string mpirun_;
};

TEST_F(Mpi, GreedyOutputIdenticalToOneProcessOn2To4Ranks) {
  const ProcessResult want = local(greedy_args());
  ASSERT_EQ(want.exit_code, 0) << want.err;
  ASSERT_GT(want.out.size(), std::string("Once upon a time").size() + 10);
  for (int np : {2, 3, 4}) {
    const ProcessResult got = mpi(np, greedy_args());
    ASSERT_FALSE(got.timed_out) << np << " ranks";
    EXPECT_EQ(got.exit_code, 0) << np << " ranks: " << got.err;
    EXPECT_EQ(got.out, want.out) << np << " ranks";
  }
}

TEST_F(Mpi, SplitPlansAndExplicitSubcommand) {
  const ProcessResult want = local(greedy_args());
  ASSERT_EQ(want.exit_code, 0) << want.err;
  struct Plan {
    int np;
    std::string split;
  };
  for (const Plan& p : {Plan{3, "0-0,1-4"}, Plan{4, "0-1,2-2,3-4"}, Plan{3, "0-3,4-4"}}) {
    auto args = greedy_args();
    args.insert(args.begin(), "run");
    args.insert(args.end(), {"--split", p.split});
    const ProcessResult got = mpi(p.np, args);
    ASSERT_FALSE(got.timed_out) << p.split;
    EXPECT_EQ(got.exit_code, 0) << p.split << ": " << got.err;
    EXPECT_EQ(got.out, want.out) << p.split;
  }
}

TEST_F(Mpi, LogitsReplayIdenticalToOneProcess) {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string a = (dir / ("herd-mpi-" + std::to_string(getpid()) + "-a.log1")).string();
  const std::string b = (dir / ("herd-mpi-" + std::to_string(getpid()) + "-b.log1")).string();
  const std::vector<std::string> common = {"-m", model_path("stories260K.gguf"), "--replay",
                                           reference_path("stories260K.p1.log1"), "-t", "1"};
  std::vector<std::string> l = {herd_bin(), "logits"};
  l.insert(l.end(), common.begin(), common.end());
  l.insert(l.end(), {"--out", a});
  ASSERT_EQ(run_process(l, 60).exit_code, 0);
  std::vector<std::string> m = {"logits"};
  m.insert(m.end(), common.begin(), common.end());
  m.insert(m.end(), {"--out", b});
  const ProcessResult got = mpi(3, m);
  ASSERT_EQ(got.exit_code, 0) << got.err;
  const std::string sa = slurp(a), sb = slurp(b);
  EXPECT_GT(sa.size(), 1000u);
  EXPECT_TRUE(sa == sb) << "LOG1 files differ";
  std::remove(a.c_str());
  std::remove(b.c_str());
}

// Tensor parallelism under mpirun: the worker ranks form TP groups as any --workers do, and each
// group's all-reduces go over MPI (MpiComm on a communicator split per group, rank-order sums). `-np 3 --tp 2`: one group of ranks 1-2;
// `-np 5 --tp 2 --split 0-1,2-4`: two stages of two. The shares follow the ranks' measured
// profiles, so the bits need not be the equal-share in-process run's: on the continuous path
// (--exact, F32 weights) the logits are within 1e-4 of one process, argmax equal on every row
// (tests/integration/test_cluster_tp.cpp gives the derivation and checks the bits).
TEST_F(Mpi, TensorParallelGroupsOfWorkerRanks) {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string a = (dir / ("herd-mpi-tp-" + std::to_string(getpid()) + "-a.log1")).string();
  const std::string b = (dir / ("herd-mpi-tp-" + std::to_string(getpid()) + "-b.log1")).string();
  const std::vector<std::string> common = {"-m", model_path("stories260K.gguf"), "--replay",
                                           reference_path("stories260K.p1.log1"), "-t", "1", "--exact"};
  std::vector<std::string> l = {herd_bin(), "logits"};
  l.insert(l.end(), common.begin(), common.end());
  l.insert(l.end(), {"--out", a});
  ASSERT_EQ(run_process(l, 60).exit_code, 0);
  for (const auto& [np, extra] : std::vector<std::pair<int, std::vector<std::string>>>{
           {3, {"--tp", "2"}}, {5, {"--tp", "2", "--split", "0-1,2-4"}}}) {
    std::vector<std::string> m = {"logits"};
    m.insert(m.end(), common.begin(), common.end());
    m.insert(m.end(), extra.begin(), extra.end());
    m.insert(m.end(), {"--out", b});
    const ProcessResult got = mpi(np, m);
    ASSERT_FALSE(got.timed_out) << np << " ranks";
    ASSERT_EQ(got.exit_code, 0) << np << " ranks: " << got.err;
    // Each worker rank says what its group all-reduces over: MPI (a split communicator) when the
    // library gives MPI_THREAD_MULTIPLE, as Debian's Open MPI does; else rank 0 says it falls back.
    size_t over_mpi = 0;
    for (size_t at = 0; (at = got.err.find("all-reduces over mpi", at)) != std::string::npos; ++at) ++over_mpi;
    if (got.err.find("no MPI_THREAD_MULTIPLE") == std::string::npos) {
      EXPECT_EQ(over_mpi, static_cast<size_t>(np - 1)) << np << " ranks: " << got.err;
    }
    const ProcessResult cmp = run_process({herd_bin(), "compare", a, b, "--tol", "1e-4"}, 60);
    EXPECT_EQ(cmp.exit_code, 0) << np << " ranks: " << cmp.out;
    EXPECT_NE(cmp.out.find("argmax agree 65/65"), std::string::npos) << np << " ranks: " << cmp.out;
  }
  std::remove(a.c_str());
  std::remove(b.c_str());
}

TEST_F(Mpi, Rank0ErrorsEndEveryRankWithAClearMessage) {
  // A plan that does not fit the ranks: 3 ranges for 2 workers.
  auto args = greedy_args();
  args.insert(args.end(), {"--split", "0-1,2-3,4-4"});
  ProcessResult r = mpi(3, args, 60);
  EXPECT_FALSE(r.timed_out) << "the job hung after an error on rank 0";
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("herd mpi run: error:"), std::string::npos) << r.err;

  // A missing model: every rank still exits.
  r = mpi(3, {"-m", "/nonexistent/model.gguf", "-p", "x", "-n", "4"}, 60);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/model.gguf"), std::string::npos) << r.err;

  // Usage errors: --workers is MPI's job; one rank is not a cluster.
  r = mpi(2, {"-m", model_path("stories260K.gguf"), "-p", "x", "--workers", "127.0.0.1:1"}, 60);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--workers is not allowed"), std::string::npos) << r.err;
  r = mpi(1, greedy_args(), 60);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("at least 2 ranks"), std::string::npos) << r.err;
  // Bad sampling option: the coordinator's usage error, exit 2, and no hang.
  auto bad = greedy_args();
  bad.insert(bad.end(), {"--temp", "hot"});
  r = mpi(2, bad, 60);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

TEST_F(Mpi, WorkerDevicesAreCheckedAndAGpuTheHostLacksEndsTheJobNamingIt) {
  // --worker-device cpu is the default, and runs as without it.
  auto args = greedy_args();
  args.insert(args.end(), {"--worker-device", "cpu"});
  ProcessResult r = mpi(3, args, 120);
  ProcessResult one = local(greedy_args());
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, one.out);
  // A malformed device: every rank ends, the coordinator says why, exit 2.
  args = greedy_args();
  args.insert(args.end(), {"--worker-device", "gpu0"});
  r = mpi(3, args, 60);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--worker-device: expected cpu or cuda:N"), std::string::npos) << r.err;
  // A GPU this host does not have (CI has none): the worker rank names it and the job ends, no hang.
  if (!std::filesystem::exists("/dev/nvidiactl")) {
    args = greedy_args();
    args.insert(args.end(), {"--worker-device", "cuda:auto"});
    r = mpi(3, args, 90);
    EXPECT_FALSE(r.timed_out) << "the job hung on a missing GPU";
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("--worker-device cuda:"), std::string::npos) << r.err;  // cuda:0 or cuda:1, whichever ends it
    EXPECT_TRUE(r.err.find("no CUDA device") != std::string::npos || r.err.find("built without CUDA") != std::string::npos)
        << r.err;
  }
}

}  // namespace
}  // namespace herd::test
