// Per-host keys with an allow-list (issue [trust] item 1) against real `herd worker` processes: a
// coordinator whose key is listed is served; an unlisted key is refused by ZAP (named in the
// worker's log) and nothing it sends is acted on; a coordinator checks the worker's key (a worker
// holding another key than the one listed for its address is never sent anything); a garbled
// allow-list is a startup error naming the file and line; `herd keygen --host` prints the line.
#include <sys/inotify.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <zmq.hpp>

#include "cluster/protocol.h"
#include "coordinator/remote_pipeline.h"
#include "tests/integration/cluster_util.h"
#include "transport/allow_list.h"
#include "transport/codec.h"
#include "transport/security.h"
#include "transport/zmq_link.h"

namespace herd::test {
namespace {

const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378};

class HostKeys : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/herd-hostkeys-XXXXXX";
    dir_ = mkdtemp(tmpl);
    worker_ = make_key("worker.key");
    coord_ = make_key("coord.key");
  }
  void TearDown() override {
    transport::configure_security({false, ""});
    std::filesystem::remove_all(dir_);
  }
  transport::ClusterKey make_key(const std::string& name) {
    const transport::ClusterKey k = transport::generate_cluster_key();
    transport::write_cluster_key(dir_ + "/" + name, k, false);
    return k;
  }
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
    return dir_ + "/" + name;
  }
  // A worker with its own key, admitting what `allow` lists.
  std::unique_ptr<WorkerProcess> worker(const std::string& allow) {
    return std::make_unique<WorkerProcess>(
        "*", std::vector<std::string>{"--key", dir_ + "/worker.key", "--allow-keys", write("worker.allow", allow)});
  }
  // This process as the coordinator, with key `key_file`, dialling 127.0.0.1 with `worker_pub`.
  void be_coordinator(const std::string& key_file, const std::string& worker_pub) {
    transport::configure_security(
        {false, dir_ + "/" + key_file, write("coord.allow", "# the worker\n" + worker_pub + "  127.0.0.1  test worker\n")});
  }
  std::string dir_;
  transport::ClusterKey worker_, coord_;
};

std::unique_ptr<RemotePipeline> remote(LocalReference& m, const std::string& worker) {
  RemotePipelineOptions o;
  o.workers = {worker};
  o.n_ctx = 256;
  o.connect_timeout_ms = 3000;
  return std::make_unique<RemotePipeline>(*m.file, m.config, o);
}

TEST_F(HostKeys, ListedCoordinatorIsServed) {
  auto w = worker("# coordinators\n" + coord_.public_z85 + " coordinator # the test process\n");
  be_coordinator("coord.key", worker_.public_z85);
  LocalReference m("stories260K.gguf");
  auto r = remote(m, w->address());
  EXPECT_EQ(greedy(*r, kPrompt, 8), greedy(*m.local, kPrompt, 8));
  EXPECT_EQ(w->child().err().find("refused a connection"), std::string::npos) << w->child().err();
}

TEST_F(HostKeys, UnlistedKeyIsRefusedByNameAndNothingIsActedOn) {
  auto w = worker(coord_.public_z85 + " coordinator\n");
  const transport::ClusterKey stranger = make_key("stranger.key");
  // The stranger knows the worker's public key (CURVE's handshake then succeeds as far as ZAP).
  const std::string bait = write("bait.gguf", "GGUF not really");
  const int ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT_GE(ino, 0);
  ASSERT_GE(inotify_add_watch(ino, bait.c_str(), IN_OPEN | IN_ACCESS), 0);
  {
    zmq::socket_t s(transport::zmq_context(), zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::curve_serverkey, worker_.public_z85);
    s.set(zmq::sockopt::curve_publickey, stranger.public_z85);
    s.set(zmq::sockopt::curve_secretkey, stranger.secret_z85);
    s.connect(w->address());
    cluster::Hello hello;
    hello.name = "stranger";
    cluster::Assign as;
    as.model_path = bait;
    as.model_hash = std::string(64, '0');
    as.layers = {0, 1, true, true};
    as.n_ctx = 64;
    for (const auto& m : {cluster::pack(hello), cluster::pack(as), cluster::pack(cluster::Stop{})}) {
      auto frames = transport::encode_frames(m);
      for (size_t i = 0; i < frames.size(); ++i)
        (void)s.send(zmq::buffer(frames[i]), i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::dontwait);
    }
    zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
    EXPECT_EQ(zmq::poll(&item, 1, std::chrono::milliseconds(1500)), 0) << "the unlisted key got an answer";
  }
  char ev[4096];
  EXPECT_LT(::read(ino, ev, sizeof ev), 0) << "the worker opened the file an unlisted peer's Assign named";
  ::close(ino);
  EXPECT_TRUE(w->child().running()) << "an unlisted peer's Stop ended the worker";
  const std::string log = w->child().err();
  EXPECT_NE(log.find("its public key " + stranger.public_z85 + " is not in the allow-list"), std::string::npos) << log;
  EXPECT_EQ(log.find("hello from"), std::string::npos) << log;
  // The same through herd's own client: a clear error at the coordinator, within its timeout.
  be_coordinator("stranger.key", worker_.public_z85);
  LocalReference m("stories260K.gguf");
  const auto t0 = std::chrono::steady_clock::now();
  try {
    auto r = remote(m, w->address());
    ADD_FAILURE() << "a coordinator with an unlisted key was served";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("allow-list"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(6));
  // The listed coordinator is still served.
  be_coordinator("coord.key", worker_.public_z85);
  auto r = remote(m, w->address());
  EXPECT_EQ(greedy(*r, kPrompt, 8), greedy(*m.local, kPrompt, 8));
}

// The coordinator lists another key for the worker's address (an impostor listening there, or a
// stale list): CURVE's handshake fails on the coordinator's side and the worker is sent nothing.
TEST_F(HostKeys, CoordinatorChecksTheWorkersKey) {
  auto w = worker(coord_.public_z85 + "\n");
  const transport::ClusterKey other = make_key("other.key");
  be_coordinator("coord.key", other.public_z85);
  LocalReference m("stories260K.gguf");
  try {
    auto r = remote(m, w->address());
    ADD_FAILURE() << "the coordinator talked to a worker whose key is not the listed one";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("handshake"), std::string::npos) << e.what();
  }
  EXPECT_EQ(w->child().err().find("hello from"), std::string::npos) << w->child().err();
  // No entry for the address at all: named before anything is sent.
  transport::configure_security({false, dir_ + "/coord.key", write("none.allow", worker_.public_z85 + " 10.9.9.9\n")});
  try {
    auto r = remote(m, w->address());
    ADD_FAILURE() << "dialled a worker with no listed key";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("no public key for"), std::string::npos) << e.what();
  }
}

TEST_F(HostKeys, GarbledAllowListIsAStartupError) {
  const struct {
    const char* text;
    const char* says;
  } cases[] = {
      {"# nothing\n\n", "lists no public key"},
      {"not-a-key 127.0.0.1\n", ":1: 'not-a-key' is not a public key"},
      {"# ok\nrCx/QG0A?Lz4[4L]4hC.R+d!5[v:D%&iOx-b.d8w  host\nshort\n", ":3: 'short' is not a public key"},
      {"public = abc\nsecret = def\n", "looks like a key file"},
  };
  for (const auto& c : cases) {
    const std::string f = write("garbled.allow", c.text);
    const ProcessResult r = run_process(
        {herd_bin(), "worker", "--listen", "tcp://127.0.0.1:*", "--key", dir_ + "/worker.key", "--allow-keys", f}, 30);
    EXPECT_NE(r.exit_code, 0) << c.text;
    EXPECT_NE(r.err.find(f), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("listening on"), std::string::npos) << r.err;
  }
  ProcessResult r = run_process({herd_bin(), "worker", "--listen", "tcp://127.0.0.1:*", "--allow-keys",
                                 dir_ + "/missing.allow"}, 30);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("missing.allow"), std::string::npos) << r.err;
  r = run_process({herd_bin(), "worker", "--listen", "tcp://127.0.0.1:*", "--insecure", "--allow-keys", "x"}, 30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("contradict"), std::string::npos) << r.err;
}

TEST_F(HostKeys, KeygenHostPrintsTheAllowListLine) {
  const std::string k = dir_ + "/host.key";
  const ProcessResult r = run_process({herd_bin(), "keygen", "--host", "--out", k}, 30);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const transport::ClusterKey key = transport::read_cluster_key(k);
  EXPECT_NE(r.out.find("\n" + key.public_z85 + " "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(key.secret_z85), std::string::npos) << "printed the secret";
  // The printed line is itself a valid allow-list.
  const std::string line = r.out.substr(r.out.find("\n" + key.public_z85) + 1);
  const auto list = transport::read_allow_list(write("printed.allow", line));
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].public_z85, key.public_z85);
}

// Which entry a connection dials with.
TEST(AllowList, ServerKeyLookup) {
  using transport::AllowedKey;
  const std::vector<AllowedKey> l = {{"A", "", 1}, {"B", "10.0.0.2", 2}, {"C", "10.0.0.2:7001", 3}, {"D", "::1", 4}};
  auto key = [&](const std::string& e) {
    const AllowedKey* k = transport::find_server_key(l, e);
    return k ? k->public_z85 : std::string("none");
  };
  EXPECT_EQ(key("tcp://10.0.0.2:7001"), "C");  // HOST:PORT before HOST
  EXPECT_EQ(key("tcp://10.0.0.2:7000"), "B");
  EXPECT_EQ(key("10.0.0.2:7000"), "B");
  EXPECT_EQ(key("tcp://[::1]:7000"), "D");
  EXPECT_EQ(key("tcp://10.0.0.3:7001"), "none");  // a key without a name is never dialled
}

}  // namespace
}  // namespace herd::test
