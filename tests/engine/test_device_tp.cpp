// Tensor parallelism on devices, checked on the CPU ([cuda] item 3: NCCL for [tensor]'s all-reduce
// across GPUs). Each rank computes on a GuardedDevice (tests/engine/guarded_device.h: memory the
// host cannot touch) and joins its shards through a GuardedComm (tests/engine/guarded_comm.h), a
// Comm on that device's memory, as NcclComm is on its GPU's. Its collectives are the in-process
// group's, so the logits must be the host ranks' bit for bit: the stage hands the Comm its device
// pointers and nothing else, waits for its queue before each collective, and brings only the
// gathered logits to the host. The Stage refuses a Comm whose memory is not its backend's.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "coordinator/logits_file.h"
#include "coordinator/replay.h"
#include "engine/inproc_comm.h"
#include "engine/stage.h"
#include "engine/tp_pipeline.h"
#include "kernels/cpu/reference_backend.h"
#include "model/gguf.h"
#include "tests/engine/guarded_comm.h"
#include "tests/engine/guarded_device.h"
#include "tests/test_paths.h"

namespace herd {
namespace {

using test::GuardedComm;
using test::GuardedDevice;

struct Model {
  std::unique_ptr<model::GgufFile> f;
  model::ModelConfig cfg;
};

Model load(const std::string& path) {
  Model m;
  m.f = model::GgufFile::open(path);
  m.cfg = model::load_config(*m.f);
  return m;
}

// A prompt, then decode steps: prefill and decode shapes through every collective.
const std::vector<int32_t> kTokens = {1, 403, 29, 118, 7, 250, 31, 90, 12, 300, 44, 5};
constexpr int64_t kPrompt = 6;

LogitsFile host_tp(const Model& m, int ranks) {
  TpOptions o;
  o.n_ranks = ranks;
  o.make_backend = [](int) { return make_reference_backend(); };
  TpPipeline pipe(*m.f, m.cfg, KvOptions{32, 1, DType::F32}, o);
  return replay_logits(pipe, kTokens, kPrompt);
}

struct DeviceRun {
  LogitsFile logits;
  std::vector<std::string> violations;
  std::vector<int> comm_calls;
  int passes = 0, syncs = 0;
};

DeviceRun device_tp(const Model& m, int ranks) {
  std::vector<GuardedDevice*> devs(static_cast<size_t>(ranks));
  std::vector<GuardedComm*> comms(static_cast<size_t>(ranks));
  TpOptions o;
  o.n_ranks = ranks;
  o.make_backend = [&devs](int r) {
    auto d = std::make_unique<GuardedDevice>();
    devs[static_cast<size_t>(r)] = d.get();
    return d;
  };
  o.device_comm = [&comms](Comm& over, Backend& be, std::string* error) {
    auto c = test::guarded_comm(over, be, error);
    if (c) comms[static_cast<size_t>(over.rank())] = static_cast<GuardedComm*>(c.get());
    return c;
  };
  TpPipeline pipe(*m.f, m.cfg, KvOptions{32, 1, DType::F32}, o);
  DeviceRun run;
  run.logits = replay_logits(pipe, kTokens, kPrompt);
  for (int r = 0; r < ranks; ++r) {
    const GuardedDevice& d = *devs[static_cast<size_t>(r)];
    for (const auto& v : d.violations()) run.violations.push_back("rank " + std::to_string(r) + ": " + v);
    for (const auto& e : d.events) {
      run.passes += e.rfind("begin", 0) == 0;
      run.syncs += e == "sync";
    }
    run.comm_calls.push_back(comms[static_cast<size_t>(r)]->calls());
  }
  return run;
}

TEST(DeviceTp, RanksOnDevicesJoinedThroughADeviceCommGiveTheHostRanksBits) {
  const std::string path = test::model_path("stories260K.gguf");
  HERD_REQUIRE_FILE(path);
  const Model m = load(path);
  ASSERT_GE(m.cfg.n_kv_heads, 3) << "the uneven case needs 3 KV-head groups";
  for (int ranks : {2, 3}) {  // 3: uneven shares of the KV heads and FFN rows
    const LogitsFile want = host_tp(m, ranks);
    const DeviceRun got = device_tp(m, ranks);
    const std::string what = "tp " + std::to_string(ranks);
    ASSERT_EQ(got.logits.rows.size(), want.rows.size()) << what;
    for (size_t i = 0; i < want.rows.size(); ++i) {
      ASSERT_EQ(got.logits.rows[i].logits.size(), want.rows[i].logits.size()) << what;
      EXPECT_EQ(0, std::memcmp(got.logits.rows[i].logits.data(), want.rows[i].logits.data(),
                               want.rows[i].logits.size() * sizeof(float)))
          << what << ", row " << i;
    }
    EXPECT_TRUE(got.violations.empty()) << what << ": " << got.violations.front();
    // Each forward: two all-reduces per layer and one logits gather, on every rank, through the
    // device Comm (a host Comm would have been refused); the queue waited for before each.
    const int forwards = static_cast<int>(kTokens.size() - kPrompt) + 1;
    for (int r = 0; r < ranks; ++r)
      EXPECT_EQ(got.comm_calls[static_cast<size_t>(r)], forwards * (2 * static_cast<int>(m.cfg.n_layers) + 1))
          << what << ", rank " << r;
    EXPECT_EQ(got.syncs, ranks * forwards * (2 * static_cast<int>(m.cfg.n_layers) + 1)) << what;
    EXPECT_EQ(got.passes, 0) << what << ": a rank on a device is not one recorded pass (its Comm runs between ops)";
  }
}

TEST(DeviceTp, AStageRefusesACommWhoseMemoryIsNotItsBackends) {
  const std::string path = test::model_path("stories260K.gguf");
  HERD_REQUIRE_FILE(path);
  const Model m = load(path);
  const model::LayerRange all{0, m.cfg.n_layers, true, true};
  auto group = make_inproc_comms(2);
  auto expect_refused = [](Stage& s, StageTensorParallel tp, const std::string& says) {
    try {
      s.set_tensor_parallel(std::move(tp));
      ADD_FAILURE() << "accepted; expected a refusal saying '" << says << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };
  GuardedDevice dev;
  Stage on_dev(m.cfg, model::load_stage_weights(*m.f, m.cfg, all), dev, KvOptions{16});
  expect_refused(on_dev, {group[0].get(), TpSync::F32, {}}, "data is on host");
  GuardedComm dev_comm(*group[0], dev);
  expect_refused(on_dev, {&dev_comm, TpSync::F16, {}}, "f32 only");
  expect_refused(on_dev, {&dev_comm, TpSync::Q8, {}}, "f32 only");
  on_dev.set_tensor_parallel({&dev_comm, TpSync::F32, {}});  // its own device, f32: accepted

  auto ref = make_reference_backend();
  Stage on_host(m.cfg, model::load_stage_weights(*m.f, m.cfg, all), *ref, KvOptions{16});
  expect_refused(on_host, {&dev_comm, TpSync::F32, {}}, "not through 'guarded(inproc)'");
  on_host.set_tensor_parallel({group[0].get(), TpSync::F32, {}});
}

TEST(DeviceTp, DeviceRanksWithoutADeviceCommOrWhoseCommFailsAreRefusedNamingTheRank) {
  const std::string path = test::model_path("stories260K.gguf");
  HERD_REQUIRE_FILE(path);
  const Model m = load(path);
  TpOptions o;
  o.n_ranks = 2;
  o.make_backend = [](int) { return std::make_unique<GuardedDevice>(); };
  EXPECT_THROW(TpPipeline(*m.f, m.cfg, KvOptions{16}, o), std::invalid_argument);  // no device_comm
  o.device_comm = [](Comm& over, Backend& be, std::string* error) -> std::unique_ptr<Comm> {
    if (over.rank() == 1) {
      *error = "no NCCL here";
      return nullptr;
    }
    return test::guarded_comm(over, be, error);
  };
  try {
    TpPipeline pipe(*m.f, m.cfg, KvOptions{16}, o);
    ADD_FAILURE() << "built with a rank whose Comm failed";
  } catch (const std::runtime_error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("rank 1"), std::string::npos) << w;
    EXPECT_NE(w.find("no NCCL here"), std::string::npos) << w;
  }
}

TEST(DeviceTp, AFailedBatchWhoseFreshGroupCannotBeMadeReportsTheBatchsErrorAndThenFailsCleanly) {
  // A device op fails on rank 1 mid-forward; the group is rebuilt after the batch, and making the
  // fresh device Comms fails too (a GPU gone). The batch's own error is the one reported; the
  // stages keep the old, broken group (never a freed one), so the next batch fails at once.
  const std::string path = test::model_path("stories260K.gguf");
  HERD_REQUIRE_FILE(path);
  const Model m = load(path);
  std::vector<GuardedDevice*> devs(2);
  int made = 0;
  TpOptions o;
  o.n_ranks = 2;
  o.make_backend = [&devs](int r) {
    auto d = std::make_unique<GuardedDevice>();
    devs[static_cast<size_t>(r)] = d.get();
    return d;
  };
  o.device_comm = [&made](Comm& over, Backend& be, std::string* error) -> std::unique_ptr<Comm> {
    over.set_timeout_ms(500);  // rank 0 waits this long for the rank whose op failed
    if (made++ >= 2) {
      *error = "the GPU is gone";
      return nullptr;
    }
    return test::guarded_comm(over, be, error);
  };
  TpPipeline pipe(*m.f, m.cfg, KvOptions{32, 1, DType::F32}, o);
  devs[1]->throw_at_matmul = 3;
  std::vector<float> logits;
  const int32_t ids[] = {1, 403, 29};
  try {
    pipe.eval(ids, 3, 0, false, logits);
    ADD_FAILURE() << "a batch with a failing device op succeeded";
  } catch (const std::exception& e) {
    // The cause (rank 1's op) and its echo (rank 0's all-reduce timing out), each named.
    EXPECT_NE(std::string(e.what()).find("rank 1: guarded-device: a failing op"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rank 0: tensor parallel all-reduce"), std::string::npos) << e.what();
  }
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(pipe.eval(ids, 3, 0, false, logits), std::exception);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5)) << "the broken group must fail fast";
}

}  // namespace
}  // namespace herd
