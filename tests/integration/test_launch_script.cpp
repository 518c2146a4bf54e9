// launch/herd-cluster (installed as build/bin/herd-cluster): starts the workers of a cluster file,
// runs the coordinator over them, and leaves no process behind — after success, after Ctrl-C
// (SIGINT to the script mid-generation), and when a worker cannot start. Orphans are looked for in
// /proc by the unique ports each test's cluster file uses.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <dirent.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "tests/integration/cluster_util.h"

namespace herd::test {
namespace {

using Clock = std::chrono::steady_clock;

std::string script() { return (std::filesystem::path(herd_bin()).parent_path() / "herd-cluster").string(); }

// A port nobody listens on right now (bound to 0, read back, closed).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// Pids of processes whose command line mentions 127.0.0.1:PORT for any of the ports (workers
// listen on tcp://127.0.0.1:PORT; the coordinator has --workers 127.0.0.1:PORT,...).
std::vector<pid_t> processes_using(const std::vector<int>& ports) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    const pid_t pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::string cmd = slurp("/proc/" + std::string(e->d_name) + "/cmdline");
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    const std::string stat = slurp("/proc/" + std::string(e->d_name) + "/stat");
    if (stat.find(") Z ") != std::string::npos) continue;  // a zombie is dead (its parent reaps it)
    for (int p : ports)
      if (cmd.find("127.0.0.1:" + std::to_string(p) + " ") != std::string::npos ||
          cmd.find("127.0.0.1:" + std::to_string(p) + ",") != std::string::npos)
        out.push_back(pid);
  }
  closedir(d);
  // readdir(/proc) may list a pid twice while pids are being allocated (seen after a wraparound).
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// Waits up to timeout_s for every such process to be gone; returns the survivors.
std::vector<pid_t> wait_gone(const std::vector<int>& ports, double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  std::vector<pid_t> left = processes_using(ports);
  while (!left.empty() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    left = processes_using(ports);
  }
  for (pid_t p : left) ::kill(p, SIGKILL);  // do not leak them into the next test
  return left;
}

class LaunchScript : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(access(script().c_str(), X_OK), 0) << script() << " is missing or not executable";
    HERD_REQUIRE_FILE(model_path("stories260K.gguf"));
    file_ = (std::filesystem::temp_directory_path() / ("herd-cluster-" + std::to_string(getpid()) + ".txt")).string();
  }
  void TearDown() override { std::remove(file_.c_str()); }

  // A cluster file of n local workers on fresh ports (remembered in ports_), with `extra` per line.
  void write_cluster(size_t n, const std::vector<std::string>& extra = {}) {
    std::ofstream f(file_);
    f << "# test cluster\n\n";
    ports_.clear();
    for (size_t i = 0; i < n; ++i) {
      ports_.push_back(free_port());
      f << "host=127.0.0.1 port=" << ports_.back() << " threads=1 " << (i < extra.size() ? extra[i] : "")
        << "  # worker " << i + 1 << "\n";
    }
  }
  ProcessResult run_script(std::vector<std::string> herd_args, double timeout_s = 120) {
    std::vector<std::string> argv = {script(), file_, "--"};
    argv.insert(argv.end(), herd_args.begin(), herd_args.end());
    return run_process(argv, timeout_s);
  }
  static std::vector<std::string> greedy_args() {
    return {"run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time", "--temp", "0", "-n", "24", "-t", "1"};
  }
  std::string file_;
  std::vector<int> ports_;
};

TEST_F(LaunchScript, OutputIdenticalToOneProcessOn2And3Workers) {
  auto local = greedy_args();
  local.insert(local.begin(), herd_bin());
  const ProcessResult want = run_process(local, 60);
  ASSERT_EQ(want.exit_code, 0) << want.err;
  for (size_t n : {2u, 3u}) {
    write_cluster(n);
    const ProcessResult got = run_script(greedy_args());
    EXPECT_EQ(got.exit_code, 0) << n << " workers: " << got.err;
    EXPECT_EQ(got.out, want.out) << n << " workers";
    EXPECT_TRUE(wait_gone(ports_, 5).empty()) << "workers left running after a successful run";
  }
  // A split plan, one range per line.
  write_cluster(2);
  auto split = greedy_args();
  split.insert(split.end(), {"--split", "0-0,1-4"});
  const ProcessResult got = run_script(split);
  EXPECT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(got.out, want.out);
  EXPECT_TRUE(wait_gone(ports_, 5).empty());
}

// --insecure and --key among the herd args reach the workers too: a coordinator alone in its mode
// would fail the handshake ("security mismatch" / another cluster key).
TEST_F(LaunchScript, InsecureAndKeyReachTheWorkers) {
  auto local = greedy_args();
  local.insert(local.begin(), herd_bin());
  const ProcessResult want = run_process(local, 60);
  ASSERT_EQ(want.exit_code, 0) << want.err;
  write_cluster(2);
  auto insecure = greedy_args();
  insecure.push_back("--insecure");
  ProcessResult got = run_script(insecure);
  EXPECT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(got.out, want.out);
  EXPECT_NE(got.err.find("WARNING: --insecure"), std::string::npos) << got.err;
  EXPECT_TRUE(wait_gone(ports_, 5).empty());
  const std::string key = file_ + ".key";
  std::remove(key.c_str());
  ASSERT_EQ(run_process({herd_bin(), "keygen", "--out", key}, 30).exit_code, 0);
  write_cluster(2);
  auto keyed = greedy_args();
  keyed.insert(keyed.end(), {"--key", key});
  got = run_script(keyed);
  EXPECT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(got.out, want.out);
  EXPECT_TRUE(wait_gone(ports_, 5).empty());
  std::remove(key.c_str());
}

TEST_F(LaunchScript, SshWorkersStartAndAreKilledByRemotePid) {
  // A stand-in for ssh that runs the remote command here: `fake-ssh BOX CMD`.
  const std::string fake = file_ + ".ssh";
  {
    std::ofstream f(fake);
    f << "#!/bin/sh\nshift\nexec sh -c \"$*\"\n";
  }
  std::filesystem::permissions(fake, std::filesystem::perms::owner_all);
  setenv("HERD_CLUSTER_SSH", fake.c_str(), 1);
  write_cluster(2, {"", "ssh=box bind=127.0.0.1 herd=" + herd_bin()});
  auto local = greedy_args();
  local.insert(local.begin(), herd_bin());
  const ProcessResult want = run_process(local, 60);
  const ProcessResult got = run_script(greedy_args());
  unsetenv("HERD_CLUSTER_SSH");
  std::remove(fake.c_str());
  EXPECT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(got.out, want.out);
  EXPECT_TRUE(wait_gone(ports_, 5).empty());
}

TEST_F(LaunchScript, SigintMidGenerationLeavesNoProcessAndExitsNonZero) {
  write_cluster(2);
  Child run({script(), file_, "--", "run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time", "--temp",
             "0", "-n", "2000", "-c", "2048", "-t", "1"});
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (run.out().size() < 40 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_GE(run.out().size(), 40u) << "generation did not start: " << run.err();
  std::string seen;
  for (pid_t p : processes_using(ports_)) seen += slurp("/proc/" + std::to_string(p) + "/cmdline") + "\n";
  ASSERT_EQ(processes_using(ports_).size(), 3u) << "expected 2 workers and the coordinator:\n" << seen;
  ::kill(run.pid(), SIGINT);
  const auto t = Clock::now();
  const int code = run.wait_exit(10);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t).count(), 5.0);
  EXPECT_NE(code, 0) << run.err();
  EXPECT_NE(run.err().find("interrupted"), std::string::npos) << run.err();
  const auto left = wait_gone(ports_, 3);
  EXPECT_TRUE(left.empty()) << left.size() << " processes survived the script";
}

// Under herd-cluster, chat owns Ctrl-C: a SIGINT stops the answer and the workers stay; one at the
// prompt ends chat, and with it the cluster. (From a terminal the coordinator, in the script's
// process group, gets the same SIGINT as the script; here the script, in a group of its own, gets
// it alone and passes it on.)
TEST_F(LaunchScript, ChatCtrlCStopsTheAnswerAndAtThePromptEndsTheCluster) {
  HERD_REQUIRE_FILE(smollm2_path());
  write_cluster(2);
  Child chat({script(), file_, "--", "chat", "-m", smollm2_path(), "--temp", "0", "-n", "100000"},
             ChildOptions{.stdin_pipe = true, .own_group = true});
  ASSERT_TRUE(chat.write_stdin("Write a very long story about a dragon who learns to cook.\n"));
  const auto until = [&](auto done, double timeout_s) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
    while (!done() && chat.running() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return done();
  };
  ASSERT_TRUE(until([&] { return chat.out().size() >= 20; }, 240)) << "no answer: " << chat.err();
  ASSERT_EQ(processes_using(ports_).size(), 3u) << "expected 2 workers and the coordinator";
  ::kill(chat.pid(), SIGINT);
  ASSERT_TRUE(until([&] { return chat.err().find("herd chat: stopped") != std::string::npos; }, 10)) << chat.err();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE(chat.running()) << chat.err();
  EXPECT_EQ(processes_using(ports_).size(), 3u) << "Ctrl-C during an answer must not stop the cluster";
  EXPECT_EQ(chat.err().find("interrupted"), std::string::npos) << chat.err();
  ASSERT_TRUE(chat.write_stdin("/help\n"));
  ASSERT_TRUE(until([&] { return chat.err().find("commands:") != std::string::npos; }, 30)) << chat.err();
  ::kill(chat.pid(), SIGINT);
  EXPECT_EQ(chat.wait_exit(10), 0) << chat.err();
  const auto left = wait_gone(ports_, 3);
  EXPECT_TRUE(left.empty()) << left.size() << " processes survived chat";
}

// SIGKILL of the script runs no teardown: the workers end by themselves (--exit-with-parent), so
// no worker is left and their ports are free again. (Before, they kept serving, holding the ports.)
TEST_F(LaunchScript, SigkillOfTheScriptLeavesNoWorker) {
  write_cluster(2);
  Child chat({script(), file_, "--", "chat", "-m", model_path("stories260K.gguf"), "-t", "1"},
             ChildOptions{.stdin_pipe = true, .own_group = true});
  // Up: two workers and the coordinator (chat waits at its prompt).
  std::vector<pid_t> workers;
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline && chat.running()) {
    workers.clear();
    for (pid_t p : processes_using(ports_))
      if (slurp("/proc/" + std::to_string(p) + "/cmdline").find(std::string("worker") + '\0') != std::string::npos)
        workers.push_back(p);
    if (workers.size() == 2 && processes_using(ports_).size() == 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(workers.size(), 2u) << chat.err();
  ::kill(chat.pid(), SIGKILL);
  auto alive = [](pid_t p) {
    const std::string stat = slurp("/proc/" + std::to_string(p) + "/stat");
    return !stat.empty() && stat.find(") Z ") == std::string::npos;
  };
  const auto until = Clock::now() + std::chrono::seconds(2);
  while (Clock::now() < until && (alive(workers[0]) || alive(workers[1])))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  for (pid_t p : workers) EXPECT_FALSE(alive(p)) << "worker " << p << " outlived the SIGKILLed herd-cluster";
  // The ports: a dead worker's end of each connection lingers (FIN_WAIT) until the orphaned
  // coordinator's ZeroMQ closes its end, which its I/O thread does when it next runs (under a loaded
  // ctest -j2, not always at once); SO_REUSEADDR binds past the TIME_WAIT that follows. So each port
  // must become bindable within a few seconds, not at this instant.
  auto bindable = [](int port) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    close(fd);
    return ok;
  };
  for (int port : ports_) {
    const auto port_deadline = Clock::now() + std::chrono::seconds(5);
    while (!bindable(port) && Clock::now() < port_deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_TRUE(bindable(port)) << "port " << port << " still held 5 s after the workers ended";
  }
  chat.close_stdin();  // the orphaned coordinator leaves at end of input
  wait_gone(ports_, 5);
}

TEST_F(LaunchScript, BadClusterFileNamesTheLine) {
  {
    std::ofstream f(file_);
    f << "# comment\nhost=127.0.0.1 port=7101\nhost=127.0.0.1 port=seven\n";
  }
  ProcessResult r = run_script(greedy_args(), 30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(file_ + ":3:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("port"), std::string::npos) << r.err;
  {
    std::ofstream f(file_);
    f << "host=127.0.0.1 port=7101 colour=blue\n";
  }
  r = run_script(greedy_args(), 30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(file_ + ":1: unknown key 'colour'"), std::string::npos) << r.err;
  {
    std::ofstream f(file_);
    f << "host=192.0.2.7 port=7101\n";  // not this machine, no ssh=
  }
  r = run_script(greedy_args(), 30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(":1: host=192.0.2.7 is not this machine"), std::string::npos) << r.err;
  r = run_process({script(), file_, "run"}, 30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("expected --"), std::string::npos) << r.err;
}

// device=cuda:N reaches the worker as `--device cuda:N` (here and over ssh); device=cpu adds no
// flag; device=metal is refused naming the line. A stand-in herd (HERD=) records each worker's
// arguments and exits, and passes every other subcommand to the real herd.
TEST_F(LaunchScript, DeviceReachesTheWorkerAsAFlag) {
  const std::string fake = file_ + ".herd", argv_log = file_ + ".argv", ssh = file_ + ".ssh";
  {
    std::ofstream f(fake);
    f << "#!/bin/sh\nif [ \"$1\" = worker ]; then echo \"$*\" >> '" << argv_log << "'; exit 3; fi\nexec '" << herd_bin()
      << "' \"$@\"\n";
    std::ofstream s(ssh);
    s << "#!/bin/sh\nshift\nexec sh -c \"$*\"\n";
  }
  std::filesystem::permissions(fake, std::filesystem::perms::owner_all);
  std::filesystem::permissions(ssh, std::filesystem::perms::owner_all);
  std::remove(argv_log.c_str());
  setenv("HERD", fake.c_str(), 1);
  setenv("HERD_CLUSTER_SSH", ssh.c_str(), 1);
  write_cluster(3, {"device=cuda:1", "", "device=cuda:2 ssh=box bind=127.0.0.1 herd=" + fake});
  ProcessResult r = run_script(greedy_args(), 60);
  EXPECT_EQ(r.exit_code, 1) << r.err;  // the stand-in workers never listen
  const std::string log = slurp(argv_log);
  EXPECT_NE(log.find("tcp://127.0.0.1:" + std::to_string(ports_[0]) + " -t 1 --device cuda:1 "), std::string::npos) << log;
  EXPECT_NE(log.find("tcp://127.0.0.1:" + std::to_string(ports_[2]) + " -t 1 --device cuda:2"), std::string::npos) << log;
  size_t device_flags = 0;
  for (size_t at = log.find("--device"); at != std::string::npos; at = log.find("--device", at + 1)) ++device_flags;
  EXPECT_EQ(device_flags, 2u) << "a cpu worker got --device:\n" << log;
  write_cluster(2, {"", "device=metal"});
  r = run_script(greedy_args(), 30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(file_ + ":4: device=metal cannot run a herd worker"), std::string::npos) << r.err;
  unsetenv("HERD");
  unsetenv("HERD_CLUSTER_SSH");
  for (const auto& p : {fake, argv_log, ssh}) std::remove(p.c_str());
  EXPECT_TRUE(wait_gone(ports_, 5).empty());
}

TEST_F(LaunchScript, WorkerThatCannotStartIsNamedAndNothingIsLeft) {
  // Hold the second worker's port.
  const int busy = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(busy, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(busy, 1), 0);
  socklen_t len = sizeof(a);
  getsockname(busy, reinterpret_cast<sockaddr*>(&a), &len);
  const int busy_port = ntohs(a.sin_port);
  const int ok_port = free_port();
  {
    std::ofstream f(file_);
    f << "host=127.0.0.1 port=" << ok_port << " threads=1\nhost=127.0.0.1 port=" << busy_port << " threads=1\n";
  }
  const auto t = Clock::now();
  const ProcessResult r = run_script(greedy_args(), 60);
  close(busy);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t).count(), 10.0) << "should fail fast, not time out";
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("worker 2 of 2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("127.0.0.1:" + std::to_string(busy_port)), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("did not start"), std::string::npos) << r.err;
  EXPECT_TRUE(wait_gone({ok_port, busy_port}, 3).empty()) << "the worker that did start was left running";
  EXPECT_TRUE(r.out.empty()) << "the coordinator must not run";
}

}  // namespace
}  // namespace herd::test
