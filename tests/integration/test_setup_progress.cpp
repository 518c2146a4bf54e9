// What a user sees while a cluster starts: the coordinator's weight-transfer progress and its
// "N stages ready" line (coordinator/setup_progress.h), and each worker's line for who connected
// and what it loaded — at the default log level, and nothing of it under HERD_LOG=error.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "common/log.h"
#include "coordinator/remote_pipeline.h"
#include "coordinator/setup_progress.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "tests/integration/cluster_util.h"

namespace herd::test {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// Everything `f` wrote to a temporary FILE*.
template <typename F>
std::string written(F f) {
  std::FILE* out = std::tmpfile();
  f(out);
  std::fflush(out);
  std::rewind(out);
  std::string s;
  for (int c; (c = std::fgetc(out)) != EOF;) s += static_cast<char>(c);
  std::fclose(out);
  return s;
}

TEST(SetupProgress, NotATerminalALinePerQuarterThenTheTotalAndTheSummary) {
  const std::string s = written([](std::FILE* out) {
    SetupProgress p(true, false, out);
    p.assigning("tcp://127.0.0.1:5001", "layers 15-29");
    p.sent("tcp://127.0.0.1:5001", 10 * kMiB, 100 * kMiB);  // below 25%: nothing yet
    p.sent("tcp://127.0.0.1:5001", 30 * kMiB, 100 * kMiB);
    p.sent("tcp://127.0.0.1:5001", 40 * kMiB, 100 * kMiB);  // still the second quarter
    p.sent("tcp://127.0.0.1:5001", 80 * kMiB, 100 * kMiB);  // two steps at once: one line
    p.sent("tcp://127.0.0.1:5001", 100 * kMiB, 100 * kMiB);
    p.stage_done("tcp://127.0.0.1:5001");
    p.assigning("tcp://127.0.0.1:5000", "layers 0-14");  // a worker that had its weights
    p.stage_done("tcp://127.0.0.1:5000");
    p.all_ready(2, 3.24, 100 * kMiB);
  });
  const std::string want =
      "herd: sending weights to 127.0.0.1:5001: 30% (30.0 / 100.0 MiB)\n"
      "herd: sending weights to 127.0.0.1:5001: 80% (80.0 / 100.0 MiB)\n"
      "herd: sent 100.0 MiB of weights to 127.0.0.1:5001 in ";
  EXPECT_EQ(s.substr(0, want.size()), want) << s;
  EXPECT_EQ(s.find('\r'), std::string::npos) << "no in-place updates in a file";
  const std::string tail = "herd: 2 stages ready in 3.2 s (100.0 MiB of weights sent)\n";
  ASSERT_GE(s.size(), tail.size());
  EXPECT_EQ(s.substr(s.size() - tail.size()), tail) << s;
  EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 4) << s;
}

TEST(SetupProgress, OnATerminalOneLineUpdatedInPlace) {
  const std::string s = written([](std::FILE* out) {
    SetupProgress p(true, true, out);
    p.assigning("tcp://127.0.0.1:5001", "layers 15-29");
    p.sent("tcp://127.0.0.1:5001", 50 * kMiB, 100 * kMiB);
    p.sent("tcp://127.0.0.1:5001", 100 * kMiB, 100 * kMiB);
    p.stage_done("tcp://127.0.0.1:5001");
    p.all_ready(1, 0.5, 0);
  });
  EXPECT_EQ(s.rfind("\rherd: loading layers 15-29 on 127.0.0.1:5001 ...", 0), 0u) << s;
  EXPECT_NE(s.find("\rherd: sending weights to 127.0.0.1:5001: 50% (50.0 / 100.0 MiB)"), std::string::npos) << s;
  EXPECT_NE(s.find("\rherd: sending weights to 127.0.0.1:5001: 100% (100.0 / 100.0 MiB)"), std::string::npos) << s;
  EXPECT_NE(s.find("\rherd: sent 100.0 MiB of weights to 127.0.0.1:5001 in "), std::string::npos) << s;
  EXPECT_NE(s.find("\rherd: 1 stage ready in 0.5 s\n"), std::string::npos) << s;
  EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 2) << "the transfer's total and the summary end lines: " << s;
}

TEST(SetupProgress, QuietUnderHerdLogErrorAndWhenNotAsked) {
  const LogLevel before = log_level();
  set_log_level(LogLevel::error);
  auto all = [](bool enabled) {
    return written([enabled](std::FILE* out) {
      SetupProgress p(enabled, false, out);
      p.sent("w", 50, 100);
      p.stage_done("w");
      p.all_ready(1, 1, 100);
    });
  };
  EXPECT_EQ(all(true), "");
  set_log_level(LogLevel::warn);
  EXPECT_EQ(all(false), "");
  EXPECT_NE(all(true), "");
  set_log_level(before);
}

// Real workers without the model: the coordinator reports each transfer and the summary; each
// worker says which coordinator connected and what it loaded, fetched from where.
TEST(SetupProgress, WorkersWithoutTheModelShowTheTransferOnBothSides) {
  auto file = model::GgufFile::open(model_path("stories260K.gguf"));
  const model::ModelConfig config = model::load_config(*file);
  char t0[] = "/tmp/herd-notes-a-XXXXXX", t1[] = "/tmp/herd-notes-b-XXXXXX";
  const std::string d0 = mkdtemp(t0), d1 = mkdtemp(t1);
  {
    WorkerProcess w0("*", {"--cache-dir", d0}), w1("*", {"--cache-dir", d1});
    RemotePipelineOptions o;
    o.split = "0-2,3-4";
    o.n_ctx = 256;
    o.model_path = "/nonexistent/herd-test/stories260K.gguf";  // so that the workers fetch it
    o.show_progress = true;
    o.workers = {w0.address(), w1.address()};
    testing::internal::CaptureStderr();
    std::string err;
    try {
      RemotePipeline remote(*file, config, o);
      err = testing::internal::GetCapturedStderr();
    } catch (...) {
      err = testing::internal::GetCapturedStderr();
      FAIL() << err;
    }
    EXPECT_NE(err.find("MiB of weights to " + w0.address().substr(6) + " in "), std::string::npos) << err;
    EXPECT_NE(err.find("MiB of weights to " + w1.address().substr(6) + " in "), std::string::npos) << err;
    EXPECT_NE(err.find("herd: 2 stages ready in "), std::string::npos) << err;
    EXPECT_NE(err.find("MiB of weights sent)"), std::string::npos) << err;
    // Each worker writes (and flushes) its lines before it answers Ready.
    const std::string e0 = w0.child().err(), e1 = w1.child().err();
    EXPECT_NE(e0.find("herd worker: coordinator "), std::string::npos) << e0;
    EXPECT_NE(e0.find(" connected"), std::string::npos) << e0;
    EXPECT_NE(e0.find("herd worker: assigned layers 0-2 of "), std::string::npos) << e0;
    EXPECT_NE(e0.find("kv f32, 1 slot) in "), std::string::npos) << e0;
    EXPECT_NE(e0.find("MiB fetched from the coordinator"), std::string::npos) << e0;
    EXPECT_NE(e1.find("herd worker: assigned layers 3-4 of "), std::string::npos) << e1;
  }
  std::filesystem::remove_all(d0);
  std::filesystem::remove_all(d1);
}

// The same lines are gone under HERD_LOG=error, on both sides.
TEST(SetupProgress, HerdLogErrorSilencesTheWorkerAndTheCoordinator) {
  setenv("HERD_LOG", "error", 1);
  WorkerProcess w0, w1;
  const ProcessResult r =
      run_process({herd_bin(), "run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time", "-n", "4",
                   "--split", "0-2,3-4", "--workers", w0.address() + "," + w1.address()},
                  120);
  unsetenv("HERD_LOG");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("stages ready"), std::string::npos) << r.err;
  EXPECT_EQ(w0.child().err().find("herd worker: coordinator"), std::string::npos) << w0.child().err();
  EXPECT_EQ(w0.child().err().find("herd worker: assigned"), std::string::npos) << w0.child().err();

  WorkerProcess w2, w3;
  const ProcessResult shown =
      run_process({herd_bin(), "run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time", "-n", "4",
                   "--split", "0-2,3-4", "--workers", w2.address() + "," + w3.address()},
                  120);
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.err.find("herd: 2 stages ready in "), std::string::npos) << shown.err;
  EXPECT_NE(w2.child().err().find("herd worker: assigned layers 0-2 of "), std::string::npos) << w2.child().err();
}

}  // namespace
}  // namespace herd::test
