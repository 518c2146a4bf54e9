// Comm across real processes: comm_rank started 2-4 times on 127.0.0.1 (RingComm over TCP), one of
// them killed mid-collective, and comm_mpi_rank under mpirun (MpiComm). Every process has a hard
// time limit (run_process), so nothing here can hang.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <thread>

#include "tests/process.h"

namespace herd::test {
namespace {

std::string tests_dir() { return std::filesystem::path(HERD_TESTS_DIR).string(); }

std::vector<ProcessResult> run_all(const std::vector<std::vector<std::string>>& argvs, double timeout_s) {
  std::vector<ProcessResult> res(argvs.size());
  std::vector<std::thread> ts;
  for (size_t i = 0; i < argvs.size(); ++i) ts.emplace_back([&, i] { res[i] = run_process(argvs[i], timeout_s); });
  for (auto& t : ts) t.join();
  return res;
}

std::string fresh_dir() {
  char tmpl[] = "/tmp/herd-comm-XXXXXX";
  return mkdtemp(tmpl);
}

TEST(CommProcesses, RingOverTcpOn2To4Processes) {
  for (int n : {2, 3, 4}) {
    const std::string dir = fresh_dir();
    std::vector<std::vector<std::string>> argvs;
    for (int r = 0; r < n; ++r)
      argvs.push_back({tests_dir() + "/comm_rank", std::to_string(r), std::to_string(n), dir, "check"});
    const auto res = run_all(argvs, 60);
    for (int r = 0; r < n; ++r) {
      EXPECT_FALSE(res[r].timed_out) << n << " ranks, rank " << r;
      EXPECT_EQ(res[r].exit_code, 0) << n << " ranks, rank " << r << ": " << res[r].err;
      EXPECT_NE(res[r].out.find("all checks passed"), std::string::npos) << res[r].out;
    }
    std::filesystem::remove_all(dir);
  }
}

TEST(CommProcesses, KilledRankIsAnErrorForTheOthersWithinSeconds) {
  for (int n : {2, 3}) {
    const int victim = 1;
    const std::string dir = fresh_dir();
    std::vector<std::vector<std::string>> argvs;
    for (int r = 0; r < n; ++r)
      argvs.push_back({tests_dir() + "/comm_rank", std::to_string(r), std::to_string(n), dir,
                       r == victim ? "die" : "expect-error"});
    const auto t0 = std::chrono::steady_clock::now();
    // The survivors' per-call timeout is 25 s: finishing within 15 s means the death was noticed.
    const auto res = run_all(argvs, 15);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(res[victim].signal, SIGKILL) << res[victim].err;
    for (int r = 0; r < n; ++r) {
      if (r == victim) continue;
      EXPECT_FALSE(res[r].timed_out) << n << " ranks, rank " << r;
      EXPECT_EQ(res[r].exit_code, 0) << n << " ranks, rank " << r << ": " << res[r].err;
      EXPECT_NE(res[r].out.find("error as expected"), std::string::npos) << res[r].out;
    }
    EXPECT_LT(s, 15.0);
    std::filesystem::remove_all(dir);
  }
}

TEST(CommMpi, MpirunOn2To4RanksPassesEveryCheck) {
  const std::string mpirun = find_mpirun();
  if (mpirun.empty()) GTEST_SKIP() << "mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)";
  const std::string exe = tests_dir() + "/comm_mpi_rank";
  if (!std::filesystem::exists(exe)) GTEST_SKIP() << "built without MPI: " << exe << " is missing";
  for (int n : {2, 3, 4}) {
    // As root mpirun needs --allow-run-as-root; 4 ranks on 2 cores need --oversubscribe.
    const ProcessResult r = run_process(
        {mpirun, "--allow-run-as-root", "--oversubscribe", "-np", std::to_string(n), exe}, 90);
    EXPECT_FALSE(r.timed_out) << n << " ranks";
    EXPECT_EQ(r.exit_code, 0) << n << " ranks: " << r.err << r.out;
    size_t passed = 0;
    for (size_t p = r.out.find("all checks passed"); p != std::string::npos; p = r.out.find("all checks passed", p + 1))
      ++passed;
    EXPECT_EQ(passed, size_t(n)) << r.out;
  }
}

}  // namespace
}  // namespace herd::test
