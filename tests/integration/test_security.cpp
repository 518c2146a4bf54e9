// Issue [trust] items 1-2 against real `herd worker` processes on 127.0.0.1: a peer without the
// cluster key cannot stop a worker, make it open a file, reset it or feed it a Forward; a proxy
// that alters or replays lane bytes is detected and named (and the worker survives it); --insecure
// on one side only is a clear error within the connect timeout. Each of these attacks worked
// before protocol 7 (any process reaching the port was a coordinator; lanes were clear).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <zmq.hpp>

#include "cluster/protocol.h"
#include "coordinator/remote_pipeline.h"
#include "tests/integration/cluster_util.h"
#include "transport/codec.h"
#include "transport/security.h"
#include "transport/zmq_link.h"
#include "worker/worker_server.h"

namespace herd::test {
namespace {

using Clock = std::chrono::steady_clock;

std::unique_ptr<RemotePipeline> remote(LocalReference& m, const std::vector<std::string>& workers) {
  RemotePipelineOptions o;
  o.workers = workers;
  o.n_ctx = 256;
  o.connect_timeout_ms = 3000;
  return std::make_unique<RemotePipeline>(*m.file, m.config, o);
}

// One key for the suite, in a temporary file: the worker processes read it through $HERD_KEY.
class Security : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/herd-sectest-XXXXXX";
    dir_ = mkdtemp(tmpl);
    ::setenv("HERD_KEY", (dir_ + "/cluster.key").c_str(), 1);
    transport::configure_security({false, ""});
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
  void TearDown() override {
    transport::set_lane_redirect_for_tests({});
    transport::configure_security({false, ""});
  }
  static std::string dir_;
};
std::string Security::dir_;

const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378};

void send_raw(zmq::socket_t& s, const transport::Message& m) {
  auto frames = transport::encode_frames(m);
  for (size_t i = 0; i < frames.size(); ++i)
    (void)s.send(zmq::buffer(frames[i]), i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::dontwait);
}

TEST_F(Security, UnauthenticatedPeersCannotStopAssignResetOrForward) {
  WorkerProcess w;
  // A file the attacker's Assign names: an inotify watch sees whether anything opens it.
  const std::string bait = dir_ + "/bait.gguf";
  std::ofstream(bait) << "GGUF not really";
  const int ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT_GE(ino, 0);
  ASSERT_GE(inotify_add_watch(ino, bait.c_str(), IN_OPEN | IN_ACCESS), 0);

  const transport::ClusterKey cluster = transport::cluster_key();
  const transport::ClusterKey stranger = transport::generate_cluster_key();
  struct Attacker {
    const char* what;
    std::string server_key, public_key, secret_key;  // empty: no CURVE
  };
  const Attacker attackers[] = {
      {"a plain (non-CURVE) socket", "", "", ""},
      {"a CURVE client with its own key (knows the worker's public key)", cluster.public_z85, stranger.public_z85,
       stranger.secret_z85},
      {"a CURVE client with a wrong server key", stranger.public_z85, stranger.public_z85, stranger.secret_z85},
      {"a CURVE client claiming the cluster's public key without its secret", cluster.public_z85, cluster.public_z85,
       stranger.secret_z85},
  };
  for (const auto& a : attackers) {
    zmq::socket_t s(transport::zmq_context(), zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    if (!a.server_key.empty()) {
      s.set(zmq::sockopt::curve_serverkey, a.server_key);
      s.set(zmq::sockopt::curve_publickey, a.public_key);
      s.set(zmq::sockopt::curve_secretkey, a.secret_key);
    }
    s.connect(w.address());
    cluster::Hello hello;
    hello.name = "attacker";
    send_raw(s, cluster::pack(hello));
    cluster::Assign as;
    as.model_path = bait;
    as.model_hash = std::string(64, '0');
    as.layers = {0, 1, true, true};
    as.n_ctx = 64;
    send_raw(s, cluster::pack(as));
    send_raw(s, cluster::pack(cluster::Reset{}));
    transport::Tensor tokens;
    tokens.dtype = transport::WireDType::I32;
    tokens.shape = {1};
    tokens.data.assign(4, '\0');
    send_raw(s, cluster::pack(cluster::Forward{1, 0, 1, false}, {tokens}));
    send_raw(s, cluster::pack(cluster::Stop{}));
    // Nothing comes back (before protocol 7: Hello, Errors and "stopping").
    zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
    EXPECT_EQ(zmq::poll(&item, 1, std::chrono::milliseconds(1500)), 0) << a.what << " got an answer";
    EXPECT_TRUE(w.child().running()) << a.what << " stopped the worker";
  }
  char ev[4096];
  EXPECT_LT(::read(ino, ev, sizeof ev), 0) << "the worker opened the file an unauthenticated Assign named";
  ::close(ino);
  EXPECT_NE(w.child().err().find("refused a connection"), std::string::npos) << w.child().err();
  // The real coordinator is still served, with the right numbers.
  LocalReference m("stories260K.gguf");
  auto r = remote(m, {w.address()});
  EXPECT_EQ(greedy(*r, kPrompt, 8), greedy(*m.local, kPrompt, 8));
}

// The control experiment: the same plain-socket attack on an --insecure worker gets answers and
// makes it open the named file (so the checks above can see an attack that works), and its Stop
// ends the worker. This is what --insecure gives up.
TEST_F(Security, TheSameAttackWorksOnAnInsecureWorker) {
  WorkerProcess w("*", {"--insecure"});
  const std::string bait = dir_ + "/bait-insecure.gguf";
  std::ofstream(bait) << "GGUF not really";
  const int ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT_GE(ino, 0);
  ASSERT_GE(inotify_add_watch(ino, bait.c_str(), IN_OPEN), 0);
  zmq::socket_t s(transport::zmq_context(), zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.connect(w.address());
  send_raw(s, cluster::pack(cluster::Hello{}));
  cluster::Assign as;
  as.model_path = bait;
  as.model_hash = std::string(64, '0');
  as.layers = {0, 1, true, true};
  as.n_ctx = 64;
  send_raw(s, cluster::pack(as));
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  EXPECT_EQ(zmq::poll(&item, 1, std::chrono::milliseconds(3000)), 1) << "no answer from an insecure worker";
  pollfd p{ino, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 3000), 1) << "the insecure worker did not open the named file";
  ::close(ino);
  send_raw(s, cluster::pack(cluster::Stop{}));
  EXPECT_GE(w.child().wait_exit(5), 0) << "an unauthenticated Stop did not end the insecure worker";
}

// herd keygen: a 0600 file, never overwritten without --force; --key and --insecure together are a
// usage error.
TEST_F(Security, KeygenCommand) {
  const std::string k = dir_ + "/keygen.key";
  ProcessResult r = run_process({herd_bin(), "keygen", "--out", k}, 30);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("wrote " + k), std::string::npos) << r.out;
  const transport::ClusterKey first = transport::read_cluster_key(k);
  struct stat st{};
  ASSERT_EQ(::stat(k.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  r = run_process({herd_bin(), "keygen", "--out", k}, 30);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("exists"), std::string::npos) << r.err;
  EXPECT_EQ(transport::read_cluster_key(k).secret_z85, first.secret_z85);
  r = run_process({herd_bin(), "keygen", "--out", k, "--force"}, 30);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(transport::read_cluster_key(k).secret_z85, first.secret_z85);
  r = run_process({herd_bin(), "worker", "--listen", "tcp://127.0.0.1:*", "--insecure", "--key", k}, 30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("contradict"), std::string::npos) << r.err;
}

// A TCP proxy for one lane connection: relays both ways; when armed, alters or replays the next
// chunk going one way (one chunk = one sealed record at decode rate: a record is one sendmsg).
class LaneProxy {
 public:
  enum class Attack { flip_last_byte, replay_previous };
  LaneProxy() {
    lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(lfd_, 4), 0);
    socklen_t len = sizeof a;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~LaneProxy() {
    stop_ = true;
    ::shutdown(lfd_, SHUT_RDWR);
    if (t_.joinable()) t_.join();
    ::close(lfd_);
  }
  // The lane redirect: remember the real port, hand out ours.
  uint16_t redirect(uint16_t target) {
    target_ = target;
    if (!t_.joinable()) t_ = std::thread([this] { run(); });
    return port_;
  }
  void arm(bool to_worker, Attack a) {
    to_worker_ = to_worker;
    attack_ = a;
    armed_ = true;
  }
  bool fired() const { return fired_; }

 private:
  void run() {
    const int c = ::accept(lfd_, nullptr, nullptr);
    if (c < 0) return;
    const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(target_);
    if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(c);
      ::close(s);
      return;
    }
    std::string prev[2];
    while (!stop_) {
      pollfd p[2] = {{c, POLLIN, 0}, {s, POLLIN, 0}};
      if (::poll(p, 2, 100) <= 0) continue;
      bool closed = false;
      for (int d = 0; d < 2; ++d) {  // d 0: coordinator -> worker
        if (!(p[d].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        char buf[1 << 16];
        const ssize_t n = ::recv(p[d].fd, buf, sizeof buf, 0);
        if (n <= 0) {
          closed = true;
          break;
        }
        std::string chunk(buf, static_cast<size_t>(n));
        const int out = d == 0 ? s : c;
        if (armed_ && to_worker_ == (d == 0) && !fired_) {
          fired_ = true;
          if (attack_ == Attack::flip_last_byte) chunk.back() = static_cast<char>(chunk.back() ^ 1);
          else (void)::send(out, prev[d].data(), prev[d].size(), MSG_NOSIGNAL);
        }
        prev[d] = chunk;
        (void)::send(out, chunk.data(), chunk.size(), MSG_NOSIGNAL);
      }
      if (closed) break;
    }
    ::close(c);
    ::close(s);
  }
  int lfd_ = -1;
  uint16_t port_ = 0;
  std::atomic<uint16_t> target_{0};
  std::thread t_;
  std::atomic<bool> stop_{false}, armed_{false}, to_worker_{false}, fired_{false};
  std::atomic<LaneProxy::Attack> attack_{Attack::flip_last_byte};
};

// Runs a pipeline through a proxy on its lane, then attacks one direction mid-generation: the
// generation fails within seconds with an error naming the lane and the frame; the worker lives on
// and serves the next coordinator.
void attack_lane(WorkerProcess& w, bool to_worker, LaneProxy::Attack attack) {
  LocalReference m("stories260K.gguf");
  const auto want = greedy(*m.local, kPrompt, 6);
  {
    LaneProxy proxy;
    transport::set_lane_redirect_for_tests([&](uint16_t port) { return proxy.redirect(port); });
    auto r = remote(m, {w.address()});
    transport::set_lane_redirect_for_tests({});
    ASSERT_EQ(greedy(*r, kPrompt, 6), want) << "the proxy alone must change nothing";
    proxy.arm(to_worker, attack);
    const auto t = Clock::now();
    try {
      greedy(*r, kPrompt, 6);
      FAIL() << "the altered lane went unnoticed";
    } catch (const std::exception& e) {
      const std::string msg = e.what();
      EXPECT_TRUE(proxy.fired());
      EXPECT_NE(msg.find("lane from"), std::string::npos) << msg;
      EXPECT_NE(msg.find("failed authentication"), std::string::npos) << msg;
    }
    EXPECT_LT(Clock::now() - t, std::chrono::seconds(5));
  }
  EXPECT_TRUE(w.child().running());
  auto again = remote(m, {w.address()});
  EXPECT_EQ(greedy(*again, kPrompt, 6), want);
}

TEST_F(Security, TamperedLaneToWorkerIsDetectedAndNamed) {
  WorkerProcess w;
  attack_lane(w, /*to_worker=*/true, LaneProxy::Attack::flip_last_byte);
  EXPECT_NE(w.child().err().find("failed authentication"), std::string::npos) << w.child().err();
}

TEST_F(Security, TamperedLaneFromWorkerIsDetectedAndNamed) {
  WorkerProcess w;
  attack_lane(w, /*to_worker=*/false, LaneProxy::Attack::flip_last_byte);
}

TEST_F(Security, ReplayedLaneFramesAreDetectedBothWays) {
  WorkerProcess w;
  attack_lane(w, /*to_worker=*/true, LaneProxy::Attack::replay_previous);
  attack_lane(w, /*to_worker=*/false, LaneProxy::Attack::replay_previous);
}

// Between two stages: the upstream stage never reads its link to the next one, so the stage that
// detects the altered frame tells the coordinator. The workers run in this process (over tcp, with
// lanes) so that the lane redirect reaches the upstream stage's link.
TEST_F(Security, TamperedLaneBetweenStagesIsNamedNotAHang) {
  struct ThreadWorker {
    std::atomic<bool> stop{false};
    std::unique_ptr<WorkerServer> server;
    std::thread thread;
    uint16_t lane_port = 0;
    explicit ThreadWorker(const std::string& name) {
      auto l = std::make_unique<transport::ZmqListener>("tcp://127.0.0.1:*");
      lane_port = l->lane_port();
      WorkerServerOptions o;
      o.threads = 1;
      o.name = name;
      o.models_dir = "/";
      server = std::make_unique<WorkerServer>(std::move(l), o);
      thread = std::thread([this] { server->serve(&stop); });
    }
    ~ThreadWorker() {
      stop = true;
      thread.join();
    }
  };
  ThreadWorker a("stage 0"), b("stage 1");
  LocalReference m("stories260K.gguf");
  const auto want = greedy(*m.local, kPrompt, 6);
  LaneProxy proxy;
  // Only the lane to stage 1 goes through the proxy: stage 0's link to it (the coordinator's link
  // to stage 1 carries only Results back).
  std::atomic<int> offers{0};
  transport::set_lane_redirect_for_tests([&](uint16_t port) {
    return port == b.lane_port && offers++ == 1 ? proxy.redirect(port) : port;
  });
  RemotePipelineOptions o;
  o.workers = {a.server->address(), b.server->address()};
  o.split = "0-2,3-4";
  o.n_ctx = 256;
  o.connect_timeout_ms = 3000;
  RemotePipeline r(*m.file, m.config, o);
  ASSERT_EQ(greedy(r, kPrompt, 6), want);
  ASSERT_EQ(offers.load(), 2) << "expected the coordinator's and stage 0's lanes to stage 1";
  proxy.arm(/*to_worker=*/true, LaneProxy::Attack::flip_last_byte);
  const auto t = Clock::now();
  try {
    greedy(r, kPrompt, 6);
    FAIL() << "the altered lane between stages went unnoticed";
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    EXPECT_TRUE(proxy.fired());
    EXPECT_NE(msg.find("dropped the previous stage's connection"), std::string::npos) << msg;
    EXPECT_NE(msg.find("failed authentication"), std::string::npos) << msg;
  }
  EXPECT_LT(Clock::now() - t, std::chrono::seconds(5));
}

TEST_F(Security, InsecureOnOneSideOnlyIsAClearError) {
  LocalReference m("stories260K.gguf");
  auto expect_mismatch = [&](WorkerProcess& w) {
    const auto t = Clock::now();
    try {
      remote(m, {w.address()});
      FAIL() << "connected across a security mismatch";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("--insecure"), std::string::npos) << e.what();
    }
    EXPECT_LT(Clock::now() - t, std::chrono::seconds(3)) << "not within the connect timeout";
    EXPECT_TRUE(w.child().running());
  };
  {
    WorkerProcess insecure_worker("*", {"--insecure"});
    EXPECT_NE(insecure_worker.child().err().find("WARNING: --insecure"), std::string::npos);
    expect_mismatch(insecure_worker);
    // Both sides insecure: works as before.
    transport::configure_security({true, ""});
    auto r = remote(m, {insecure_worker.address()});
    EXPECT_EQ(greedy(*r, kPrompt, 6), greedy(*m.local, kPrompt, 6));
  }
  WorkerProcess secure_worker;
  transport::configure_security({true, ""});
  expect_mismatch(secure_worker);
}

}  // namespace
}  // namespace herd::test
