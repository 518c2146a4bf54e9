// [offload] item 1: a `herd worker` whose shard exceeds its memory budget streams its repacked
// weights from a file of its weight cache. Real worker processes on 127.0.0.1 and a synthetic
// model whose layers dominate it (32 layers of the stories110M shape in Q8_0 — the type the x86
// kernels repack — with a 16384-token vocabulary, so the output is cut in two pieces):
//   - --mem-budget a quarter of the shard: teacher-forced logits bit-identical (memcmp) to an
//     unconstrained worker's, peak RSS (VmHWM) within the budget + the slack derived below, the
//     leading layers that fit kept resident and the rest streamed (the worker's note says which);
//   - the same under a real memory cgroup v1 whose limit is a quarter of the shard (the worker's
//     auto budget finds the limit itself); skipped, saying why, where cgroups are not writable;
//   - the packed file is reused by the next start, and a damaged one is rebuilt;
//   - --no-stream over budget is an error naming the bytes needed and the budget.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "coordinator/plan_adapter.h"
#include "coordinator/remote_pipeline.h"
#include "coordinator/replay.h"
#include "model/gguf.h"
#include "model/synth.h"
#include "model/weights.h"
#include "engine/host_probe.h"
#include "tests/integration/cluster_util.h"
#include "worker/worker_server.h"

namespace herd::test {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kCtx = 96;  // stories260K.p1: 65 tokens

bool write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.flush();
  return static_cast<bool>(out);
}

// The model (written once per test process) and a private cache directory.
struct OffloadModel {
  std::string dir, path;
  std::unique_ptr<model::GgufFile> file;
  model::ModelConfig config;
  uint64_t shard = 0;  // the whole model's stage tensors: one worker holds layers 0-31 + embedding + output
  OffloadModel() {
    dir = (fs::temp_directory_path() / ("herd-offload-" + std::to_string(getpid()))).string();
    fs::create_directories(dir);
    path = dir + "/layers.gguf";
    model::SynthOptions o;
    o.config.arch = "llama";
    o.config.name = "offload-test";
    o.config.n_layers = 32;
    o.config.n_embd = 768;
    o.config.n_ff = 2048;
    o.config.n_heads = 12;
    o.config.n_kv_heads = 12;
    o.config.head_dim = 64;
    // A synthetic vocabulary (stories260K's reference token ids fit it) whose output matrix (16384
    // rows, 12.8 MiB) is larger than a layer (7.1 MiB): it is streamed in two pieces.
    o.config.n_vocab = 16384;
    o.config.n_ctx_train = 256;
    o.mix = model::parse_type_mix("Q8_0");
    model::write_synth_model(o, path);
    file = model::GgufFile::open(path);
    config = model::load_config(*file);
    shard = model::stage_weight_bytes(*file, config, model::LayerRange{0, config.n_layers, true, true});
  }
  ~OffloadModel() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

OffloadModel& the_model() {
  static OffloadModel m;
  return m;
}

// Teacher-forced logits of stories260K.p1's tokens (a prompt batch, then one token at a time).
struct Replayed {
  LogitsFile logits;
  int64_t n_prompt = 0;
};
// decode_rows >= 0: only the prompt and that many decode steps (the rows are a prefix of the full run's).
// split "": the coordinator's own plan over the workers.
Replayed replay_over(const std::vector<std::string>& workers, const std::string& split, int64_t decode_rows) {
  auto& m = the_model();
  RemotePipelineOptions o;
  o.workers = workers;
  o.split = split;
  o.n_ctx = kCtx;
  o.kv_type = DType::F16;
  RemotePipeline remote(*m.file, m.config, o);
  Replayed r;
  auto tokens = reference_tokens(r.n_prompt);
  if (decode_rows >= 0) tokens.resize(std::min(tokens.size(), static_cast<size_t>(r.n_prompt + decode_rows)));
  r.logits = replay_logits(remote, tokens, r.n_prompt);
  return r;
}
Replayed replay_on(const std::string& worker, int64_t decode_rows = -1) {
  return replay_over({worker}, "0-" + std::to_string(the_model().config.n_layers - 1), decode_rows);
}

void expect_bit_identical(const LogitsFile& a, const LogitsFile& b, const std::string& what) {
  // b may be a prefix of a's rows (replay_on with decode_rows).
  ASSERT_LE(b.rows.size(), a.rows.size()) << what;
  ASSERT_GE(b.rows.size(), 4u) << what << ": several tokens";
  for (size_t i = 0; i < b.rows.size(); ++i) {
    ASSERT_EQ(a.rows[i].logits.size(), b.rows[i].logits.size());
    ASSERT_EQ(0, std::memcmp(a.rows[i].logits.data(), b.rows[i].logits.data(), a.rows[i].logits.size() * sizeof(float)))
        << what << ": logits of row " << i << " differ";
  }
}

// What the worker's budget does not count, so its peak RSS may exceed the budget by this much:
//  - the replay's prompt batch: the budget counts activations for n_seq = 1 row
//    (stage_activation_bytes), the prompt has n_prompt rows;
//  - 4 MiB stated for what no shape gives: malloc's retained arenas, touched thread stacks, the
//    tok_embd rows get_rows faults in during a pass, the page rounding of each unit's ranges.
uint64_t slack_bytes(int64_t n_prompt) {
  auto& m = the_model();
  const model::LayerRange all{0, m.config.n_layers, true, true};
  return stage_activation_bytes(m.config, all, n_prompt, kCtx, DType::F16) -
         stage_activation_bytes(m.config, all, 1, kCtx, DType::F16) + (uint64_t{4} << 20);
}

Replayed& unconstrained() {
  static Replayed r = [] {
    WorkerProcess w("*", {"--cache-dir", the_model().dir + "/cache-plain"});
    return replay_on(w.address());
  }();
  return r;
}

TEST(Offload, QuarterBudgetStreamsBitIdenticalWithinTheBudget) {
  auto& m = the_model();
  const Replayed& plain = unconstrained();
  const uint64_t budget = m.shard / 4;
  const std::string cache = m.dir + "/cache-quarter";
  WorkerProcess w("*", {"--mem-budget", std::to_string(budget), "--cache-dir", cache});
  const Replayed streamed = replay_on(w.address());
  expect_bit_identical(plain.logits, streamed.logits, "a quarter budget");
  const std::string err = w.child().err();
  // The leading layers that fit stay resident (worker/stream_plan.h): a quarter budget less the KV
  // cache (9 MiB), the activations (< 1 MiB) and the process (~22 MiB at assignment) leaves ~30 MiB,
  // room for at least one 7.1 MiB layer besides the 4 MiB streaming window; the rest stream.
  const size_t keep = err.find("keeping layers 0-");
  ASSERT_NE(keep, std::string::npos) << "no layer kept resident: " << err;
  const int last_resident = std::atoi(err.c_str() + keep + std::strlen("keeping layers 0-"));
  EXPECT_NE(err.find("streaming the weights of layers " + std::to_string(last_resident + 1) + "-" +
                     std::to_string(m.config.n_layers - 1) + " + output from " + cache),
            std::string::npos)
      << err;
  const uint64_t hwm = proc_status_bytes("VmHWM", w.child().pid());
  const uint64_t slack = slack_bytes(streamed.n_prompt);
  std::printf("shard %.1f MiB, budget %.1f MiB, slack %.1f MiB, peak RSS %.1f MiB\n", m.shard / 1048576.0,
              budget / 1048576.0, slack / 1048576.0, hwm / 1048576.0);
  ASSERT_GT(hwm, 0u);
  EXPECT_LE(hwm, budget + slack) << "the streaming worker's peak RSS exceeds its budget";
}

TEST(Offload, ThePackedFileIsReusedAndADamagedOneRebuilt) {
  auto& m = the_model();
  const Replayed& plain = unconstrained();
  const std::string budget = std::to_string(m.shard / 4), cache = m.dir + "/cache-reuse";
  std::string packed;
  {
    WorkerProcess w("*", {"--mem-budget", budget, "--cache-dir", cache});
    expect_bit_identical(plain.logits, replay_on(w.address(), 3).logits, "first start");
  }
  for (const auto& e : fs::recursive_directory_iterator(cache))
    if (e.path().filename().string().rfind("packed-", 0) == 0) packed = e.path().string();
  ASSERT_FALSE(packed.empty()) << "no packed file under " << cache;
  const auto written = fs::last_write_time(packed);
  {
    WorkerProcess w("*", {"--mem-budget", budget, "--cache-dir", cache});
    expect_bit_identical(plain.logits, replay_on(w.address(), 3).logits, "second start");
    EXPECT_EQ(w.child().err().find("rebuilding"), std::string::npos) << w.child().err();
    EXPECT_TRUE(fs::last_write_time(packed) == written) << "the packed file was written again";
  }
  // One byte in the middle of the data flipped: the crc32 of its matrix fails, the file is rebuilt.
  {
    std::fstream f(packed, std::ios::in | std::ios::out | std::ios::binary);
    const auto at = static_cast<std::streamoff>(fs::file_size(packed) / 2);
    f.seekg(at);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x5a);
    f.seekp(at);
    f.write(&c, 1);
    ASSERT_TRUE(f.good());
  }
  {
    WorkerProcess w("*", {"--mem-budget", budget, "--cache-dir", cache});
    expect_bit_identical(plain.logits, replay_on(w.address(), 3).logits, "after the damage");
    const std::string err = w.child().err();
    EXPECT_NE(err.find("fails its crc32 (damaged)); rebuilding"), std::string::npos) << err;
  }
  // A truncated file is rebuilt too (its size no longer matches the header's).
  fs::resize_file(packed, fs::file_size(packed) / 3);
  {
    WorkerProcess w("*", {"--mem-budget", budget, "--cache-dir", cache});
    expect_bit_identical(plain.logits, replay_on(w.address(), 3).logits, "after truncation");
    EXPECT_NE(w.child().err().find("rebuilding"), std::string::npos) << w.child().err();
  }
}

TEST(Offload, NoStreamOverBudgetIsAnErrorNamingTheBytes) {
  auto& m = the_model();
  WorkerProcess w("*", {"--mem-budget", std::to_string(m.shard / 4), "--no-stream", "--cache-dir", m.dir + "/cache-no"});
  try {
    replay_on(w.address());
    FAIL() << "a worker with --no-stream accepted a stage over its budget";
  } catch (const std::exception& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("--no-stream"), std::string::npos) << what;
    EXPECT_NE(what.find("the memory budget is"), std::string::npos) << what;
    EXPECT_NE(what.find("MiB resident (weights"), std::string::npos) << what;
  }
}

// A child memory cgroup (v1) of this process's own, removed at the end (after the worker is gone:
// declare it before the WorkerProcess).
struct Cgroup {
  std::string path, why_not;
  explicit Cgroup(const std::string& name) {
    std::ifstream in("/proc/self/cgroup");
    std::string parent;
    for (std::string line; std::getline(in, line);) {
      const size_t a = line.find(':'), b = line.find(':', a + 1);
      if (a != std::string::npos && b != std::string::npos && line.substr(a + 1, b - a - 1) == "memory")
        parent = line.substr(b + 1);
    }
    const std::string root = "/sys/fs/cgroup/memory";
    if (parent.empty() || !fs::exists(root + "/memory.limit_in_bytes")) {
      why_not = "no cgroup v1 memory controller at " + root;
      return;
    }
    const std::string p = root + (parent == "/" ? "" : parent) + "/" + name;
    if (::mkdir(p.c_str(), 0755) != 0) {
      why_not = "cannot create the memory cgroup " + p + ": " + std::strerror(errno);
      return;
    }
    path = p;
  }
  ~Cgroup() {
    if (!path.empty() && ::rmdir(path.c_str()) != 0)
      ADD_FAILURE() << "cannot remove the memory cgroup " << path << ": " << std::strerror(errno);
  }
  std::string file(const std::string& f) const { return path + "/" + f; }
};

TEST(Offload, AMemoryCgroupBelowTheShardHoldsTheWorkerAndTheBitsStay) {
  auto& m = the_model();
  const Replayed& plain = unconstrained();
  const uint64_t limit = m.shard / 4;
  Cgroup cg("herd-offload-" + std::to_string(getpid()));
  if (cg.path.empty()) GTEST_SKIP() << "memory cgroups are not writable here: " << cg.why_not;
  // Charges move with the worker (it has already mapped its binary and measured its profile).
  write_text(cg.file("memory.move_charge_at_immigrate"), "1");
  ASSERT_TRUE(write_text(cg.file("memory.limit_in_bytes"), std::to_string(limit))) << cg.file("memory.limit_in_bytes");
  // Without swap the limit holds memory+swap too where the kernel accounts it.
  write_text(cg.file("memory.memsw.limit_in_bytes"), std::to_string(limit));
  {
    WorkerProcess w("*", {"--cache-dir", m.dir + "/cache-cgroup"});  // --mem-budget auto: it must find the limit
    ASSERT_TRUE(write_text(cg.file("cgroup.procs"), std::to_string(w.child().pid()))) << "cannot move the worker in";
    const Replayed streamed = replay_on(w.address());
    expect_bit_identical(plain.logits, streamed.logits, "under a memory cgroup");
    const std::string err = w.child().err();
    EXPECT_NE(err.find("the memory cgroup limit"), std::string::npos) << err;
    EXPECT_NE(err.find("streaming the weights"), std::string::npos) << err;
    EXPECT_TRUE(w.child().running()) << "the worker died under the limit";
    const uint64_t hwm = proc_status_bytes("VmHWM", w.child().pid());
    const uint64_t max_usage = std::stoull(slurp(cg.file("memory.max_usage_in_bytes")));
    const std::string oom = slurp(cg.file("memory.oom_control"));
    std::printf("cgroup limit %.1f MiB: peak RSS %.1f MiB, cgroup peak usage (page cache included) %.1f MiB\n",
                limit / 1048576.0, hwm / 1048576.0, max_usage / 1048576.0);
    EXPECT_LE(hwm, limit) << "the worker's peak RSS exceeds the cgroup's limit";
    EXPECT_LE(max_usage, limit);
    EXPECT_NE(oom.find("oom_kill 0"), std::string::npos) << "the cgroup OOM-killed something: " << oom;
  }
}

// The coordinator's own plan (no --split): two workers with their own copy (-m, whose disk they
// measure at startup) and a quarter of the shard each as budget report both in their Hello, so the
// planner gives them more layers than their memory holds and the one over its budget streams; the
// logits are the unconstrained single worker's bits (a pipeline's are a process's). (Without a disk
// in the Hello the planner cannot stream, and the model does not fit the two budgets.)
TEST(Offload, TheCoordinatorsOwnPlanStreamsOnWorkersThatReportTheirDisk) {
  auto& m = the_model();
  const Replayed& plain = unconstrained();
  const std::string budget = std::to_string(m.shard / 4);
  WorkerProcess a("*", {"-m", m.path, "--mem-budget", budget, "--cache-dir", m.dir + "/cache-plan-a"});
  WorkerProcess b("*", {"-m", m.path, "--mem-budget", budget, "--cache-dir", m.dir + "/cache-plan-b"});
  expect_bit_identical(plain.logits, replay_over({a.address(), b.address()}, "", 6).logits,
                       "the coordinator's streaming plan over two workers");
  // Together they hold half the model: one of them at least streams (the plan puts the overflow
  // where it costs least, here on one disk).
  int streaming = 0;
  std::string logs;
  for (WorkerProcess* w : {&a, &b}) {
    const std::string err = w->child().err();
    streaming += err.find("streaming the weights") != std::string::npos;
    logs += err;
    EXPECT_TRUE(w->child().running());
  }
  EXPECT_GE(streaming, 1) << logs;
}

// How a Hello becomes the planner's device: its budget as memory, its process as overhead, its
// measured disk; a streaming worker without a measurement at the assumed speed (and the plan's
// device says so); a worker that does not stream (--no-stream, an older one) never a disk.
TEST(Offload, AWorkersHelloTellsThePlannerItsBudgetProcessAndDisk) {
  cluster::WorkerProfile w;
  w.free_ram_bytes = 300u << 20;
  w.total_ram_bytes = 1u << 30;
  w.process_bytes = 20u << 20;
  w.streams = true;
  w.disk_Bps = 1.7e9;
  partition::DeviceProfile d = device_profile(w, "w1");
  EXPECT_EQ(d.free_bytes, 300u << 20);
  EXPECT_EQ(d.overhead_bytes, 20u << 20);
  EXPECT_EQ(d.disk_Bps, 1.7e9);
  w.disk_Bps = 0;
  d = device_profile(w, "w1");
  EXPECT_EQ(d.disk_Bps, kAssumedWorkerDiskBps);
  EXPECT_NE(d.probe.find("assumed"), std::string::npos) << d.probe;
  w.streams = false;
  w.disk_Bps = 1.7e9;
  EXPECT_EQ(device_profile(w, "w1").disk_Bps, 0);
  w.process_bytes = 0;
  EXPECT_EQ(device_profile(w, "w1").overhead_bytes, 128u << 20) << "unknown: a CPU device's default";
}

// A worker without its own copy (the coordinator's path, no disk measured) and a quarter of the
// shard as budget: the coordinator's own plan streams it at the assumed disk speed, bit-identical.
TEST(Offload, AWorkerWithoutADiskFigureIsStillPlannedToStream) {
  auto& m = the_model();
  const Replayed& plain = unconstrained();
  WorkerProcess w("*", {"--mem-budget", std::to_string(m.shard / 4), "--cache-dir", m.dir + "/cache-nodisk"});
  expect_bit_identical(plain.logits, replay_over({w.address()}, "", 4).logits, "planned at the assumed disk speed");
  EXPECT_NE(w.child().err().find("streaming the weights"), std::string::npos) << w.child().err();
}

}  // namespace
}  // namespace herd::test
