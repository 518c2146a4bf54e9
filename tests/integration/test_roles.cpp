// Issue [trust] item 3, authorisation by role, against real `herd worker` processes on 127.0.0.1.
// Every peer here holds the cluster key (it is "in the cluster"): what it may do depends on its
// role. A worker belongs to the first coordinator that said Hello; a second coordinator is told
// "busy" at once (it used to steal the worker, and the first one hung), or takes the worker with
// --take-over (the first then gets a named error, not a hang). Assign/Reset/Stop from a peer that
// does not own the worker, and a Forward from a peer that is not the stage's upstream, are refused
// and change nothing (they used to reset caches, stop workers and silently change the output).
// A middle stage's error reaches the coordinator instead of the upstream stage, which never reads.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>

#include "cluster/model_fingerprint.h"
#include "cluster/protocol.h"
#include "cluster/tensor_hashes.h"
#include "model/weights.h"
#include "coordinator/remote_pipeline.h"
#include "coordinator/worker_set.h"
#include "tests/integration/cluster_util.h"
#include "tests/process.h"
#include "transport/security.h"

namespace herd::test {
namespace {

using Clock = std::chrono::steady_clock;
const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378};

// One key for the suite, in a temporary file: the worker processes read it through $HERD_KEY.
class Roles : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/herd-rolestest-XXXXXX";
    dir_ = mkdtemp(tmpl);
    ::setenv("HERD_KEY", (dir_ + "/cluster.key").c_str(), 1);
    transport::configure_security({false, ""});
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
  static std::string dir_;
};
std::string Roles::dir_;

std::unique_ptr<RemotePipeline> remote(LocalReference& m, const std::vector<std::string>& workers,
                                       const std::string& split) {
  RemotePipelineOptions o;
  o.workers = workers;
  o.split = split;
  o.n_ctx = 256;
  o.connect_timeout_ms = 3000;
  return std::make_unique<RemotePipeline>(*m.file, m.config, o);
}

// A peer with the cluster key speaking the protocol by hand.
struct Peer {
  std::unique_ptr<transport::Link> link;
  transport::Received hello;  // the worker's answer to our Hello
  Peer(const std::string& address, cluster::Role role, const std::string& session, bool take_over = false) {
    link = transport::connect(address);
    cluster::Hello h;
    h.role = role;
    h.session = session;
    h.take_over = take_over;
    h.name = "intruder";
    EXPECT_EQ(link->send(cluster::pack(h)), "");
    hello = link->recv(3000);
  }
  // The next message, which must be an Error: its text ("" after a failure).
  std::string error(const transport::Received& r) {
    if (r.status != transport::RecvStatus::ok || r.msg.type != static_cast<uint16_t>(cluster::MsgType::Error)) {
      ADD_FAILURE() << "expected an Error, got status " << static_cast<int>(r.status) << " type " << r.msg.type << " "
                    << r.error;
      return "";
    }
    return cluster::unpack<cluster::ErrorMsg>(r.msg).message;
  }
  std::string error() { return error(link->recv(3000)); }
  std::string hello_error() { return error(hello); }
  bool accepted() const {
    return hello.status == transport::RecvStatus::ok && hello.msg.type == static_cast<uint16_t>(cluster::MsgType::Hello);
  }
};

std::vector<std::string> run_args(const std::vector<std::string>& workers, int n) {
  std::vector<std::string> a = {herd_bin(), "run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time",
                                "--temp", "0", "-n", std::to_string(n), "-t", "1"};
  if (!workers.empty()) {
    std::string list;
    for (const auto& w : workers) list += (list.empty() ? "" : ",") + w;
    a.insert(a.end(), {"--workers", list});
  }
  return a;
}

TEST_F(Roles, SecondCoordinatorIsBusyAndTheFirstKeepsGenerating) {
  WorkerProcess w0, w1;
  LocalReference m("stories260K.gguf");
  const auto want = greedy(*m.local, kPrompt, 10);
  auto a = remote(m, {w0.address(), w1.address()}, "0-2,3-4");
  ProcessResult second;
  double second_s = 0;
  const auto got = greedy_with(*a, kPrompt, 10, [&](int step) {
    if (step != 4) return;
    const auto t = Clock::now();
    second = run_process(run_args({w0.address(), w1.address()}, 4), 60);
    second_s = std::chrono::duration<double>(Clock::now() - t).count();
  });
  EXPECT_EQ(got, want) << "the first coordinator's text changed";
  EXPECT_NE(second.exit_code, 0);
  EXPECT_NE(second.err.find("busy: owned by"), std::string::npos) << second.err;
  EXPECT_NE(second.err.find("(pid " + std::to_string(getpid()) + ") since "), std::string::npos) << second.err;
  EXPECT_NE(second.err.find("--take-over"), std::string::npos) << second.err;
  // Its connect timeout is 5 s: the answer is immediate, the rest is starting the process.
  EXPECT_LT(second_s, 5.0) << second.err;
  // Once the first coordinator is gone, the next one gets the workers.
  a.reset();
  const ProcessResult local = run_process(run_args({}, 6), 60);
  const ProcessResult next = run_process(run_args({w0.address(), w1.address()}, 6), 60);
  EXPECT_EQ(next.exit_code, 0) << next.err;
  EXPECT_EQ(next.out, local.out);
}

TEST_F(Roles, TakeOverServesTheNewCoordinatorAndTheOldOneGetsANamedError) {
  WorkerProcess w0, w1;
  LocalReference m("stories260K.gguf");
  auto a = remote(m, {w0.address(), w1.address()}, "0-2,3-4");
  ASSERT_EQ(greedy(*a, kPrompt, 4), greedy(*m.local, kPrompt, 4));
  const ProcessResult local = run_process(run_args({}, 8), 60);
  auto args = run_args({w0.address(), w1.address()}, 8);
  args.push_back("--take-over");
  const ProcessResult b = run_process(args, 60);
  EXPECT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(b.out, local.out);
  const auto t = Clock::now();
  try {
    greedy(*a, kPrompt, 4);
    FAIL() << "the coordinator whose workers were taken over went on";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("was taken over by "), std::string::npos) << msg;
    EXPECT_NE(msg.find("(pid "), std::string::npos) << msg;
  }
  EXPECT_LT(Clock::now() - t, std::chrono::seconds(5));
  EXPECT_TRUE(w0.child().running());
  EXPECT_TRUE(w1.child().running());
}

TEST_F(Roles, AssignResetAndStopFromANonOwnerChangeNothing) {
  WorkerProcess w0, w1;
  LocalReference m("stories260K.gguf");
  const auto want = greedy(*m.local, kPrompt, 10);
  auto a = remote(m, {w0.address(), w1.address()}, "0-2,3-4");
  const auto got = greedy_with(*a, kPrompt, 10, [&](int step) {
    if (step != 3) return;
    for (WorkerProcess* w : {&w0, &w1}) {
      // As a coordinator: busy.
      Peer c(w->address(), cluster::Role::Coordinator, random_token());
      EXPECT_NE(c.hello_error().find("busy: owned by"), std::string::npos);
      // Still not a peer: its Stop comes before any accepted Hello.
      ASSERT_EQ(c.link->send(cluster::pack(cluster::Stop{})), "");
      EXPECT_NE(c.error().find("Stop before Hello"), std::string::npos);
      // As an upstream stage (any key holder may say that): a peer, but not the owner.
      Peer u(w->address(), cluster::Role::Upstream, random_token());
      ASSERT_TRUE(u.accepted());
      cluster::Assign as;
      as.model_path = model_path("stories260K.gguf");
      as.model_hash = std::string(64, '0');
      as.layers = {0, 5, true, true};
      as.n_ctx = 64;
      ASSERT_EQ(u.link->send(cluster::pack(as)), "");
      EXPECT_NE(u.error().find("refused: Assign from a peer that does not own this worker (owned by "),
                std::string::npos);
      ASSERT_EQ(u.link->send(cluster::pack(cluster::Reset{})), "");
      EXPECT_NE(u.error().find("refused: Reset from a peer that does not own"), std::string::npos);
      ASSERT_EQ(u.link->send(cluster::pack(cluster::Stop{})), "");
      EXPECT_NE(u.error().find("refused: Stop from a peer that does not own"), std::string::npos);
    }
  });
  EXPECT_EQ(got, want) << "a non-owner's messages changed the output";
  EXPECT_TRUE(w0.child().running());
  EXPECT_TRUE(w1.child().running());
}

TEST_F(Roles, ForwardFromAPeerThatIsNotTheUpstreamIsRefused) {
  WorkerProcess w0, w1;
  LocalReference m("stories260K.gguf");
  const auto want = greedy(*m.local, kPrompt, 10);
  auto a = remote(m, {w0.address(), w1.address()}, "0-2,3-4");
  const auto got = greedy_with(*a, kPrompt, 10, [&](int step) {
    if (step != 3) return;
    const int32_t pos = static_cast<int32_t>(kPrompt.size()) + step;  // the position the next token takes
    // Into the last stage: a hidden state that, accepted, would overwrite this position's cache row.
    Peer u(w1.address(), cluster::Role::Upstream, random_token());
    ASSERT_TRUE(u.accepted());
    transport::Tensor hidden{transport::WireDType::F32, {1, m.config.n_embd},
                             std::string(static_cast<size_t>(m.config.n_embd) * 4, '\0')};
    ASSERT_EQ(u.link->send(cluster::pack(cluster::Forward{77, pos, 1, false}, {hidden})), "");
    EXPECT_NE(u.error().find("refused: Forward from a peer that is not this stage's upstream stage"),
              std::string::npos);
    // Into the first stage: token ids from a peer that is not its coordinator.
    Peer u0(w0.address(), cluster::Role::Upstream, random_token());
    ASSERT_TRUE(u0.accepted());
    transport::Tensor ids{transport::WireDType::I32, {1}, std::string(4, '\0')};
    ASSERT_EQ(u0.link->send(cluster::pack(cluster::Forward{78, pos, 1, false}, {ids})), "");
    EXPECT_NE(u0.error().find("refused: Forward to the first stage from a peer that is not its coordinator"),
              std::string::npos);
  });
  EXPECT_EQ(got, want) << "an injected Forward changed the output";
}

// The owner's own session on a second connection (as a coordinator that reconnects) resets a middle
// stage mid-generation: the stage's error must reach the coordinator (before 072e6f4 it went to the
// upstream stage, which never reads its link, and the coordinator hung).
TEST_F(Roles, AnErrorInAMiddleStageReachesTheCoordinator) {
  WorkerProcess w0, w1, w2;
  LocalReference m("stories260K.gguf");
  auto a = remote(m, {w0.address(), w1.address(), w2.address()}, "0-1,2-2,3-4");
  Clock::time_point t = Clock::now();
  try {
    greedy_with(*a, kPrompt, 10, [&](int step) {
      if (step != 3) return;
      Peer owner(w1.address(), cluster::Role::Coordinator, coordinator_session());
      ASSERT_TRUE(owner.accepted()) << owner.hello_error();
      ASSERT_EQ(owner.link->send(cluster::pack(cluster::Reset{})), "");
      const auto r = owner.link->recv(10000);
      ASSERT_EQ(r.status, transport::RecvStatus::ok);
      ASSERT_EQ(r.msg.type, static_cast<uint16_t>(cluster::MsgType::Ready)) << owner.error(r);
      t = Clock::now();
    });
    ADD_FAILURE() << "the broken middle stage went unnoticed";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("worker 2 of 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("layer 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("position 8"), std::string::npos) << msg;
    EXPECT_LT(Clock::now() - t, std::chrono::seconds(5));
  }
}

// The owner re-assigns a middle stage mid-generation (from another connection of its session): the
// stage now refuses the old upstream's Forward and tells the coordinator that assigned it, instead
// of answering the upstream stage, which never reads its link.
TEST_F(Roles, AMiddleStageReassignedMidGenerationTellsTheCoordinator) {
  WorkerProcess w0, w1, w2;
  LocalReference m("stories260K.gguf");
  RemotePipelineOptions o;
  o.workers = {w0.address(), w1.address(), w2.address()};
  o.split = "0-1,2-2,3-4";
  o.n_ctx = 256;
  o.request_timeout_ms = 3000;  // the old pipeline's Forward goes nowhere now: this coordinator gives up
  RemotePipeline a(*m.file, m.config, o);
  std::unique_ptr<Peer> owner;
  EXPECT_THROW(greedy_with(a, kPrompt, 10,
                           [&](int step) {
                             if (step != 3) return;
                             owner = std::make_unique<Peer>(w1.address(), cluster::Role::Coordinator,
                                                            coordinator_session());
                             ASSERT_TRUE(owner->accepted()) << owner->hello_error();
                             cluster::Assign as;  // the same layers, without the running pipeline's link token
                             as.model_path = model_path("stories260K.gguf");
                             as.model_hash = cluster::model_fingerprint(*m.file);
                             as.file_size = m.file->file_size();
                             as.header_bytes = m.file->data_offset();
                             as.layers = {2, 3, false, false};
                             as.n_ctx = 256;
                             as.next_address = w2.address();
                             cluster::HashOptions quiet;
                             quiet.show = false;
                             as.tensor_digests = cluster::TensorHashes(*m.file, as.model_hash, quiet)
                                                     .digests(model::stage_tensor_names(*m.file, m.config, as.layers));
                             ASSERT_EQ(owner->link->send(cluster::pack(as)), "");
                             const auto r = owner->link->recv(10000);
                             ASSERT_EQ(r.status, transport::RecvStatus::ok);
                             ASSERT_EQ(r.msg.type, static_cast<uint16_t>(cluster::MsgType::Ready)) << owner->error(r);
                           }),
               std::runtime_error);
  ASSERT_TRUE(owner);
  const std::string msg = owner->error();
  EXPECT_NE(msg.find("layers 2-2: refused a Forward from the upstream stage of an earlier assignment"),
            std::string::npos)
      << msg;
}

TEST_F(Roles, ExitWithParentRefusesAParentThatIsAlreadyGone) {
  // pid 1 is not our parent: as if the parent had died before the worker could arm the signal.
  Child c({herd_bin(), "worker", "--listen", "tcp://127.0.0.1:*", "-t", "1", "--exit-with-parent", "1"});
  EXPECT_EQ(c.wait_exit(10), 1) << c.err();
  EXPECT_NE(c.err().find("--exit-with-parent 1: that process is not (or no longer) this worker's parent"),
            std::string::npos)
      << c.err();
}

}  // namespace
}  // namespace herd::test
