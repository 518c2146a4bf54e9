// The cluster code paths (WorkerServer, RemotePipeline, stage-to-stage forwarding, failure
// handling) inside one process over inproc:// links: fast, deterministic, no ports.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <thread>
#include <utility>

#include "coordinator/remote_pipeline.h"
#include "coordinator/worker_set.h"
#include "kernels/cpu/cpu_backend.h"
#include "coordinator/generator.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "model/weights.h"
#include "partition/model_shape.h"
#include "partition/strategies.h"
#include "tests/integration/cluster_util.h"
#include "tests/integration/inproc_server.h"
#include "transport/inproc_link.h"
#include "cluster/protocol.h"
#include "worker/worker_server.h"

namespace herd::test {
namespace {

using Clock = std::chrono::steady_clock;

// A worker in this process with the options these tests vary (tests/integration/inproc_server.h).
WorkerServerOptions inproc_options(std::string name, const std::string& cache_dir, uint64_t chunk_bytes,
                                   uint64_t report_free_mem) {
  WorkerServerOptions o;
  o.report_free_mem = report_free_mem;
  o.threads = 1;
  o.name = std::move(name);
  o.cache_dir = cache_dir;
  o.models_dir = "/";  // the coordinator's path hint is opened wherever it is (these tests use hints)
  if (chunk_bytes) o.chunk_bytes = chunk_bytes;
  return o;
}

class InprocWorker : public test::InprocServer {
 public:
  explicit InprocWorker(const std::string& name, const std::string& cache_dir = "", uint64_t chunk_bytes = 0,
                        uint64_t report_free_mem = 0)
      : InprocServer(inproc_options(name, cache_dir, chunk_bytes, report_free_mem)) {}
};

struct Models : LocalReference {
  using LocalReference::LocalReference;
  std::unique_ptr<RemotePipeline> remote(std::vector<std::string> workers, const std::string& split = "",
                                         const std::string& hint = "", int corrupt = 0) {
    RemotePipelineOptions o;
    o.workers = std::move(workers);
    o.split = split;
    o.model_path = hint;
    o.debug_corrupt_chunks = corrupt;
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

// Without --split the split is the planner's: partition::plan_optimal over the workers' Hello
// profiles (free RAM as memory) and the links measured at connect time, workers in the given order.
TEST(InprocPlanner, DefaultSplitIsWhatOptimalReturnsForTheReportedProfilesAndMeasuredLinks) {
  Models m("stories260K.gguf");
  auto w = start("plan-", 3);
  auto remote = m.remote(addresses(w, 3));
  ASSERT_TRUE(remote->plan().has_value());
  const partition::Cluster& c = remote->planned_cluster();
  ASSERT_EQ(c.devices.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const auto& d = c.devices[i];
    EXPECT_EQ(d.name, "worker " + std::to_string(i + 1));
    EXPECT_GT(d.free_bytes, 0u) << "reported MemAvailable";
    EXPECT_GT(d.bandwidth_Bps, 0) << "measured at the worker's start";
    EXPECT_GT(d.op_overhead_s, 0);
    EXPECT_FALSE(d.matvec_Bps.empty());
    const auto& l = remote->worker_links()[i];
    EXPECT_TRUE(std::isfinite(l.latency_s) && l.latency_s > 0 && l.latency_s < 0.05) << l.latency_s;
    EXPECT_TRUE(std::isfinite(l.bandwidth_Bps) && l.bandwidth_Bps > 0) << l.bandwidth_Bps;
    EXPECT_EQ(c.link(-1, static_cast<int>(i)).latency_s, l.latency_s);
  }
  const partition::Plan want =
      partition::plan_optimal(partition::shape_from_gguf(*m.file, m.config), c, remote->plan_options());
  const partition::Plan& got = *remote->plan();
  ASSERT_EQ(got.stages.size(), want.stages.size());
  ASSERT_EQ(remote->ranges().size(), want.stages.size());
  for (size_t s = 0; s < want.stages.size(); ++s) {
    EXPECT_EQ(got.stages[s].device, want.stages[s].device);
    EXPECT_EQ(remote->ranges()[s].first, want.stages[s].first);
    EXPECT_EQ(remote->ranges()[s].end, want.stages[s].end);
  }
  EXPECT_EQ(got.excluded.size(), want.excluded.size());
  EXPECT_NE(remote->plan_summary().find("plan: worker"), std::string::npos) << remote->plan_summary();
  EXPECT_NE(remote->plan_summary().find("tok/s"), std::string::npos) << remote->plan_summary();
  expect_same_logits(*m.local, *remote, "planned split");

  // Every stage measures its link to the next one and reports it in Ready.
  auto three = m.remote(addresses(w, 3), "0-1,2-3,4-4");
  ASSERT_EQ(three->stage_links().size(), 2u);
  for (const auto& l : three->stage_links()) {
    EXPECT_TRUE(std::isfinite(l.latency_s) && l.latency_s > 0 && l.latency_s < 0.05) << l.latency_s;
    EXPECT_TRUE(std::isfinite(l.bandwidth_Bps) && l.bandwidth_Bps > 0) << l.bandwidth_Bps;
  }
  EXPECT_FALSE(three->plan().has_value()) << "--split overrides the planner";

  // Other strategies on request: `even` over 3 workers in their order.
  Models m2("stories260K.gguf");
  RemotePipelineOptions o;
  o.workers = addresses(w, 3);
  o.n_ctx = 256;
  o.plan_strategy = "even";
  RemotePipeline even(*m2.file, m2.config, o);
  ASSERT_EQ(even.ranges().size(), 3u);
  EXPECT_EQ(even.ranges()[0].end, 2);
  EXPECT_EQ(even.ranges()[1].end, 4);
  EXPECT_EQ(even.ranges()[2].end, 5);
  o.plan_strategy = "fastest";
  EXPECT_THROW(RemotePipeline(*m2.file, m2.config, o), std::runtime_error);
}

TEST(InprocPlanner, TinyReportedMemoryLeavesAWorkerOutOrIsTheShortfallError) {
  Models m("stories260K.gguf");
  InprocWorker tiny("tinymem-0", "", 0, 1'000'000), big("tinymem-1"), tiny2("tinymem-2", "", 0, 2'000'000);
  auto remote = m.remote({tiny.address(), big.address()});
  ASSERT_TRUE(remote->plan().has_value());
  ASSERT_EQ(remote->ranges().size(), 1u);
  EXPECT_EQ(remote->ranges()[0].first, 0);
  EXPECT_EQ(remote->ranges()[0].end, m.config.n_layers);
  ASSERT_EQ(remote->plan()->excluded.size(), 1u);
  EXPECT_EQ(remote->plan()->excluded[0].device, 0);
  EXPECT_NE(remote->plan()->excluded[0].reason.find("cannot hold a single layer"), std::string::npos)
      << remote->plan()->excluded[0].reason;
  EXPECT_NE(remote->plan_summary().find("plan: worker 2 layers 0-4"), std::string::npos) << remote->plan_summary();
  EXPECT_NE(remote->plan_summary().find("worker 1 unused"), std::string::npos) << remote->plan_summary();
  expect_same_logits(*m.local, *remote, "one worker left out");
  try {
    m.remote({tiny.address(), tiny2.address()});
    ADD_FAILURE() << "a model that fits nowhere was planned";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("does not fit"), std::string::npos) << e.what();
  }
  // --split still overrides (the workers load what they are told).
  auto forced = m.remote({tiny.address(), big.address()}, "0-1,2-4");
  EXPECT_EQ(forced->ranges().size(), 2u);
}

TEST(InprocCluster, BitIdenticalToLocalForEverySplit) {
  auto w = start("bitident-", 4);
  for (const auto& [name, plans] : std::vector<std::pair<std::string, std::vector<std::pair<size_t, std::string>>>>{
           // n stages each (the planner's default may use fewer workers; "" = the planner's split)
           {"stories260K.gguf",
            {{1, ""}, {2, ""}, {2, "0-2,3-4"}, {3, "0-1,2-3,4-4"}, {4, "0-1,2-2,3-3,4-4"}, {2, "0-0,1-4"}, {2, "0-3,4-4"}}},
           {"randk-Q4_K_M.gguf",
            {{1, ""}, {2, "0-1,2-3"}, {3, "0-1,2-2,3-3"}, {4, "0-0,1-1,2-2,3-3"}, {2, "0-0,1-3"}, {2, "0-2,3-3"}}}}) {
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

// Hop times are derived: the round trip's residual, split in proportion to each link's predicted
// time (evenly when none is known); never negative, and the parts add up to the residual.
TEST(HopTimes, ResidualIsSpreadByPredictedLinkTime) {
  const std::vector<double> pred = {1, 0, 3};
  EXPECT_EQ(spread_hop_time(8, pred), (std::vector<double>{2, 0, 6}));
  EXPECT_EQ(spread_hop_time(9, std::vector<double>{0, 0, 0}), (std::vector<double>{3, 3, 3}));
  EXPECT_EQ(spread_hop_time(-1, pred), (std::vector<double>{0, 0, 0}));
  EXPECT_EQ(spread_hop_time(std::nan(""), pred), (std::vector<double>{0, 0, 0}));
  EXPECT_EQ(spread_hop_time(4, std::vector<double>{std::nan(""), 1}), (std::vector<double>{0, 4}));
  EXPECT_TRUE(spread_hop_time(4, {}).empty());
}

// Over inproc links too: each stage's compute time and layers, n_stages + 1 hops.
TEST(InprocCluster, StatusHasEveryStageAndHop) {
  auto w = start("status-", 2);
  Models m("stories260K.gguf");
  auto remote = m.remote(addresses(w, 2), "0-1,2-4");
  greedy(*remote, {1, 403, 407}, 4);
  const PipelineStatus st = remote->status();
  ASSERT_EQ(st.stages.size(), 2u);
  ASSERT_EQ(st.hop_ms.size(), 3u);
  EXPECT_EQ(st.batches, 5u);
  EXPECT_EQ(st.stages[0].name, w[0]->address());
  EXPECT_EQ(st.stages[1].end_layer, 5);
  EXPECT_EQ(st.stages[1].first_layer, 2);
  for (const auto& s : st.stages) EXPECT_GT(s.compute_ms, 0.0);
  for (double h : st.hop_ms) EXPECT_GE(h, 0.0);
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
  EXPECT_NE(cluster::unpack<cluster::ErrorMsg>(r.msg).message.find("dropped"), std::string::npos);
  // A Hello in this process's coordinator session (cluster/protocol.h "Roles": the same coordinator
  // on another connection), then a Forward to a later stage, which only its upstream may send.
  cluster::Hello same;
  same.session = coordinator_session();
  ASSERT_EQ(raw.send(cluster::pack(same)), "");
  ASSERT_EQ(raw.recv(2000).status, transport::RecvStatus::ok);
  auto remote = m.remote(addresses(w, 2), "0-2,3-4");
  transport::Tensor t{transport::WireDType::F32, {1, 3}, std::string(12, '\0')};
  ASSERT_EQ(raw.send(cluster::pack(cluster::Forward{1, 0, 1, false}, {t})), "");
  r = raw.recv(2000);
  ASSERT_EQ(r.status, transport::RecvStatus::ok);
  EXPECT_NE(cluster::unpack<cluster::ErrorMsg>(r.msg).message.find(
                "refused: Forward from a peer that is not this stage's upstream stage"),
            std::string::npos);
  // Stage times in a Forward to the first stage (only the coordinator sends it one, with none).
  {
    transport::InprocLink raw0(w[0]->address());
    ASSERT_EQ(raw0.send(cluster::pack(same)), "");
    ASSERT_EQ(raw0.recv(2000).status, transport::RecvStatus::ok);
    cluster::Forward f{1, 0, 1, false};
    f.stage_times = {{5, 1}};
    transport::Tensor ids{transport::WireDType::I32, {1}, std::string(4, '\0')};
    ASSERT_EQ(raw0.send(cluster::pack(f, {ids})), "");
    r = raw0.recv(2000);
    ASSERT_EQ(r.status, transport::RecvStatus::ok);
    const std::string msg = cluster::unpack<cluster::ErrorMsg>(r.msg).message;
    EXPECT_NE(msg.find("1 stage times already (the first stage expects none)"), std::string::npos) << msg;
  }
  // An Assign with a layer range outside the model is refused with a reason.
  ASSERT_EQ(raw.send(cluster::pack(same)), "");
  ASSERT_EQ(raw.recv(2000).status, transport::RecvStatus::ok);
  cluster::Assign bad;
  bad.model_path = model_path("stories260K.gguf");
  bad.layers = {3, 99, false, true};
  bad.n_ctx = 16;
  ASSERT_EQ(raw.send(cluster::pack(bad)), "");
  r = raw.recv(5000);
  ASSERT_EQ(r.status, transport::RecvStatus::ok);
  const std::string why = cluster::unpack<cluster::ErrorMsg>(r.msg).message;
  EXPECT_TRUE(why.find("model mismatch") != std::string::npos || why.find("layer range") != std::string::npos) << why;
  // The good coordinator re-assigns and gets the right answer.
  remote = m.remote(addresses(w, 2), "0-2,3-4");
  expect_same_logits(*m.local, *remote, "after garbage");
}

// Generation through Generator: the remote last stage samples with the coordinator's RNG draws.
std::vector<int32_t> generate(Pipeline& p, const model::Tokenizer& tok, const SamplerParams& sp, int n) {
  Generator g(p, tok);
  Sampler s(sp, static_cast<int32_t>(tok.n_vocab()));
  return g.generate({1, 403, 407, 261, 378}, n, s, [](const std::string&) { return true; }).tokens;
}

TEST(InprocCluster, LastStageSamplingGivesTheLocalTokensForASeedAndGreedy) {
  Models m("stories260K.gguf");
  auto tok = model::Tokenizer::from_gguf(*m.file);
  auto w = start("sample-", 3);
  SamplerParams seeded;
  seeded.temperature = 1.0f;
  seeded.top_k = 0;
  seeded.top_p = 0.95f;
  seeded.min_p = 0.02f;
  seeded.repeat_penalty = 1.15f;
  seeded.repeat_last_n = 16;
  SamplerParams greedy_p;
  greedy_p.temperature = 0.0f;
  greedy_p.repeat_penalty = 1.3f;  // the history must reach the last stage
  for (uint64_t seed : {1ull, 42ull, 0xFEEDull}) {
    seeded.seed = seed;
    const auto want = generate(*m.local, *tok, seeded, 48);
    ASSERT_GT(want.size(), 8u);
    for (size_t n : {2u, 3u}) {
      auto remote = m.remote(addresses(w, n), n == 2 ? "0-2,3-4" : "0-1,2-3,4-4");
      EXPECT_EQ(generate(*remote, *tok, seeded, 48), want) << "seed " << seed << ", " << n << " stages";
    }
  }
  const auto want_greedy = generate(*m.local, *tok, greedy_p, 48);
  auto remote = m.remote(addresses(w, 2), "0-2,3-4");
  EXPECT_EQ(generate(*remote, *tok, greedy_p, 48), want_greedy);
  // Sampling is not secretly greedy: some seed differs from the greedy text.
  seeded.repeat_penalty = greedy_p.repeat_penalty;
  bool differs = false;
  for (uint64_t seed : {1ull, 2ull, 3ull}) {
    seeded.seed = seed;
    differs |= generate(*remote, *tok, seeded, 48) != want_greedy;
  }
  EXPECT_TRUE(differs);
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/herd-cache-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Header + the stage's tensors, once per worker (each has its own cache, as on separate hosts).
uint64_t shard_bytes(const Models& m, const RemotePipeline& p) {
  uint64_t b = 0;
  for (const auto& r : p.ranges()) b += m.file->data_offset() + model::stage_weight_bytes(*m.file, m.config, r);
  return b;
}

TEST(InprocCluster, WorkersWithoutTheModelReceiveExactlyTheirShardInCheckedChunksAndCacheIt) {
  Models m("stories260K.gguf");
  const std::string nowhere = "/nonexistent/herd-test/stories260K.gguf";  // the hint does not exist here
  constexpr uint64_t kChunk = 16 << 10;  // many chunks even for a 1 MB model
  TempDir d0, d1;
  {
    InprocWorker w0("xfer-0", d0.path(), kChunk), w1("xfer-1", d1.path(), kChunk);
    auto remote = m.remote({w0.address(), w1.address()}, "0-1,2-4", nowhere);
    EXPECT_EQ(remote->weight_bytes_sent(), shard_bytes(m, *remote));
    EXPECT_NE(remote->ready_info()[0].find("bytes received"), std::string::npos) << remote->ready_info()[0];
    expect_same_logits(*m.local, *remote, "received weights");
  }
  {
    // A restart finds everything in its cache: nothing is sent.
    InprocWorker w0("xfer-0", d0.path(), kChunk), w1("xfer-1", d1.path(), kChunk);
    auto remote = m.remote({w0.address(), w1.address()}, "0-1,2-4", nowhere);
    EXPECT_EQ(remote->weight_bytes_sent(), 0u);
    expect_same_logits(*m.local, *remote, "cached weights");
    // Another split needs layers it does not hold: only those tensors travel (no header).
    auto resplit = m.remote({w0.address(), w1.address()}, "0-2,3-4", nowhere);
    const auto layer2 = model::stage_weight_bytes(*m.file, m.config, {2, 3, false, false});
    EXPECT_EQ(resplit->weight_bytes_sent(), layer2);
    expect_same_logits(*m.local, *resplit, "re-split");
  }
  {
    // One corrupted chunk is asked for again; the result is still exact.
    TempDir e0, e1;
    InprocWorker w0("xfer-c0", e0.path(), kChunk), w1("xfer-c1", e1.path(), kChunk);
    auto remote = m.remote({w0.address(), w1.address()}, "0-1,2-4", nowhere, 1);
    // The first chunk served (the last stage's first header chunk) travels twice.
    EXPECT_EQ(remote->weight_bytes_sent(), shard_bytes(m, *remote) + std::min<uint64_t>(kChunk, m.file->data_offset()));
    expect_same_logits(*m.local, *remote, "after a re-sent chunk");
  }
  {
    // Every chunk corrupted: the assignment fails with a clear reason, and nothing is cached.
    TempDir e0;
    InprocWorker w0("xfer-bad", e0.path(), kChunk);
    try {
      m.remote({w0.address()}, "", nowhere, -1);
      ADD_FAILURE() << "corrupt weights were accepted";
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("refused the assignment"), std::string::npos) << msg;
      EXPECT_NE(msg.find("failed its crc32 check"), std::string::npos) << msg;
    }
    size_t files = 0;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(e0.path()))
      files += entry.path().filename() != "lock" && entry.is_regular_file();
    EXPECT_EQ(files, 0u) << "a partial download was left behind";
  }
}

// A single-stage "worker" that speaks the protocol (Hello, Ping, Assign) but answers every Forward
// twice: first a Result for an older request id (request_id - 1) carrying garbage of the right
// shape, then the real Result. A Result that is not for the request being waited on must be
// ignored (RemotePipeline::forward's stale-Result filter): one left over from a request whose
// wait was abandoned would otherwise be taken for the answer to the next. Each Result carries
// `stage_times` StageTimes (1 is right for a one-stage cluster).
class StaleFirstStage {
 public:
  StaleFirstStage(const std::string& name, int64_t n_vocab, size_t stage_times = 1)
      : listener_(transport::listen("inproc://" + name)), n_vocab_(n_vocab), stage_times_(stage_times) {
    thread_ = std::thread([this] { serve(); });
  }
  ~StaleFirstStage() {
    stop_ = true;
    thread_.join();
  }
  std::string address() const { return listener_->address(); }
  int forwards() const { return forwards_; }

  // The real answer: row r of a request at pos0 is pos0 * 1000 + r + j / 4 at column j.
  static std::vector<float> logits(int64_t pos0, int64_t rows, int64_t n_vocab) {
    std::vector<float> x(static_cast<size_t>(rows * n_vocab));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n_vocab; ++j) x[static_cast<size_t>(r * n_vocab + j)] = float(pos0 * 1000 + r) + float(j) / 4;
    return x;
  }
  // The sampled token of the real answer (the stale one says kStaleToken).
  static int32_t token(int64_t pos0, int64_t n_vocab) { return static_cast<int32_t>((pos0 * 7 + 3) % n_vocab); }
  static constexpr int32_t kStaleToken = 0;

 private:
  static transport::Tensor f32(const std::vector<float>& x, int64_t rows, int64_t cols) {
    return transport::Tensor{transport::WireDType::F32, {rows, cols},
                             std::string(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float))};
  }
  void serve() {
    using cluster::MsgType;
    while (!stop_) {
      transport::Received r = listener_->recv(20);
      if (r.status != transport::RecvStatus::ok) continue;
      const std::string& peer = r.peer;
      switch (static_cast<MsgType>(r.msg.type)) {
        case MsgType::Hello: {
          cluster::Hello h;
          h.role = cluster::Role::Worker;
          h.name = "stale-first";
          listener_->send(peer, cluster::pack(h));
          break;
        }
        case MsgType::Ping: {
          const auto p = cluster::unpack<cluster::Ping>(r.msg);
          listener_->send(peer, cluster::pack(cluster::Pong{p.seq, p.bytes}, std::move(r.msg.tensors)));
          break;
        }
        case MsgType::Assign:
          listener_->send(peer, cluster::pack(cluster::Ready{"stale-first"}));
          break;
        case MsgType::Forward: {
          const auto f = cluster::unpack<cluster::Forward>(r.msg);
          ++forwards_;
          const int64_t pos0 = f.pos.at(0), rows = f.n_outputs();
          auto result = [this](uint64_t id, int64_t n, std::vector<int32_t> tokens = {}) {
            cluster::Result res{id, n, std::move(tokens)};
            res.stage_times.assign(stage_times_, cluster::StageTime{1, 0});
            return res;
          };
          if (f.sample) {
            listener_->send(peer, cluster::pack(result(f.request_id - 1, 1, {kStaleToken})));
            listener_->send(peer, cluster::pack(result(f.request_id, 1, {token(pos0, n_vocab_)})));
            break;
          }
          const std::vector<float> garbage(static_cast<size_t>(rows * n_vocab_), -7.0f);
          listener_->send(peer, cluster::pack(result(f.request_id - 1, rows), {f32(garbage, rows, n_vocab_)}));
          listener_->send(peer, cluster::pack(result(f.request_id, rows),
                                              {f32(logits(pos0, rows, n_vocab_), rows, n_vocab_)}));
          break;
        }
        default:
          break;
      }
    }
  }

  std::unique_ptr<transport::Listener> listener_;
  int64_t n_vocab_;
  size_t stage_times_;
  std::atomic<bool> stop_{false};
  std::atomic<int> forwards_{0};
  std::thread thread_;
};

TEST(InprocRequestPath, AStaleResultForAnOlderRequestIsIgnored) {
  Models m("stories260K.gguf");
  const int64_t V = m.config.n_vocab;
  StaleFirstStage fake("stale-first", V);
  auto remote = m.remote({fake.address()}, "0-4");
  const std::vector<int32_t> toks = {1, 403, 407, 261, 378, 300};
  std::vector<float> logits;
  remote->eval(toks.data(), 4, 0, true, logits);  // a prompt, every row
  EXPECT_EQ(logits, StaleFirstStage::logits(0, 4, V));
  for (int64_t pos = 4; pos < 6; ++pos) {  // decode steps, the last row
    remote->eval(&toks[static_cast<size_t>(pos)], 1, pos, false, logits);
    EXPECT_EQ(logits, StaleFirstStage::logits(pos, 1, V)) << "position " << pos;
  }
  // The sampling path takes the same filter: the stale token is never returned.
  SamplerParams sp;
  sp.temperature = 0.0f;
  Sampler sampler(sp, static_cast<int32_t>(V));
  const int32_t t = toks[0];
  EXPECT_EQ(remote->eval_sample(&t, 1, 6, sampler), StaleFirstStage::token(6, V));
  EXPECT_EQ(fake.forwards(), 4);
}

// A Result whose stage times do not match the stages is a protocol error naming the worker.
TEST(InprocRequestPath, AResultWithTheWrongNumberOfStageTimesIsAnError) {
  Models m("stories260K.gguf");
  for (const size_t n : {size_t{0}, size_t{2}}) {
    StaleFirstStage fake("stage-times-" + std::to_string(n), m.config.n_vocab, n);
    auto remote = m.remote({fake.address()}, "0-4");
    std::vector<float> logits;
    const int32_t t = 1;
    try {
      remote->eval(&t, 1, 0, false, logits);
      ADD_FAILURE() << "accepted " << n << " stage times for 1 stage";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("Result carries " + std::to_string(n) + " stage times for 1 stages"),
                std::string::npos)
          << e.what();
    }
  }
}

// A worker that dies between two evals and is replaced at the same address: the eval that finds it
// gone may fail, with an error value naming it (what it does today: the old links are closed), and
// only that one; then the pipeline reconnects and re-assigns every worker,
// replays the tokens the lost caches held (every worker starts empty after an Assign) and goes on
// with logits bit-identical to an uninterrupted run — for each stage position.
TEST(InprocRequestPath, AReplacedWorkerIsReassignedAndTheHistoryReplayedBitIdentically) {
  Models m("stories260K.gguf");
  const std::string split = "0-1,2-2,3-4";
  const std::vector<int32_t> toks = {1, 403, 407, 261, 378, 300, 292, 327, 261};
  const int64_t n_prompt = 4;
  // The uninterrupted run: the prompt's last row, then one row per decoded token.
  std::vector<std::vector<float>> want;
  {
    auto w = start("replay-ref-", 3);
    auto remote = m.remote(addresses(w, 3), split);
    std::vector<float> logits;
    remote->eval(toks.data(), n_prompt, 0, false, logits);
    want.push_back(logits);
    for (size_t pos = n_prompt; pos < toks.size(); ++pos) {
      remote->eval(&toks[pos], 1, static_cast<int64_t>(pos), false, logits);
      want.push_back(logits);
    }
  }
  for (size_t dead = 0; dead < 3; ++dead) {
    const std::string prefix = "replay-" + std::to_string(dead) + "-";
    auto w = start(prefix, 3);
    auto remote = m.remote(addresses(w, 3), split);
    std::vector<float> logits;
    remote->eval(toks.data(), n_prompt, 0, false, logits);
    ASSERT_EQ(logits, want[0]);
    const size_t cut = n_prompt + 2;  // two decoded tokens before the worker is replaced
    for (size_t pos = n_prompt; pos < cut; ++pos) {
      remote->eval(&toks[pos], 1, static_cast<int64_t>(pos), false, logits);
      ASSERT_EQ(logits, want[pos - n_prompt + 1]);
    }
    w[dead].reset();
    w[dead] = std::make_unique<InprocWorker>(prefix + std::to_string(dead));
    for (size_t pos = cut; pos < toks.size(); ++pos) {
      try {
        remote->eval(&toks[pos], 1, static_cast<int64_t>(pos), false, logits);
      } catch (const std::runtime_error& e) {
        ASSERT_EQ(pos, cut) << e.what();
        const std::string who = "worker " + std::to_string(dead + 1) + " of 3";
        EXPECT_NE(std::string(e.what()).find(who), std::string::npos) << e.what();
        remote->eval(&toks[pos], 1, static_cast<int64_t>(pos), false, logits);  // reconnect + replay
      }
      ASSERT_EQ(logits.size(), want[pos - n_prompt + 1].size());
      EXPECT_EQ(0, std::memcmp(logits.data(), want[pos - n_prompt + 1].data(), logits.size() * sizeof(float)))
          << "worker " << dead + 1 << " replaced: logits at position " << pos << " differ";
    }
  }
}

}  // namespace
}  // namespace herd::test
