// The cluster code paths (WorkerServer, RemotePipeline, stage-to-stage forwarding, failure
// handling) inside one process over inproc:// links: fast, deterministic, no ports.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "coordinator/remote_pipeline.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/gguf.h"
#include "tests/integration/cluster_util.h"
#include "transport/inproc_link.h"
#include "transport/protocol.h"
#include "worker/worker_server.h"

namespace herd::test {
namespace {

using Clock = std::chrono::steady_clock;

// A WorkerServer on its own thread; destroying it closes its listener (a dead worker).
class InprocWorker {
 public:
  explicit InprocWorker(const std::string& name) {
    WorkerServerOptions o;
    o.threads = 1;
    o.name = name;
    server_ = std::make_unique<WorkerServer>(transport::listen("inproc://" + name), o);
    thread_ = std::thread([this] { server_->serve(&stop_); });
  }
  ~InprocWorker() {
    stop_ = true;
    thread_.join();
  }
  std::string address() const { return server_->address(); }

 private:
  std::atomic<bool> stop_{false};
  std::unique_ptr<WorkerServer> server_;
  std::thread thread_;
};

struct Models {
  std::unique_ptr<model::GgufFile> file;
  model::ModelConfig config;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LocalPipeline> local;
  explicit Models(const std::string& name) {
    file = model::GgufFile::open(model_path(name));
    config = model::load_config(*file);
    backend = make_cpu_backend();  // what `herd run` and the workers use by default
    backend->set_threads(1);
    local = std::make_unique<LocalPipeline>(*file, config, *backend, 256);
  }
  std::unique_ptr<RemotePipeline> remote(std::vector<std::string> workers, const std::string& split = "") {
    RemotePipelineOptions o;
    o.workers = std::move(workers);
    o.split = split;
    o.n_ctx = 256;
    o.connect_timeout_ms = 2000;
    return std::make_unique<RemotePipeline>(*file, config, o);
  }
};

std::vector<std::unique_ptr<InprocWorker>> start(const std::string& prefix, int n) {
  std::vector<std::unique_ptr<InprocWorker>> w;
  for (int i = 0; i < n; ++i) w.push_back(std::make_unique<InprocWorker>(prefix + std::to_string(i)));
  return w;
}

std::vector<std::string> addresses(const std::vector<std::unique_ptr<InprocWorker>>& w, size_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) out.push_back(w[i]->address());
  return out;
}

TEST(SplitByMemory, ProportionalContiguousAtLeastOneLayerEach) {
  auto r = split_by_memory(10, {3, 1});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].first, 0);
  EXPECT_EQ(r[0].end, 7);  // 1 + 8*3/4 = 7
  EXPECT_EQ(r[1].end, 10);
  EXPECT_TRUE(r[0].embedding && !r[0].output && r[1].output);
  r = split_by_memory(5, {100, 0, 0});  // each worker still gets a layer
  EXPECT_EQ(r[0].size(), 3);
  EXPECT_EQ(r[1].size(), 1);
  EXPECT_EQ(r[2].size(), 1);
  r = split_by_memory(4, {0, 0, 0, 0});  // unknown memory: equal
  for (const auto& x : r) EXPECT_EQ(x.size(), 1);
  EXPECT_THROW(split_by_memory(2, {1, 1, 1}), std::invalid_argument);
  EXPECT_EQ(parse_worker_list("a:1,b:2"), (std::vector<std::string>{"a:1", "b:2"}));
  EXPECT_THROW(parse_worker_list("a:1,,b:2"), std::invalid_argument);
}

TEST(InprocCluster, BitIdenticalToLocalForEverySplit) {
  auto w = start("bitident-", 4);
  for (const auto& [name, plans] : std::vector<std::pair<std::string, std::vector<std::pair<size_t, std::string>>>>{
           {"stories260K.gguf", {{1, ""}, {2, ""}, {3, ""}, {4, ""}, {2, "0-0,1-4"}, {2, "0-3,4-4"}}},
           {"randk-Q4_K_M.gguf", {{1, ""}, {2, "0-1,2-3"}, {3, ""}, {4, ""}, {2, "0-0,1-3"}, {2, "0-2,3-3"}}}}) {
    Models m(name);
    const std::vector<int32_t> prompt = {1, 403, 407, 261, 378};
    const auto want = greedy(*m.local, prompt, 16);
    for (const auto& [n, split] : plans) {
      auto remote = m.remote(addresses(w, n), split);
      const std::string what = name + " x" + std::to_string(n) + " '" + split + "'";
      expect_same_logits(*m.local, *remote, what);
      EXPECT_EQ(greedy(*remote, prompt, 16), want) << what;
    }
  }
}

TEST(InprocCluster, LostWorkerIsAnErrorValueAndARestartRejoins) {
  Models m("stories260K.gguf");
  auto w = start("lost-", 3);
  auto remote = m.remote(addresses(w, 3), "0-1,2-2,3-4");
  std::vector<float> logits, want;
  const std::vector<int32_t> toks = {1, 403, 407, 261, 378, 300};
  remote->eval(toks.data(), 4, 0, false, logits);
  w[1].reset();  // the middle stage dies
  const auto t = Clock::now();
  try {
    remote->eval(toks.data() + 4, 1, 4, false, logits);
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("worker 2 of 3 (inproc://lost-1, layer 2)"), std::string::npos) << msg;
  }
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t).count(), 2.0);
  // Still down: the next request fails cleanly too.
  EXPECT_THROW(remote->eval(toks.data() + 4, 1, 4, false, logits), std::runtime_error);
  w[1] = std::make_unique<InprocWorker>("lost-1");
  remote->eval(toks.data() + 4, 2, 4, true, logits);
  m.local->eval(toks.data(), 4, 0, false, want);
  m.local->eval(toks.data() + 4, 2, 4, true, want);
  ASSERT_EQ(logits.size(), want.size());
  EXPECT_EQ(0, std::memcmp(logits.data(), want.data(), want.size() * sizeof(float)));
}

TEST(InprocCluster, WorkerDropsMalformedPeersAndKeepsServing) {
  Models m("stories260K.gguf");
  auto w = start("garbage-", 2);
  transport::InprocLink raw(w[1]->address());
  ASSERT_EQ(raw.send_frames({"junk"}), "");
  auto r = raw.recv(2000);
  ASSERT_EQ(r.status, transport::RecvStatus::ok);
  EXPECT_NE(transport::unpack<transport::ErrorMsg>(r.msg).message.find("dropped"), std::string::npos);
  // A Hello, then a Forward whose hidden state has the wrong size (the worker is not even assigned).
  ASSERT_EQ(raw.send(transport::pack(transport::Hello{})), "");
  ASSERT_EQ(raw.recv(2000).status, transport::RecvStatus::ok);
  auto remote = m.remote(addresses(w, 2));
  transport::Tensor t{transport::WireDType::F32, {1, 3}, std::string(12, '\0')};
  ASSERT_EQ(raw.send(transport::pack(transport::Forward{1, 0, 1, false}, {t})), "");
  r = raw.recv(2000);
  ASSERT_EQ(r.status, transport::RecvStatus::ok);
  EXPECT_NE(transport::unpack<transport::ErrorMsg>(r.msg).message.find("hidden state must be f32 [n_tokens, 64]"),
            std::string::npos);
  // An Assign with a layer range outside the model is refused with a reason.
  ASSERT_EQ(raw.send(transport::pack(transport::Hello{})), "");
  ASSERT_EQ(raw.recv(2000).status, transport::RecvStatus::ok);
  transport::Assign bad;
  bad.model_path = model_path("stories260K.gguf");
  bad.first_layer = 3;
  bad.end_layer = 99;
  bad.n_ctx = 16;
  ASSERT_EQ(raw.send(transport::pack(bad)), "");
  r = raw.recv(5000);
  ASSERT_EQ(r.status, transport::RecvStatus::ok);
  const std::string why = transport::unpack<transport::ErrorMsg>(r.msg).message;
  EXPECT_TRUE(why.find("model mismatch") != std::string::npos || why.find("layer range") != std::string::npos) << why;
  // The good coordinator re-assigns and gets the right answer.
  remote = m.remote(addresses(w, 2));
  expect_same_logits(*m.local, *remote, "after garbage");
}

}  // namespace
}  // namespace herd::test
