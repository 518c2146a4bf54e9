// A real cluster on loopback: `herd worker` processes, a RemotePipeline (and the herd CLI) as the
// coordinator. Pipeline parallel with the same kernels must be bit-identical to one process; a
// worker killed mid-request must become an error naming it within 2 s, and a restarted worker
// must be usable again at once.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <zmq_addon.hpp>
#include <filesystem>
#include <fstream>
#include <zmq.hpp>

#include "coordinator/remote_pipeline.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/gguf.h"
#include "model/weights.h"
#include "tests/engine/batch_schedule.h"
#include "tests/integration/cluster_util.h"
#include "tests/tools/tiny_models.h"
#include "cluster/protocol.h"
#include "transport/security.h"
#include "transport/zmq_link.h"

namespace herd::test {
namespace {

using Clock = std::chrono::steady_clock;

struct LocalModel : LocalReference {
  using LocalReference::LocalReference;
  std::unique_ptr<RemotePipeline> remote(std::vector<std::string> workers, const std::string& split = "",
                                         transport::WireDType act = transport::WireDType::F32, int64_t n_seq = 1,
                                         DType kv = DType::F32) {
    RemotePipelineOptions o;
    o.workers = std::move(workers);
    o.split = split;
    o.n_ctx = 256;
    o.n_seq = n_seq;
    o.kv_type = kv;
    o.act_dtype = act;
    o.connect_timeout_ms = 3000;
    return std::make_unique<RemotePipeline>(*file, config, o);
  }
};

class Cluster : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    for (int i = 0; i < 4; ++i) pool_.push_back(std::make_unique<WorkerProcess>());
  }
  static void TearDownTestSuite() { pool_.clear(); }
  static std::vector<std::string> first(size_t n) {
    std::vector<std::string> out;
    for (size_t i = 0; i < n; ++i) out.push_back(pool_[i]->address());
    return out;
  }
  void check_splits(const std::string& model_name, const std::vector<std::pair<size_t, std::string>>& plans) {
    LocalModel m(model_name);
    const std::vector<int32_t> prompt = {1, 403, 407, 261, 378};
    const auto want_ids = greedy(*m.local, prompt, 24);
    for (const auto& [n, split] : plans) {
      const std::string what = model_name + " on " + std::to_string(n) + " workers, split '" + split + "'";
      auto remote = m.remote(first(n), split);
      ASSERT_EQ(remote->ranges().size(), n);
      expect_same_logits(*m.local, *remote, what);
      EXPECT_EQ(greedy(*remote, prompt, 24), want_ids) << what;
    }
  }
  static std::vector<std::unique_ptr<WorkerProcess>> pool_;
};
std::vector<std::unique_ptr<WorkerProcess>> Cluster::pool_;

TEST_F(Cluster, Stories260KBitIdenticalOn1To4Workers) {
  // 5 layers: even-ish splits, then 1|4 and 4|1 ("" = the planner's split on one worker).
  check_splits("stories260K.gguf", {{1, ""}, {2, "0-2,3-4"}, {3, "0-1,2-3,4-4"}, {4, "0-1,2-2,3-3,4-4"},
                                    {2, "0-0,1-4"}, {2, "0-3,4-4"}});
}

TEST_F(Cluster, RandkQ4KMBitIdenticalOn1To4WorkersIncludingUnevenSplits) {
  // 4 layers: 1|3 and 3|1 as well as one layer per worker.
  check_splits("randk-Q4_K_M.gguf", {{1, ""}, {2, "0-1,2-3"}, {3, "0-1,2-2,3-3"}, {4, "0-0,1-1,2-2,3-3"},
                                     {2, "0-0,1-3"}, {2, "0-2,3-3"}});
}

// Four sequences (different prompts and lengths, joining at different steps) in one batch per
// step, over 2 and 3 real workers: each gets logits bit-identical to running alone in one process;
// the same with two micro-batches in flight at once; and seeded sampling with a repeat penalty
// (the last stage keeps each sequence's sampler) gives the single process's tokens.
TEST_F(Cluster, BatchOfFourSequencesBitIdenticalToEachAloneOn2And3Workers) {
  for (const auto& [name, kv] : std::vector<std::pair<std::string, DType>>{{"stories260K.gguf", DType::F16},
                                                                            {"randk-Q4_K_M.gguf", DType::Q8_0}}) {
    LocalModel m(name);
    const auto scripts = make_scripts(4, static_cast<int32_t>(m.config.n_vocab));
    std::vector<SeqLogits> alone;
    LocalPipeline one(*m.file, m.config, *m.backend, KvOptions{256, 1, kv});
    for (const auto& sc : scripts) alone.push_back(run_alone(one, sc));
    LocalPipeline four(*m.file, m.config, *m.backend, KvOptions{256, 4, kv});
    std::vector<std::vector<int32_t>> prompts;
    for (const auto& sc : scripts) prompts.push_back(sc.prompt);
    SamplerParams sp;
    sp.temperature = 0.9f;
    sp.repeat_penalty = 1.3f;
    sp.repeat_last_n = 8;
    const auto want_tokens = sample_together(four, prompts, 12, sp, 11);
    const std::string split3 = name == "stories260K.gguf" ? "0-1,2-3,4-4" : "0-1,2-2,3-3";
    for (const auto& [n, split] : std::vector<std::pair<size_t, std::string>>{{2, "0-1," + std::string(name == "stories260K.gguf" ? "2-4" : "2-3")}, {3, split3}}) {
      const std::string what = name + " on " + std::to_string(n) + " workers";
      auto remote = m.remote(first(n), split, transport::WireDType::F32, 4, kv);
      EXPECT_EQ("", compare_bits(run_together(*remote, scripts), alone)) << what;
      EXPECT_EQ("", compare_bits(run_in_flight(*remote, scripts, 2), alone)) << what << ", 2 micro-batches in flight";
      EXPECT_EQ(sample_together(*remote, prompts, 12, sp, 11), want_tokens) << what << ", sampled";
    }
  }
}

// status(): after some batches every stage reports its address, device, memory, layers and the
// compute time it measured; the hops (coordinator -> stage 0 -> 1 -> 2 -> coordinator) get what
// the round trip leaves, so stage times and hop times add up to the batch time.
TEST_F(Cluster, StatusReportsEveryStageAndHopAfterSomeBatches) {
  LocalModel m("stories260K.gguf");
  auto remote = m.remote(first(3), "0-1,2-3,4-4");
  PipelineStatus st = remote->status();
  ASSERT_EQ(st.stages.size(), 3u);
  EXPECT_EQ(st.hop_ms.size(), 4u);
  EXPECT_EQ(st.batches, 0u);
  expect_same_logits(*m.local, *remote, "3 workers");  // the timings change no bits
  const auto ids = greedy(*remote, {1, 403, 407, 261, 378}, 8);
  EXPECT_EQ(ids, greedy(*m.local, {1, 403, 407, 261, 378}, 8));
  st = remote->status();
  EXPECT_GE(st.batches, 9u);
  const int64_t first_layer[] = {0, 2, 4}, end_layer[] = {2, 4, 5};
  double sum = 0;
  for (size_t i = 0; i < 3; ++i) {
    const StageStatus& s = st.stages[i];
    const std::string addr = pool_[i]->address();
    EXPECT_EQ(s.name, addr.rfind("tcp://", 0) == 0 ? addr.substr(6) : addr);
    EXPECT_EQ(s.device.rfind("cpu-", 0), 0u) << s.device;
    EXPECT_NE(s.device.find("1 thread"), std::string::npos) << s.device;  // the workers run -t 1
    EXPECT_EQ(s.first_layer, first_layer[i]);
    EXPECT_EQ(s.end_layer, end_layer[i]);
    model::LayerRange r{first_layer[i], end_layer[i], i == 0, i == 2};
    EXPECT_GT(s.memory_bytes, model::stage_weight_bytes(*m.file, m.config, r)) << "weights + KV cache";
    EXPECT_GT(s.compute_ms, 0.0) << s.name;
    EXPECT_GE(s.overhead_ms, 0.0);
    sum += s.compute_ms + s.overhead_ms;
  }
  ASSERT_EQ(st.hop_ms.size(), 4u);
  for (double h : st.hop_ms) {
    EXPECT_GE(h, 0.0);
    sum += h;
  }
  EXPECT_GT(st.batch_ms, 0.0);
  // Every part of a batch's round trip is a stage's or a hop's (the means are linear).
  EXPECT_NEAR(sum, st.batch_ms, 1e-9 + 1e-9 * st.batch_ms);
}

TEST_F(Cluster, F16ActivationsStayClose) {
  LocalModel m("stories260K.gguf");
  auto remote = m.remote(first(3), "0-1,2-3,4-4", transport::WireDType::F16);
  int64_t n_prompt = 0;
  const auto tokens = reference_tokens(n_prompt);
  const LogitsFile a = replay_logits(*m.local, tokens, n_prompt), b = replay_logits(*remote, tokens, n_prompt);
  ASSERT_EQ(a.rows.size(), b.rows.size());
  double max_diff = 0, max_abs = 0;
  bool any_diff = false;
  for (size_t r = 0; r < a.rows.size(); ++r)
    for (size_t i = 0; i < a.rows[r].logits.size(); ++i) {
      max_diff = std::max(max_diff, double(std::fabs(a.rows[r].logits[i] - b.rows[r].logits[i])));
      max_abs = std::max(max_abs, double(std::fabs(a.rows[r].logits[i])));
      any_diff |= a.rows[r].logits[i] != b.rows[r].logits[i];
    }
  EXPECT_TRUE(any_diff) << "f16 activations should round somewhere";
  // f16 keeps 11 significant bits (relative error 2^-11 per hidden value); after the remaining layers
  // the logits move by a small multiple of that relative to their scale.
  EXPECT_LT(max_diff, 0.02 * max_abs) << "max |diff| " << max_diff << " vs max |logit| " << max_abs;
}

TEST_F(Cluster, WorkerSurvivesGarbageAndServesAGoodCoordinator) {
  // A member of the cluster (it holds the key) sending garbage; strangers: test_security.cpp.
  zmq::socket_t raw(transport::zmq_context(), zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  transport::secure_client_socket(raw);
  raw.connect(pool_[0]->address());
  auto send_all = [&](const std::vector<std::string>& frames) {
    for (size_t i = 0; i < frames.size(); ++i)
      raw.send(zmq::buffer(frames[i]), i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  };
  send_all({"complete garbage"});
  send_all({std::string(12, '\xff'), "x", "y"});
  send_all(transport::encode_frames(cluster::pack(cluster::Forward{1, 0, 1, false})));  // before Hello
  cluster::Hello old;
  old.protocol_version = 999;
  send_all(transport::encode_frames(cluster::pack(old)));
  auto frames = transport::encode_frames(cluster::pack(cluster::Hello{}));
  frames[1].resize(3);  // truncated payload
  send_all(frames);
  // The worker answers each with an Error (and keeps running).
  int errors = 0;
  for (int i = 0; i < 5; ++i) {
    zmq::pollitem_t item{raw.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(2000)) <= 0) break;
    std::vector<zmq::message_t> parts;
    (void)zmq::recv_multipart(raw, std::back_inserter(parts));
    ++errors;
  }
  EXPECT_EQ(errors, 5);
  EXPECT_EQ(waitpid(pool_[0]->child().pid(), nullptr, WNOHANG), 0) << "the worker died";
  LocalModel m("stories260K.gguf");
  auto remote = m.remote(first(2), "0-2,3-4");
  expect_same_logits(*m.local, *remote, "after garbage");
  EXPECT_NE(pool_[0]->child().err().find("dropping peer"), std::string::npos) << "drops are logged";
}

TEST_F(Cluster, HandshakeErrorsAreClear) {
  LocalModel m("stories260K.gguf");
  WorkerProcess other("*", {"-m", model_path("randk-Q4_K_M.gguf")});
  try {
    m.remote({pool_[0]->address(), other.address()}, "0-2,3-4");
    ADD_FAILURE() << "a worker with another model was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("worker 2 of 2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model mismatch"), std::string::npos) << e.what();
  }
  const std::string dead = other.address();
  other.child().kill9();
  const auto t = Clock::now();
  try {
    m.remote({dead});
    ADD_FAILURE() << "connected to nobody";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no answer within"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t).count(), 5.0);
  EXPECT_THROW(m.remote(first(2), "0-1,2-3,4-4"), std::runtime_error) << "3 ranges for 2 workers";
}

TEST_F(Cluster, KilledWorkerIsAnErrorWithin2sAndARestartedOneServesAgain) {
  LocalModel m("stories260K.gguf");
  WorkerProcess w1, w2("*", {"--debug-delay-ms", "400"});
  const std::string port2 = w2.port();
  auto remote = m.remote({w1.address(), w2.address()}, "0-2,3-4");
  std::vector<float> logits;
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 300, 12};
  remote->eval(prompt.data(), 5, 0, false, logits);

  std::atomic<int64_t> killed_at_ns{0};
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));  // inside the 400 ms forward
    w2.child().kill9();
    killed_at_ns = Clock::now().time_since_epoch().count();
  });
  std::string message;
  try {
    remote->eval(prompt.data() + 5, 1, 5, false, logits);
  } catch (const std::runtime_error& e) {
    message = e.what();
  }
  const auto caught = Clock::now();
  killer.join();
  ASSERT_FALSE(message.empty()) << "the request did not fail";
  const double seconds = std::chrono::duration<double>(caught.time_since_epoch()).count() - killed_at_ns * 1e-9;
  EXPECT_LT(seconds, 2.0) << message;
  EXPECT_NE(message.find("worker 2 of 2"), std::string::npos) << message;
  EXPECT_NE(message.find("layers 3-4"), std::string::npos) << message;
  EXPECT_NE(message.find(port2), std::string::npos) << message;

  // Restart it on the same port; the next request re-assigns and rebuilds the lost cache.
  WorkerProcess again(port2);
  ASSERT_EQ(again.port(), port2);
  std::vector<float> want;
  m.local->eval(prompt.data(), 5, 0, false, want);
  m.local->eval(prompt.data() + 5, 2, 5, false, want);
  remote->eval(prompt.data() + 5, 2, 5, false, logits);
  ASSERT_EQ(logits.size(), want.size());
  // The cache was rebuilt in one batch (positions 0-4 were one batch originally too): bit-identical.
  EXPECT_EQ(0, std::memcmp(logits.data(), want.data(), want.size() * sizeof(float)));
}

// ---- the CLI ----

ProcessResult herd_cli(std::vector<std::string> args, double timeout_s = 120) {
  args.insert(args.begin(), herd_bin());
  return run_process(args, timeout_s);
}

std::string temp_file(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("herd-cluster-" + std::to_string(getpid()) + "-" + name)).string();
}

TEST_F(Cluster, CliRunAndLogitsMatchLocal) {
  const std::string workers = pool_[0]->address() + "," + pool_[1]->address() + "," + pool_[2]->address();
  const std::vector<std::string> run = {"run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time",
                                        "--temp", "0", "-n", "40", "-t", "1"};
  auto local = herd_cli(run);
  auto with = run;
  with.insert(with.end(), {"--workers", workers});
  auto remote = herd_cli(with);
  ASSERT_EQ(local.exit_code, 0) << local.err;
  ASSERT_EQ(remote.exit_code, 0) << remote.err;
  EXPECT_EQ(local.out, remote.out);

  const std::string a = temp_file("local.log1"), b = temp_file("remote.log1");
  const std::vector<std::string> logits = {"logits", "-m", model_path("randk-Q4_K_M.gguf"), "--replay",
                                           reference_path("stories260K.p1.log1"), "-t", "1", "-c", "256"};
  auto l = logits, r = logits;
  l.insert(l.end(), {"--out", a});
  r.insert(r.end(), {"--out", b, "--workers", workers, "--split", "0-0,1-2,3-3"});
  ASSERT_EQ(herd_cli(l).exit_code, 0);
  auto rr = herd_cli(r);
  ASSERT_EQ(rr.exit_code, 0) << rr.err;
  EXPECT_TRUE(slurp(a) == slurp(b)) << "LOG1 files differ";
  EXPECT_GT(slurp(a).size(), 1000u);
  std::remove(a.c_str());
  std::remove(b.c_str());

  // Seeded sampling: the last stage samples with the coordinator's RNG draws, so --seed gives the
  // same text locally and on the cluster (and a different seed, different text).
  for (const std::string seed : {"7", "1234"}) {
    const std::vector<std::string> sampled = {"run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time",
                                              "--temp", "0.9", "--repeat-penalty", "1.1", "-s", seed, "-n", "48",
                                              "-t", "1"};
    auto ls = herd_cli(sampled);
    auto cs = sampled;
    cs.insert(cs.end(), {"--workers", pool_[0]->address() + "," + pool_[1]->address(), "--split", "0-2,3-4"});
    auto rs = herd_cli(cs);
    ASSERT_EQ(ls.exit_code, 0) << ls.err;
    ASSERT_EQ(rs.exit_code, 0) << rs.err;
    EXPECT_EQ(ls.out, rs.out) << "seed " << seed;
    EXPECT_NE(ls.out, local.out) << "seed " << seed << " gave the greedy text";
  }

  auto bad = herd_cli({"run", "-m", model_path("stories260K.gguf"), "-p", "x", "--workers", workers, "--act-dtype",
                       "bf16"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--act-dtype"), std::string::npos) << bad.err;
}

// Without --split the CLI plans the split from what the workers report (`herd worker
// --report-free-mem` is the test hook for a small host) and prints it on one line.
TEST_F(Cluster, CliPlansTheSplitFromReportedProfiles) {
  WorkerProcess small("*", {"--report-free-mem", "1000000"}), tiny("*", {"--report-free-mem", "2000000"});
  const std::vector<std::string> run = {"run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time",
                                        "--temp", "0", "-n", "16", "-t", "1"};
  auto local = herd_cli(run);
  ASSERT_EQ(local.exit_code, 0) << local.err;

  auto with = run;
  with.insert(with.end(), {"--workers", small.address() + "," + pool_[0]->address()});
  auto r = herd_cli(with);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, local.out);
  EXPECT_NE(r.err.find("plan: worker 2 layers 0-4; predicted "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("worker 1 unused (cannot hold a single layer"), std::string::npos) << r.err;

  auto none = run;
  none.insert(none.end(), {"--workers", small.address() + "," + tiny.address()});
  r = herd_cli(none);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("does not fit"), std::string::npos) << r.err;

  auto even = run;
  even.insert(even.end(), {"--workers", pool_[0]->address() + "," + pool_[1]->address(), "--plan-strategy", "even"});
  r = herd_cli(even);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, local.out);
  EXPECT_NE(r.err.find("plan: worker 1 layers 0-2, worker 2 layers 3-4; predicted "), std::string::npos) << r.err;

  // A saved `herd probe` profile instead of the startup measurement; a bad one is a clear error.
  const std::string probe = temp_file("probe.json");
  {
    std::ofstream f(probe);
    f << R"({"herd_probe": 1, "mem_total_bytes": 8e9, "mem_available_bytes": 6e9, "read_bw_Bps": 5e9,
             "matvec_Bps": {"q8_0": 4e9}})";
  }
  WorkerProcess loaded("*", {"--profile", probe});
  auto l = run;
  l.insert(l.end(), {"--workers", loaded.address()});
  r = herd_cli(l);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, local.out);
  EXPECT_NE(r.err.find("plan: worker 1 layers 0-4"), std::string::npos) << r.err;
  auto bad = herd_cli({"worker", "--listen", "tcp://127.0.0.1:*", "--profile", "/nonexistent/probe.json"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("/nonexistent/probe.json"), std::string::npos) << bad.err;
  std::remove(probe.c_str());
}

TEST_F(Cluster, CliExitsWithin2sWhenAWorkerIsKilled) {
  WorkerProcess w1, w2("*", {"--debug-delay-ms", "20"});
  Child run({herd_bin(), "run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time", "--temp", "0", "-n",
             "1000", "-c", "2048", "-t", "1", "--workers", w1.address() + "," + w2.address(), "--split", "0-2,3-4",
             "--on-worker-loss", "fail"});  // the default, replan, would go on with worker 1 alone
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (run.out().size() < 40 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_GE(run.out().size(), 40u) << "generation did not start: " << run.err();
  w2.child().kill9();
  const auto t = Clock::now();
  const int code = run.wait_exit(10);
  const double seconds = std::chrono::duration<double>(Clock::now() - t).count();
  EXPECT_EQ(code, 1) << run.err();
  EXPECT_LT(seconds, 2.0);
  EXPECT_NE(run.err().find("worker 2 of 2"), std::string::npos) << run.err();
  EXPECT_NE(run.err().find("layers 3-4"), std::string::npos) << run.err();
  // The surviving worker and a restarted one serve the next request.
  WorkerProcess again(w2.port());
  auto ok = herd_cli({"run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time", "--temp", "0", "-n", "8",
                      "-t", "1", "--workers", w1.address() + "," + again.address()});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

TEST_F(Cluster, WorkerProcessesWithoutTheModelFetchItOnceThenStartFromTheirCache) {
  LocalModel m("stories260K.gguf");
  char t0[] = "/tmp/herd-cache-a-XXXXXX", t1[] = "/tmp/herd-cache-b-XXXXXX";
  const std::string d0 = mkdtemp(t0), d1 = mkdtemp(t1);
  RemotePipelineOptions o;
  o.split = "0-2,3-4";
  o.n_ctx = 256;
  o.model_path = "/nonexistent/herd-test/stories260K.gguf";
  uint64_t expected = 0;
  for (const auto& r : parse_split(o.split, m.config.n_layers))
    expected += m.file->data_offset() + model::stage_weight_bytes(*m.file, m.config, r);
  for (int start = 0; start < 2; ++start) {
    WorkerProcess w0("*", {"--cache-dir", d0}), w1("*", {"--cache-dir", d1});
    o.workers = {w0.address(), w1.address()};
    RemotePipeline remote(*m.file, m.config, o);
    EXPECT_EQ(remote.weight_bytes_sent(), start == 0 ? expected : 0u) << "start " << start;
    expect_same_logits(*m.local, remote, "start " + std::to_string(start));
    if (start == 0) {
      EXPECT_NE(w0.child().err().find("receiving weights"), std::string::npos) << w0.child().err();
    }
  }
  std::filesystem::remove_all(d0);
  std::filesystem::remove_all(d1);
}

// A mixture of experts (tiny-qwen3moe-q8: 3 layers of 8 Q8_0 experts, 2 used per token) on worker
// processes that do not have the file: each is sent exactly its layers' tensors, experts included,
// and 2 or 3 workers give the bits of one process, alone and with four sequences batched.
TEST_F(Cluster, MixtureOfExpertsOnWorkersWithoutTheModelBitIdenticalToLocal) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("herd-cluster-moe-" + std::to_string(getpid()) + ".gguf")).string();
  for (const auto& spec : tiny_model_specs())
    if (spec.name == "qwen3moe-q8") write_tiny_model(spec, model_path("stories260K.gguf"), path);
  auto file = model::GgufFile::open(path);
  const auto config = model::load_config(*file);
  ASSERT_TRUE(config.is_moe());
  auto backend = make_cpu_backend();
  backend->set_threads(1);
  LocalPipeline local(*file, config, *backend, 256);
  const auto scripts = make_scripts(4, static_cast<int32_t>(config.n_vocab));
  std::vector<SeqLogits> alone;
  LocalPipeline one(*file, config, *backend, KvOptions{256, 1, DType::F16});
  for (const auto& sc : scripts) alone.push_back(run_alone(one, sc));
  for (const std::string split : {"0-1,2-2", "0-0,1-1,2-2"}) {
    std::vector<std::unique_ptr<WorkerProcess>> workers;
    std::vector<std::string> dirs;
    RemotePipelineOptions o;
    o.split = split;
    o.n_ctx = 256;
    o.model_path = "/nonexistent/herd-test/tiny-qwen3moe-q8.gguf";
    o.connect_timeout_ms = 3000;
    uint64_t expected = 0;
    for (const auto& r : parse_split(split, config.n_layers)) {
      char t[] = "/tmp/herd-cache-moe-XXXXXX";
      dirs.push_back(mkdtemp(t));
      workers.push_back(std::make_unique<WorkerProcess>("*", std::vector<std::string>{"--cache-dir", dirs.back()}));
      o.workers.push_back(workers.back()->address());
      expected += file->data_offset() + model::stage_weight_bytes(*file, config, r);
    }
    {
      RemotePipeline remote(*file, config, o);
      EXPECT_EQ(remote.weight_bytes_sent(), expected) << split;
      expect_same_logits(local, remote, "tiny-qwen3moe-q8 split " + split);
    }
    o.n_seq = 4;
    o.kv_type = DType::F16;
    RemotePipeline four(*file, config, o);
    EXPECT_EQ("", compare_bits(run_together(four, scripts), alone)) << split;
    for (const auto& d : dirs) std::filesystem::remove_all(d);
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace herd::test
