// Helpers for cluster tests: `herd worker` child processes (always killed at the end, no orphans),
// and the two numeric checks a pipeline must pass against LocalPipeline: teacher-forced logits
// bit-identical (memcmp) and greedy ids identical.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "engine/pipeline.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "coordinator/replay.h"
#include "tests/process.h"
#include "tests/test_paths.h"

namespace herd::test {

// The single-process reference a cluster test compares against: the model opened the way
// `herd run` opens it, on the default CPU kernels with 1 thread, in one 256-token LocalPipeline.
struct LocalReference {
  std::unique_ptr<model::GgufFile> file;
  model::ModelConfig config;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LocalPipeline> local;
  explicit LocalReference(const std::string& name) {
    file = model::GgufFile::open(model_path(name));
    config = model::load_config(*file);
    backend = make_cpu_backend();  // what `herd run` and the workers use by default
    backend->set_threads(1);
    local = std::make_unique<LocalPipeline>(*file, config, *backend, 256);
  }
};

struct ChildOptions {
  bool stdin_pipe = false;  // stdin is a pipe fed by write_stdin()/close_stdin() (else /dev/null)
  bool own_group = false;   // its own process group, away from a terminal's foreground group
};

// A child process whose stdout/stderr go to files; SIGKILLed and reaped on destruction.
class Child {
 public:
  explicit Child(const std::vector<std::string>& argv, ChildOptions opts = {}) {
    char tmpl[] = "/tmp/herd-cluster-XXXXXX";
    dir_ = mkdtemp(tmpl);
    int in[2] = {-1, -1};
    if (opts.stdin_pipe && pipe2(in, O_CLOEXEC) != 0) in[0] = in[1] = -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (in[0] >= 0) posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    else posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, (dir_ + "/out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, (dir_ + "/err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    if (opts.own_group) {
      posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
      posix_spawnattr_setpgroup(&attr, 0);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (posix_spawn(&pid_, args[0], &fa, &attr, args.data(), environ) != 0) pid_ = -1;
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (in[0] >= 0) ::close(in[0]);
    stdin_ = in[1];
  }
  ~Child() {
    close_stdin();
    kill9();
    std::remove((dir_ + "/out").c_str());
    std::remove((dir_ + "/err").c_str());
    rmdir(dir_.c_str());
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  // With ChildOptions::stdin_pipe: feeds its standard input; false when it cannot be written.
  bool write_stdin(const std::string& text) {
    ::signal(SIGPIPE, SIG_IGN);  // a child that has gone is a failed write, not a dead test
    size_t done = 0;
    while (stdin_ >= 0 && done < text.size()) {
      const ssize_t w = ::write(stdin_, text.data() + done, text.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      done += static_cast<size_t>(w);
    }
    return stdin_ >= 0;
  }
  void close_stdin() {
    if (stdin_ >= 0) ::close(stdin_);
    stdin_ = -1;
  }
  bool running() {
    if (exited_ || pid_ <= 0) return false;
    if (waitpid(pid_, &status_, WNOHANG) == pid_) exited_ = true;
    return !exited_;
  }
  std::string out() const { return slurp(dir_ + "/out"); }
  std::string err() const { return slurp(dir_ + "/err"); }
  void kill9() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, &status_, 0);
      exited_ = true;
    }
  }
  // Waits up to timeout_s for the exit; returns the exit code, -1 if it did not exit (then killed).
  int wait_exit(double timeout_s) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (!exited_) {
      if (waitpid(pid_, &status_, WNOHANG) == pid_) {
        exited_ = true;
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        kill9();
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
  }

 private:
  std::string dir_;
  pid_t pid_ = -1;
  int stdin_ = -1;
  int status_ = 0;
  bool exited_ = false;
};

// `herd worker --listen tcp://127.0.0.1:PORT` (PORT "*" = a free one); address() is what it bound.
class WorkerProcess {
 public:
  // any_model_path: --models-dir / (the worker opens the coordinator's model path wherever it is, as
  // every worker did before [trust] item 4; the tests of that default pass false).
  // --exit-with-parent: a test process that dies (a crash, ctest's timeout) leaves no worker behind.
  explicit WorkerProcess(const std::string& port = "*", std::vector<std::string> extra = {}, bool any_model_path = true) {
    std::vector<std::string> argv = {herd_bin(), "worker", "--listen", "tcp://127.0.0.1:" + port, "-t", "1",
                                     "--exit-with-parent", std::to_string(getpid())};
    if (any_model_path) argv.insert(argv.end(), {"--models-dir", "/"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    child_ = std::make_unique<Child>(argv);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    const std::string key = "listening on ";
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string e = child_->err();
      if (auto at = e.find(key); at != std::string::npos && e.find('\n', at) != std::string::npos) {
        address_ = e.substr(at + key.size(), e.find('\n', at) - at - key.size());
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << "worker did not start: " << child_->err();
  }
  const std::string& address() const { return address_; }
  std::string port() const { return address_.substr(address_.rfind(':') + 1); }
  Child& child() { return *child_; }

 private:
  std::unique_ptr<Child> child_;
  std::string address_;
};

// Teacher-forced tokens: the reference dump's inputs (prompt batch, then one at a time).
inline std::vector<int32_t> reference_tokens(int64_t& n_prompt) {
  const LogitsFile ref = LogitsFile::read(reference_path("stories260K.p1.log1"));
  n_prompt = ref.n_prompt;
  return replay_tokens(ref, "stories260K.p1.log1");
}

inline void expect_same_logits(Pipeline& expected, Pipeline& actual, const std::string& what) {
  int64_t n_prompt = 0;
  const auto tokens = reference_tokens(n_prompt);
  const LogitsFile a = replay_logits(expected, tokens, n_prompt);
  const LogitsFile b = replay_logits(actual, tokens, n_prompt);
  ASSERT_EQ(a.rows.size(), b.rows.size()) << what;
  for (size_t i = 0; i < a.rows.size(); ++i) {
    ASSERT_EQ(a.rows[i].logits.size(), b.rows[i].logits.size());
    ASSERT_EQ(0, std::memcmp(a.rows[i].logits.data(), b.rows[i].logits.data(), a.rows[i].logits.size() * sizeof(float)))
        << what << ": logits of row " << i << " differ";
  }
}

// Greedy decoding of n_new tokens after `prompt`, calling between(i) before the eval of step i
// (tests that kill, stop or attack a worker mid-generation); the ids chosen.
inline std::vector<int32_t> greedy_with(Pipeline& p, const std::vector<int32_t>& prompt, int n_new,
                                        const std::function<void(int)>& between) {
  std::vector<float> logits;
  std::vector<int32_t> out;
  p.eval(prompt.data(), static_cast<int64_t>(prompt.size()), 0, false, logits);
  int64_t pos = static_cast<int64_t>(prompt.size());
  for (int i = 0; i < n_new; ++i) {
    if (between) between(i);
    const auto id = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(id);
    p.eval(&id, 1, pos++, false, logits);
  }
  return out;
}

inline std::vector<int32_t> greedy(Pipeline& p, std::vector<int32_t> prompt, int n_new) {
  return greedy_with(p, prompt, n_new, {});
}

}  // namespace herd::test
