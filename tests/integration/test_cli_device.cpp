// `--device` as a user gives it (herd worker, run, bench): a device this build or host cannot run
// is an error at startup naming the device, never a CPU run under a GPU's name, and a malformed
// device is a usage error. CI has no GPU: what a GPU run gives is scripts/gpu-check.sh's.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <filesystem>

#include "coordinator/model_session.h"
#include "kernels/backend.h"
#include "kernels/cpu/reference_backend.h"
#include "engine/tp_pipeline.h"
#include "tests/engine/guarded_comm.h"
#include "tests/engine/guarded_device.h"
#include "tests/process.h"
#include "tests/test_paths.h"

namespace herd::test {
namespace {

ProcessResult herd(std::vector<std::string> args) {
  args.insert(args.begin(), herd_bin());
  return run_process(args, 60);
}

bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// A host with the NVIDIA driver loaded has this node (no GPU in CI).
bool cuda_devices_visible_here() { return std::filesystem::exists("/dev/nvidiactl"); }

TEST(ParseDevice, CpuAndCudaIndicesAndNothingElse) {
  EXPECT_EQ(parse_device("cpu"), Device{});
  EXPECT_EQ(parse_device("host"), Device{});
  EXPECT_EQ(parse_device("cuda"), (Device{Device::Kind::Cuda, 0}));
  EXPECT_EQ(parse_device("cuda:3"), (Device{Device::Kind::Cuda, 3}));
  EXPECT_EQ(parse_device("cuda:3").name(), "cuda:3");
  for (const char* bad : {"", "gpu", "cuda:", "cuda:-1", "cuda:x", "cuda:1x", "cuda:99999999", "CUDA:0", "metal"})
    EXPECT_THROW(parse_device(bad), std::invalid_argument) << bad;
}

TEST(CliDevice, AMalformedDeviceIsAUsageError) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"worker", "-l", "tcp://127.0.0.1:0", "--device", "gpu0"},
        {"run", "-m", model_path("stories260K.gguf"), "-p", "x", "-n", "2", "--device", "cuda:zero"},
        {"bench", "-m", model_path("stories260K.gguf"), "-p", "0", "-n", "2", "--device", "tpu"}}) {
    const auto r = herd(args);
    EXPECT_EQ(r.exit_code, 2) << args[0] << ": " << r.err;
    EXPECT_TRUE(has(r.err, "--device: expected cpu or cuda:N")) << r.err;
  }
}

TEST(CliDevice, AGpuThisHostLacksIsAnErrorAtStartupNamingIt) {
  if (!cuda_devices_visible_here()) {
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"worker", "-l", "tcp://127.0.0.1:0", "--device", "cuda:0"},
          {"run", "-m", model_path("stories260K.gguf"), "-p", "x", "-n", "2", "--device", "cuda:0"}}) {
      const auto r = herd(args);
      EXPECT_NE(r.exit_code, 0) << args[0];
      // Built with CUDA: no device here; built without: the build says so.
      EXPECT_TRUE(has(r.err, "cuda:0: no CUDA device on this host") || has(r.err, "built without CUDA")) << r.err;
    }
  } else {
    // A GPU machine: an index past the last device is the error instead.
    const auto r = herd({"worker", "-l", "tcp://127.0.0.1:0", "--device", "cuda:4096"});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_TRUE(has(r.err, "cuda:4096: no such device")) << r.err;
  }
}

TEST(CliDevice, ADeviceWithWorkersOrTensorParallelismIsRefused) {
  // The session's own check, with a stand-in device factory (the CLI resolves --device first, so
  // on a host without a GPU the missing device is what a user sees; this is what a GPU host says).
  for (int which = 0; which < 2; ++which) {
    SessionOptions o;
    o.device_backend = [] { return make_reference_backend(); };
    if (which == 0) o.workers = "127.0.0.1:1";
    else o.tp = 2;
    try {
      (void)ModelSession::open(model_path("stories260K.gguf"), o);
      ADD_FAILURE() << "opened a session with --device and " << (which == 0 ? "--workers" : "--tp 2");
    } catch (const std::invalid_argument& e) {
      EXPECT_TRUE(has(e.what(), which == 0 ? "herd worker --device cuda:N" : "two ranks cannot share one GPU"))
          << e.what();
    }
  }
  // Without either, the factory's backend is the session's.
  SessionOptions o;
  bool made = false;
  o.device_backend = [&made] {
    made = true;
    return make_reference_backend();
  };
  ModelSession s = ModelSession::open(model_path("stories260K.gguf"), o);
  EXPECT_TRUE(made);
  EXPECT_EQ(s.backend->name(), make_reference_backend()->name());
}

TEST(CliDevice, AListOfDevicesIsCheckedWholeBeforeAnyIsOpened) {
  for (const auto& [list, says] : {std::pair<std::string, std::string>{"cuda:0,cuda:0", "cuda:0 twice"},
                                   {"cuda:1,cpu", "cpu is not one"},
                                   {"cuda:0,gpu", "expected cpu or cuda:N"}}) {
    const auto r = herd({"run", "-m", model_path("stories260K.gguf"), "-p", "x", "-n", "2", "--tp", "2", "--device",
                         list});
    EXPECT_EQ(r.exit_code, 2) << list << ": " << r.err;
    EXPECT_TRUE(has(r.err, says)) << list << ": " << r.err;
  }
}

TEST(CliDevice, TensorParallelRanksOnDevicesRunThroughTheSessionOneDeviceEach) {
  // --device cuda:0,cuda:1 --tp 2 as the session gets it (launch/options.h session_for), with
  // stand-in devices and their Comm (tests/engine/guarded_comm.h) where a GPU host has CUDA
  // backends and NCCL: the same greedy tokens as the host ranks.
  auto opts = [](bool devices) {
    SessionOptions o;
    o.tp = 2;
    o.exact = true;
    o.isa = "scalar";
    o.n_ctx = 64;
    if (devices) {
      for (int r = 0; r < 2; ++r) o.rank_device_backends.push_back([] { return std::make_unique<GuardedDevice>(); });
      o.device_comm = guarded_comm;
    }
    return o;
  };
  auto greedy = [](ModelSession& s) {
    std::vector<int32_t> ids = {1, 34, 211};
    std::vector<float> logits;
    s.pipeline->eval(ids.data(), static_cast<int64_t>(ids.size()), 0, false, logits);
    for (int i = 0; i < 12; ++i) {
      const auto id = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      const auto pos = static_cast<int64_t>(ids.size());
      ids.push_back(id);
      s.pipeline->eval(&id, 1, pos, false, logits);
    }
    return ids;
  };
  ModelSession host = ModelSession::open(model_path("stories260K.gguf"), opts(false));
  ModelSession dev = ModelSession::open(model_path("stories260K.gguf"), opts(true));
  ASSERT_NE(dynamic_cast<TpPipeline*>(dev.pipeline.get()), nullptr);
  EXPECT_EQ(greedy(dev), greedy(host));

  SessionOptions wrong = opts(true);
  wrong.tp = 3;
  try {
    (void)ModelSession::open(model_path("stories260K.gguf"), wrong);
    ADD_FAILURE() << "3 ranks on 2 devices";
  } catch (const std::invalid_argument& e) {
    EXPECT_TRUE(has(e.what(), "give --tp 2")) << e.what();
  }
  SessionOptions no_nccl = opts(true);
  no_nccl.device_comm = nullptr;
  try {
    (void)ModelSession::open(model_path("stories260K.gguf"), no_nccl);
    ADD_FAILURE() << "device ranks without a device Comm";
  } catch (const std::invalid_argument& e) {
    EXPECT_TRUE(has(e.what(), "built without it")) << e.what();
  }
}

}  // namespace
}  // namespace herd::test
