// The memory model against a real process: `herd run` on a model at a given context, its peak
// RSS (getrusage of the exited child: ru_maxrss, the kernel's VmHWM) compared with the planner's
// predicted total for the same single-stage configuration. Under-prediction means a plan that
// OOMs, so the prediction must be an upper bound; it must also stay close enough to be useful.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "model/arch.h"
#include "model/gguf.h"
#include "partition/memory_model.h"
#include "partition/model_shape.h"
#include "partition/profile.h"
#include "tests/test_paths.h"

extern char** environ;

namespace herd::test {
namespace {

// Peak resident set of the finished child in bytes (0 on failure), and its exit code.
struct Peak {
  uint64_t rss_bytes = 0;
  int exit_code = -1;
};

Peak run_and_measure(const std::vector<std::string>& argv, double timeout_s) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  Peak p;
  const int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return p;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  int status = 0;
  rusage ru{};
  for (;;) {
    const pid_t w = wait4(pid, &status, WNOHANG, &ru);
    if (w == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      wait4(pid, &status, 0, &ru);
      return p;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  p.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  p.rss_bytes = static_cast<uint64_t>(ru.ru_maxrss) * 1024;  // Linux: kilobytes
  return p;
}

// The planner's single-stage total for `herd run -c ctx` on the default CPU profile.
partition::StageMemory predicted(const std::string& path, int64_t ctx) {
  auto f = model::GgufFile::open(path, {.map_all = false});
  const auto m = partition::shape_from_gguf(*f, model::load_config(*f));
  const auto c = partition::parse_cluster("device name=this kind=cpu mem=16GB bw=10GB/s\n");
  partition::PlanOptions o;
  o.n_ctx = ctx;
  o.n_batch = 512;  // >= the prompt (one batch), so the scratch term covers the prompt forward
  return partition::stage_memory(m, c.devices[0], 0, m.n_layers(), o);
}

void expect_bound(const std::string& path, int64_t ctx) {
  HERD_REQUIRE_FILE(path);
  const Peak p = run_and_measure({herd_bin(), "run", "-m", path, "-p", "Once upon a time", "-n", "8", "--temp", "0",
                                  "-c", std::to_string(ctx), "-t", "1"},
                                 120);
  ASSERT_EQ(p.exit_code, 0) << "herd run failed on " << path;
  ASSERT_GT(p.rss_bytes, 0u);
  const partition::StageMemory s = predicted(path, ctx);
  const double mib = 1024.0 * 1024.0;
  std::printf("[ rss      ] %s -c %lld: measured peak RSS %.1f MiB, predicted %.1f MiB (weights %.1f + KV %.1f + "
              "scratch %.1f + overhead %.1f + margin %.1f)\n",
              path.c_str(), static_cast<long long>(ctx), static_cast<double>(p.rss_bytes) / mib,
              static_cast<double>(s.total()) / mib, static_cast<double>(s.weights) / mib, static_cast<double>(s.kv) / mib,
              static_cast<double>(s.scratch) / mib, static_cast<double>(s.overhead) / mib, static_cast<double>(s.margin) / mib);
  // Never under-predict: the planner's "fits" must not OOM.
  EXPECT_GE(s.total(), p.rss_bytes);
  // Not absurdly above. KV rows of positions the run never wrote are never paged in (a 4096
  // context run of 16 tokens touches 16 rows), so the tightness check counts the KV of at most
  // 64 positions (prompt + 8 tokens, rounded up to whole pages); the bound above keeps all of it.
  const uint64_t kv_used = s.kv / static_cast<uint64_t>(ctx) * static_cast<uint64_t>(std::min<int64_t>(ctx, 64));
  const uint64_t touched_total = s.total() - s.kv + kv_used;
  // The variable terms (weights + KV + scratch) are exact sizes of buffers
  // the process really holds, so they may exceed their share of the RSS only by what is never
  // paged in (embedding rows no token used; context positions never written, when the allocator
  // hands out untouched zero pages): allow 1.5x the measurement. The fixed terms are reserves the
  // model adds on purpose whatever the model size: the CPU runtime overhead (128 MiB: binary,
  // libraries, tokenizer tables, thread stacks, allocator slack) and the 64 MiB minimum safety
  // margin. They dominate for a 1 MB model, so they are added, not multiplied.
  const double slack = 1.5 * static_cast<double>(p.rss_bytes) + static_cast<double>(s.overhead) + 64.0 * mib;
  EXPECT_LE(static_cast<double>(touched_total), slack);
}

TEST(MemoryModelRss, Stories260K) { expect_bound(model_path("stories260K.gguf"), 512); }
TEST(MemoryModelRss, SmolLM2ShortContext) { expect_bound(smollm2_path(), 256); }
TEST(MemoryModelRss, SmolLM2LongContext) { expect_bound(smollm2_path(), 4096); }

}  // namespace
}  // namespace herd::test
