// Tensor parallelism over real `herd worker` processes on 127.0.0.1 (--workers ... --tp N): every
// rank a process of its own, its group joined by a RingComm over TCP (CURVE, as every link).
//
// What must hold, and why:
//   f32 sync: each worker rank runs the same shard (the plan from the same weights), the same
//     kernels, and the ring sums the partials in rank order like InprocComm: the logits are
//     bit-identical (memcmp) to the in-process TpPipeline with those weights. Against one process
//     (no TP) they differ only where the attention-output / FFN-down dot products are cut: on the
//     continuous path (--exact, F32 weights) within 1e-4 max |Δlogit|, argmax equal on every row
//     (the derivation: tests/engine/test_tensor_parallel.cpp).
//   q8 sync: each partial rounded to Q8_0, the 8-bit activation path's rounding: within that path's
//     tolerance (0.35, argmax >= 90% of rows; test_tensor_parallel), and again bit-identical to the
//     in-process run with the same rounding.
//   TP x PP: the hidden state crosses a stage boundary in f32 unchanged, so 2 stages x tp 2 equal
//     the in-process TP 2 bit for bit when both groups make the same plan (equal profiles).
//   Shares: from the workers' reported read bandwidth (here fixed --profile files: one worker twice
//     as fast), which RemotePipeline::tp_weights() shows.
//   A rank killed or stopped mid-generation: an error naming that worker within 2 s, no hang.
#include <gtest/gtest.h>

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <thread>

#include "coordinator/remote_pipeline.h"
#include "coordinator/replay.h"
#include "engine/tp_pipeline.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/engine/batch_schedule.h"
#include "tests/integration/cluster_util.h"
#include "tests/logits_agreement.h"
#include "transport/security.h"

namespace herd::test {
namespace {

using Clock = std::chrono::steady_clock;
const char* kModel = "stories260K.gguf";  // llama, 5 layers, 8 heads / 4 KV heads, F32 weights

std::string probe_json(double read_bw) {
  char b[512];
  std::snprintf(b, sizeof b,
                "{\"herd_probe\": 1, \"host\": \"test\", \"cpu\": \"test\", \"isa\": \"avx2\", \"threads\": 1, "
                "\"hw_threads\": 2, \"mem_total_bytes\": 8e9, \"mem_available_bytes\": 4e9, \"read_bw_Bps\": %g, "
                "\"matmul_flops\": 1e11, \"op_overhead_s\": 1e-6, \"attn_Bps\": 5e9, \"matvec_Bps\": {}}",
                read_bw);
  return b;
}

class TpCluster : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/herd-tptest-XXXXXX";
    dir_ = mkdtemp(tmpl);
    ::setenv("HERD_KEY", (dir_ + "/cluster.key").c_str(), 1);
    transport::configure_security({false, ""});
    std::ofstream(dir_ + "/slow.json") << probe_json(1e10);
    std::ofstream(dir_ + "/fast.json") << probe_json(2e10);
    // Workers 0-3 report the same profile; worker 4 twice the read bandwidth.
    for (int i = 0; i < 5; ++i)
      pool_.push_back(std::make_unique<WorkerProcess>(
          "*", std::vector<std::string>{"--profile", dir_ + (i < 4 ? "/slow.json" : "/fast.json")}));
    file_ = model::GgufFile::open(model_path(kModel));
    config_ = model::load_config(*file_);
    tokens_ = reference_tokens(n_prompt_);
  }
  static void TearDownTestSuite() {
    pool_.clear();
    file_.reset();
    std::filesystem::remove_all(dir_);
  }
  static std::string addr(size_t i) { return pool_[i]->address(); }

  static RemotePipelineOptions options(std::vector<std::string> workers, int tp, TpSync sync = TpSync::F32,
                                       const std::string& split = "") {
    RemotePipelineOptions o;
    o.workers = std::move(workers);
    o.tp = tp;
    o.tp_sync = sync;
    o.split = split;
    o.n_ctx = 256;
    o.kv_type = DType::F32;
    o.exact = true;  // the continuous path: the 1e-4 bound holds
    o.connect_timeout_ms = 3000;
    return o;
  }
  static KvOptions kv() { return KvOptions{256, 1, DType::F32}; }
  static LogitsFile single() {
    auto be = make_cpu_backend(CpuBackendOptions{true, "auto"});
    be->set_threads(1);
    LocalPipeline p(*file_, config_, *be, kv());
    return replay_logits(p, tokens_, n_prompt_);
  }
  static LogitsFile in_process(const std::vector<double>& weights, TpSync sync) {
    TpOptions o;
    o.n_ranks = static_cast<int>(weights.size());
    o.weights = weights;
    o.sync = sync;
    o.make_backend = [](int) { return make_cpu_backend(CpuBackendOptions{true, "auto"}); };
    TpPipeline p(*file_, config_, kv(), o);
    return replay_logits(p, tokens_, n_prompt_);
  }
  static std::string bit_difference(const LogitsFile& a, const LogitsFile& b) {
    if (a.rows.size() != b.rows.size()) return "row counts differ";
    for (size_t r = 0; r < a.rows.size(); ++r)
      if (a.rows[r].logits.size() != b.rows[r].logits.size() ||
          std::memcmp(a.rows[r].logits.data(), b.rows[r].logits.data(), a.rows[r].logits.size() * sizeof(float)) != 0)
        return "row " + std::to_string(r) + " differs";
    return "";
  }
  static void expect_close_to_single(const LogitsFile& tp, const std::string& what) {
    const LogitsFile one = single();
    const LogitsAgreement a = compare_logits(tp, one);
    for (size_t r = 0; r < a.row_max.size(); ++r) EXPECT_LE(a.row_max[r], 1e-4) << what << " row " << r;
    EXPECT_EQ(a.argmax_equal, one.rows.size()) << what;
    std::printf("%s: %zu rows, max |delta logit| vs one process %.3e, argmax equal %zu/%zu\n", what.c_str(),
                one.rows.size(), a.worst, a.argmax_equal, one.rows.size());
  }

  static std::string dir_;
  static std::vector<std::unique_ptr<WorkerProcess>> pool_;
  static std::unique_ptr<model::GgufFile> file_;
  static model::ModelConfig config_;
  static std::vector<int32_t> tokens_;
  static int64_t n_prompt_;
};
std::string TpCluster::dir_;
std::vector<std::unique_ptr<WorkerProcess>> TpCluster::pool_;
std::unique_ptr<model::GgufFile> TpCluster::file_;
model::ModelConfig TpCluster::config_;
std::vector<int32_t> TpCluster::tokens_;
int64_t TpCluster::n_prompt_ = 0;

TEST_F(TpCluster, Tp2F32BitIdenticalToInProcessAndWithin1e4OfOneProcess) {
  RemotePipeline p(*file_, config_, options({addr(0), addr(1)}, 2));
  ASSERT_EQ(p.n_stages(), 1);
  ASSERT_EQ(p.tp_weights().size(), 1u);
  EXPECT_EQ(p.tp_weights()[0], (std::vector<double>{1e10, 1e10}));
  const LogitsFile remote = replay_logits(p, tokens_, n_prompt_);
  EXPECT_EQ("", bit_difference(remote, in_process(p.tp_weights()[0], TpSync::F32)));
  expect_close_to_single(remote, "tp2 over 2 workers");
}

TEST_F(TpCluster, Tp3UnevenSharesBitIdenticalToInProcessAndWithin1e4OfOneProcess) {
  // 8 heads (4 KV-head groups) over 3 ranks, the first twice as fast: 2 + 1 + 1 groups, and the FFN's
  // 172 rows about 86 + 43 + 43.
  RemotePipeline p(*file_, config_, options({addr(4), addr(0), addr(1)}, 3));
  ASSERT_EQ(p.tp_weights().size(), 1u);
  EXPECT_EQ(p.tp_weights()[0], (std::vector<double>{2e10, 1e10, 1e10}));
  const LogitsFile remote = replay_logits(p, tokens_, n_prompt_);
  EXPECT_EQ("", bit_difference(remote, in_process(p.tp_weights()[0], TpSync::F32)));
  expect_close_to_single(remote, "tp3 (2:1:1) over 3 workers");
}

TEST_F(TpCluster, Q8SyncWithinTheEightBitToleranceAndSameBitsAsInProcess) {
  const LogitsFile one = single();
  for (const auto& workers : {std::vector<std::string>{addr(0), addr(1)}, {addr(4), addr(0), addr(1)}}) {
    RemotePipeline p(*file_, config_, options(workers, static_cast<int>(workers.size()), TpSync::Q8));
    const LogitsFile q8 = replay_logits(p, tokens_, n_prompt_);
    const LogitsAgreement a = compare_logits(q8, one);
    EXPECT_LE(a.worst, 0.35) << "tp " << workers.size();
    EXPECT_GE(static_cast<double>(a.argmax_equal), 0.9 * static_cast<double>(one.rows.size())) << "tp " << workers.size();
    EXPECT_GT(a.worst, 0.0) << "q8 sync rounds the partials: it cannot give the f32 bits";
    EXPECT_EQ("", bit_difference(q8, in_process(p.tp_weights()[0], TpSync::Q8))) << "tp " << workers.size();
    std::printf("tp%zu q8 sync over workers: max |delta logit| %.3e, argmax equal %zu/%zu\n", workers.size(), a.worst,
                a.argmax_equal, one.rows.size());
  }
}

TEST_F(TpCluster, TwoStagesOfTp2OverFourWorkersEqualInProcessTp2) {
  // Stage 0 = workers 0-1 (layers 0-1), stage 1 = workers 2-3 (layers 2-4); equal profiles, so
  // both groups make the in-process plan for equal weights.
  RemotePipeline p(*file_, config_, options({addr(0), addr(1), addr(2), addr(3)}, 2, TpSync::F32, "0-1,2-4"));
  ASSERT_EQ(p.n_stages(), 2);
  ASSERT_EQ(p.ranges().size(), 4u);
  EXPECT_EQ(p.ranges()[1].end, 2);
  EXPECT_EQ(p.ranges()[2].first, 2);
  const LogitsFile remote = replay_logits(p, tokens_, n_prompt_);
  EXPECT_EQ("", bit_difference(remote, in_process({1, 1}, TpSync::F32)));
  expect_close_to_single(remote, "2 stages x tp2 over 4 workers");
  // The same with the planner's split (it may use one group or both; either way the same bits).
  RemotePipeline planned(*file_, config_, options({addr(0), addr(1), addr(2), addr(3)}, 2));
  EXPECT_EQ("", bit_difference(replay_logits(planned, tokens_, n_prompt_), in_process({1, 1}, TpSync::F32)));
}

TEST_F(TpCluster, SameBitsOnTwentyRunsInOneCluster) {
  for (TpSync sync : {TpSync::F32, TpSync::Q8}) {
    RemotePipeline p(*file_, config_, options({addr(4), addr(0), addr(1)}, 3, sync));
    const LogitsFile first = replay_logits(p, tokens_, n_prompt_);
    for (int run = 1; run < 20; ++run) {
      const LogitsFile again = replay_logits(p, tokens_, n_prompt_);  // from position 0: a rewind
      ASSERT_EQ("", bit_difference(again, first)) << tp_sync_name(sync) << " run " << run;
    }
  }
}

// Four sequences in one batch per step, and in two micro-batches in flight at once, through
// 2 stages x tp 2: every rank takes the batches in the order sent, so each sequence gets the bits
// it gets alone in the in-process TpPipeline (TP keeps batch invariance: test_tensor_parallel).
TEST_F(TpCluster, FourSequencesAndMicroBatchesInFlightGetTheBitsEachGetsAlone) {
  const auto scripts = make_scripts(4, static_cast<int32_t>(config_.n_vocab));
  TpOptions t;
  t.n_ranks = 2;
  t.make_backend = [](int) { return make_cpu_backend(CpuBackendOptions{true, "auto"}); };
  TpPipeline one(*file_, config_, kv(), t);
  std::vector<SeqLogits> alone;
  for (const auto& sc : scripts) alone.push_back(run_alone(one, sc));
  RemotePipelineOptions o = options({addr(0), addr(1), addr(2), addr(3)}, 2, TpSync::F32, "0-1,2-4");
  o.n_seq = 4;
  RemotePipeline remote(*file_, config_, o);
  EXPECT_EQ("", compare_bits(run_together(remote, scripts), alone));
  EXPECT_EQ("", compare_bits(run_in_flight(remote, scripts, 2), alone)) << "2 micro-batches in flight";
}

TEST_F(TpCluster, SampledGenerationOverTpByPpGivesTheInProcessTokens) {
  SamplerParams sp;
  sp.temperature = 0.9f;
  sp.repeat_penalty = 1.1f;
  sp.repeat_last_n = 8;
  sp.seed = 7;
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378};
  auto run = [&](Pipeline& pipe) {
    Sampler s(sp, pipe.config().n_vocab);
    for (int32_t t : prompt) s.accept(t);
    std::vector<int32_t> out;
    int32_t id = pipe.eval_sample(prompt.data(), static_cast<int64_t>(prompt.size()), 0, s);
    for (int64_t pos = static_cast<int64_t>(prompt.size()); out.size() < 24; ++pos) {
      out.push_back(id);
      s.accept(id);
      id = pipe.eval_sample(&id, 1, pos, s);
    }
    return out;
  };
  TpOptions o;
  o.n_ranks = 2;
  o.make_backend = [](int) { return make_cpu_backend(CpuBackendOptions{true, "auto"}); };
  TpPipeline local(*file_, config_, kv(), o);
  RemotePipeline remote(*file_, config_, options({addr(0), addr(1), addr(2), addr(3)}, 2, TpSync::F32, "0-2,3-4"));
  EXPECT_EQ(run(remote), run(local));
}

TEST_F(TpCluster, BadGroupingsAreNamedErrors) {
  try {
    RemotePipeline p(*file_, config_, options({addr(0), addr(1), addr(2)}, 2));
    ADD_FAILURE() << "3 workers in groups of 2";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("the number of workers must be a multiple of --tp"), std::string::npos)
        << e.what();
  }
  try {
    RemotePipeline p(*file_, config_, options({addr(0), addr(1), addr(2), addr(3)}, 2, TpSync::F32, "0-4"));
    ADD_FAILURE() << "one range for two groups";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("one range per group"), std::string::npos) << e.what();
  }
  // 4 KV heads cannot make 5 ranks: the planner's TP model says so before any Assign; with --split
  // (no planner) the worker refuses its Assign, naming why.
  try {
    RemotePipeline p(*file_, config_, options({addr(0), addr(1), addr(2), addr(3), addr(4)}, 5));
    ADD_FAILURE() << "5 ranks of 4 KV heads";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor parallelism over 5 ranks: the model has only 4 KV heads"),
              std::string::npos)
        << e.what();
  }
  try {
    RemotePipeline p(*file_, config_, options({addr(0), addr(1), addr(2), addr(3), addr(4)}, 5, TpSync::F32, "0-4"));
    ADD_FAILURE() << "5 ranks of 4 KV heads (--split)";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot be tensor-parallel rank"), std::string::npos) << e.what();
  }
}

const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378};

// A follower rank killed (SIGKILL) or stopped (SIGSTOP: no heartbeats) while a token is computed:
// an error naming it within 2 s (the bound), whichever rank's ring noticed first; with the
// default policy (replan) and a single group the error also says no group is left to re-plan over.
TEST_F(TpCluster, DeadOrStoppedRankMidTokenIsNamedWithin2s) {
  struct Case {
    int sig;
    size_t n_workers, victim;  // victim: index of the worker hit (rank 1 of stage 0, or rank 0 of stage 1)
    const char* policy;        // replan with one group: nothing left to re-plan over
  };
  for (const Case& c : {Case{SIGKILL, 2, 1, "replan"}, Case{SIGSTOP, 2, 1, "fail"}, Case{SIGKILL, 4, 2, "fail"},
                        Case{SIGSTOP, 4, 3, "fail"}}) {
    const std::string what = std::string(c.sig == SIGKILL ? "SIGKILL" : "SIGSTOP") + " of worker " +
                             std::to_string(c.victim + 1) + " of " + std::to_string(c.n_workers);
    std::vector<std::unique_ptr<WorkerProcess>> ws;
    std::vector<std::string> addrs;
    for (size_t i = 0; i < c.n_workers; ++i) {
      ws.push_back(std::make_unique<WorkerProcess>("*", std::vector<std::string>{"--debug-delay-ms", "5"}));
      addrs.push_back(ws.back()->address());
    }
    RemotePipelineOptions o = options(addrs, 2, TpSync::F32, c.n_workers == 4 ? "0-1,2-4" : "");
    o.on_worker_loss = c.policy;
    RemotePipeline p(*file_, config_, o);
    Clock::time_point hit{};
    std::thread killer;
    const pid_t pid = ws[c.victim]->child().pid();
    try {
      greedy_with(p, kPrompt, 40, [&](int i) {
        if (i == 5)
          killer = std::thread([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(2));  // inside the step: ranks computing
            hit = Clock::now();
            ::kill(pid, c.sig);
          });
      });
      ADD_FAILURE() << what << ": a lost rank went unnoticed";
    } catch (const std::runtime_error& e) {
      const double took = std::chrono::duration<double>(Clock::now() - hit).count();
      EXPECT_LE(took, 2.0) << what << ": " << e.what();
      const std::string name = "worker " + std::to_string(c.victim + 1) + " of " + std::to_string(c.n_workers) + " (" +
                               addrs[c.victim];
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << what << ": " << e.what();
      if (std::string(c.policy) == "replan") {
        EXPECT_NE(std::string(e.what()).find("no tensor-parallel group left to re-plan over"), std::string::npos)
            << e.what();
      }
      std::printf("%s: named after %.2f s: %s\n", what.c_str(), took, e.what());
    }
    if (killer.joinable()) killer.join();
    if (c.sig == SIGSTOP) ::kill(pid, SIGCONT);
  }
}

// --on-worker-loss replan (the default) over 2 stages x tp 2: a killed rank's whole group is left
// out, the planner puts every layer on the other group, the caches are replayed and the greedy text
// is the uninterrupted run's (equal profiles: both layouts give the in-process equal-share bits).
TEST_F(TpCluster, ReplanLeavesTheLostRanksGroupOut) {
  std::vector<std::unique_ptr<WorkerProcess>> ws;
  std::vector<std::string> addrs;
  for (int i = 0; i < 4; ++i) {
    ws.push_back(std::make_unique<WorkerProcess>(
        "*", std::vector<std::string>{"--debug-delay-ms", "2", "--profile", dir_ + "/slow.json"}));
    addrs.push_back(ws.back()->address());
  }
  RemotePipelineOptions o = options(addrs, 2, TpSync::F32, "0-1,2-4");
  o.on_worker_loss = "replan";
  std::vector<int32_t> want, got;
  {
    RemotePipeline p(*file_, config_, o);
    want = greedy_with(p, kPrompt, 24, {});
  }
  RemotePipeline p(*file_, config_, o);
  std::thread killer;
  got = greedy_with(p, kPrompt, 24, [&](int i) {
    if (i == 6)
      killer = std::thread([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        ws[3]->child().kill9();
      });
  });
  if (killer.joinable()) killer.join();
  EXPECT_EQ(got, want);
  EXPECT_EQ(p.recoveries(), 1);
  EXPECT_EQ(p.n_stages(), 1);
  ASSERT_EQ(p.ranges().size(), 2u);
  EXPECT_EQ(p.ranges()[0].end, config_.n_layers);
}

// A TpRing the worker cannot use is an Error naming why, and changes nothing: before any
// tensor-parallel Assign; from a peer that does not own the worker (refused by role).
TEST_F(TpCluster, StrayTpRingIsRefused) {
  WorkerProcess w;
  auto owner = transport::connect(w.address());
  cluster::Hello h;
  h.session = "tp-test-owner";
  h.name = "tp test";
  ASSERT_EQ(owner->send(cluster::pack(h)), "");
  ASSERT_EQ(owner->recv(3000).status, transport::RecvStatus::ok);
  cluster::TpRing t;
  t.session = 1;
  t.addresses = {"tcp://127.0.0.1:1", "tcp://127.0.0.1:2"};
  auto error = [](transport::Link& l) {
    const transport::Received r = l.recv(3000);
    if (r.status != transport::RecvStatus::ok || r.msg.type != static_cast<uint16_t>(cluster::MsgType::Error))
      return std::string("no Error: ") + r.error;
    return cluster::unpack<cluster::ErrorMsg>(r.msg).message;
  };
  ASSERT_EQ(owner->send(cluster::pack(t)), "");
  EXPECT_NE(error(*owner).find("TpRing without a tensor-parallel assignment"), std::string::npos);
  auto other = transport::connect(w.address());
  h.role = cluster::Role::Upstream;
  h.session = "not-a-token";
  ASSERT_EQ(other->send(cluster::pack(h)), "");
  ASSERT_EQ(other->recv(3000).status, transport::RecvStatus::ok);
  ASSERT_EQ(other->send(cluster::pack(t)), "");
  EXPECT_NE(error(*other).find("refused: TpRing from a peer that does not own this worker"), std::string::npos);
}

// --on-worker-loss wait: a follower killed mid-generation and restarted at its address; the
// coordinator reconnects the same group, forms a new ring, replays the caches and the greedy text
// is the uninterrupted run's.
TEST_F(TpCluster, WaitReformsTheGroupWhenTheRankComesBack) {
  WorkerProcess w1("*", {"--debug-delay-ms", "2"});
  auto w2 = std::make_unique<WorkerProcess>("*", std::vector<std::string>{"--debug-delay-ms", "2"});
  const std::string port = w2->port();
  RemotePipelineOptions o = options({w1.address(), w2->address()}, 2);
  o.on_worker_loss = "wait";
  o.wait_timeout_ms = 20000;
  std::vector<int32_t> want;
  {
    RemotePipeline p(*file_, config_, o);
    want = greedy_with(p, kPrompt, 24, {});
  }
  RemotePipeline p(*file_, config_, o);
  // The restarted worker's --exit-with-parent signal follows the thread that spawned it: that
  // thread lives until the end.
  std::thread restarter;
  std::atomic<bool> release{false};
  std::vector<int32_t> got;
  got = greedy_with(p, kPrompt, 24, [&](int i) {
    if (i == 6)
      restarter = std::thread([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        w2->child().kill9();
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        w2 = std::make_unique<WorkerProcess>(port, std::vector<std::string>{"--debug-delay-ms", "2"});
        while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        w2.reset();
      });
  });
  EXPECT_EQ(got, want);
  EXPECT_EQ(p.recoveries(), 1);
  release = true;
  if (restarter.joinable()) restarter.join();
}

}  // namespace
}  // namespace herd::test
