// A worker whose stages run on a device backend (`herd worker --device cuda:N`), on the CPU: the
// device is tests/engine/guarded_device.h's stand-in, whose memory the host cannot touch. The
// worker's whole path (Hello with the device's memory, Assign, the stage on the device, Forward)
// runs in real WorkerServers over inproc links, beside a CPU worker: the logits are the
// reference's bit for bit, and the coordinator's planner sees the device's memory, not the host's.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/remote_pipeline.h"
#include "engine/host_probe.h"
#include "engine/pipeline.h"
#include "engine/tp_pipeline.h"
#include "kernels/cpu/reference_backend.h"
#include "tests/engine/guarded_comm.h"
#include "tests/engine/guarded_device.h"
#include "tests/integration/cluster_util.h"
#include "tests/integration/inproc_server.h"
#include "tests/test_paths.h"

namespace herd::test {
namespace {

constexpr uint64_t kDeviceFree = 777ull << 20;

// Device Comms the workers made (GuardedComm: the stand-in for NCCL), across the test.
std::atomic<int> device_comms_made{0};

WorkerServerOptions worker_options(const std::string& name, bool device, bool device_comm = true) {
  WorkerServerOptions o;
  o.threads = 1;
  o.name = name;
  o.models_dir = "/";
  if (device) {
    o.device_backend = [] { return std::make_unique<GuardedDevice>(); };
    o.device_free_bytes = [] { return kDeviceFree; };
    if (device_comm)
      o.device_comm = [](Comm& over, Backend& be, std::string* error) {
        auto c = guarded_comm(over, be, error);
        if (c) ++device_comms_made;
        return c;
      };
    GuardedDevice probe_dev;
    HostProbeOptions po;
    po.startup = true;
    o.profile = probe_device(probe_dev, po, size_t(1) << 20);
    o.profile->mem_total_bytes = 1ull << 30;  // the device's, as device_startup_profile fills them
    o.profile->mem_available_bytes = kDeviceFree;
    o.profile->read_bw_Bps = 1e9;
  }
  return o;
}

struct Worker : InprocServer {
  Worker(const std::string& name, bool device, bool device_comm = true)
      : InprocServer(worker_options(name, device, device_comm)) {}
};

RemotePipelineOptions tp_options(std::vector<std::string> workers) {
  RemotePipelineOptions o;
  o.workers = std::move(workers);
  o.tp = static_cast<int>(o.workers.size());
  o.isa = "scalar";
  o.exact = true;
  o.n_ctx = 256;
  o.model_path = model_path("stories260K.gguf");
  o.connect_timeout_ms = 2000;
  return o;
}

TEST(DeviceWorker, ACpuWorkerAndADeviceWorkerGiveTheReferenceBits) {
  auto file = model::GgufFile::open(model_path("stories260K.gguf"));
  const auto config = model::load_config(*file);
  auto ref = make_reference_backend();
  LocalPipeline local(*file, config, *ref, 256);
  const int made_before = GuardedDevice::made;
  int made_by_probes = 0;
  {
    Worker cpu("dev-worker-cpu", false), gpu("dev-worker-gpu", true), gpu2("dev-worker-gpu2", true);
    made_by_probes = GuardedDevice::made - made_before;
    for (const auto& workers : {std::vector<std::string>{cpu.address(), gpu.address()},
                                std::vector<std::string>{gpu.address(), gpu2.address()}}) {
      RemotePipelineOptions o;
      o.workers = workers;
      o.split = "0-1,2-4";
      o.isa = "scalar";  // the CPU worker on the reference kernels: the stand-in device computes with them too
      o.exact = true;
      o.n_ctx = 256;
      o.model_path = model_path("stories260K.gguf");
      o.connect_timeout_ms = 2000;
      RemotePipeline remote(*file, config, o);
      expect_same_logits(local, remote, workers[0] == cpu.address() ? "cpu + device" : "device + device");
    }
  }  // the workers end: their devices are destroyed, and report what they saw
  // The device workers' stages ran on their device backends (one each, made at the first Assign),
  // and nothing crossed the seam the wrong way.
  EXPECT_GE(GuardedDevice::made - made_before - made_by_probes, 2);
  EXPECT_EQ(GuardedDevice::violations_seen, 0);
}

TEST(DeviceWorker, ThePlannerSeesTheDevicesMemoryAndNoHostOverhead) {
  auto file = model::GgufFile::open(model_path("stories260K.gguf"));
  const auto config = model::load_config(*file);
  Worker gpu("dev-worker-plan", true);
  RemotePipelineOptions o;
  o.workers = {gpu.address()};
  o.n_ctx = 256;
  o.model_path = model_path("stories260K.gguf");
  o.connect_timeout_ms = 2000;
  RemotePipeline remote(*file, config, o);
  const partition::Cluster& c = remote.planned_cluster();
  ASSERT_EQ(c.devices.size(), 1u);
  EXPECT_EQ(c.devices[0].free_bytes, kDeviceFree);
  // Not the worker process's host memory: the planner's default overhead for a device that reports
  // none (coordinator/plan_adapter.cpp), which stands for the GPU's runtime context.
  EXPECT_EQ(c.devices[0].overhead_bytes, 128ull << 20);
  EXPECT_FALSE(c.devices[0].matvec_Bps.empty());
}

TEST(DeviceWorker, ATensorParallelGroupOfDeviceWorkersJoinsOnTheDeviceAndGivesTheHostRanksBits) {
  // [cuda] item 3: a group whose ranks are all GPU workers joins through a Comm on the GPUs
  // (NCCL, here its stand-in), made over the group's ring; the logits are the in-process host
  // ranks' bit for bit (every Comm's all-reduce is the rank-order sum).
  auto file = model::GgufFile::open(model_path("stories260K.gguf"));
  const auto config = model::load_config(*file);
  const int made_before = device_comms_made;
  const int violations_before = GuardedDevice::violations_seen;
  {
    Worker a("dev-tp-a", true), b("dev-tp-b", true), c("dev-tp-c", true);
    for (const auto& workers : {std::vector<std::string>{a.address(), b.address()},
                                std::vector<std::string>{a.address(), b.address(), c.address()}}) {
      RemotePipeline remote(*file, config, tp_options(workers));
      ASSERT_EQ(remote.tp_weights().size(), 1u);
      TpOptions t;
      t.n_ranks = static_cast<int>(workers.size());
      t.weights = remote.tp_weights()[0];
      t.make_backend = [](int) { return make_reference_backend(); };
      TpPipeline host(*file, config, KvOptions{256, 1, DType::F32}, t);
      expect_same_logits(host, remote, "tp " + std::to_string(workers.size()) + " on device workers");
    }
  }
  EXPECT_EQ(device_comms_made - made_before, 2 + 3) << "every rank joined through a device Comm";
  EXPECT_EQ(GuardedDevice::violations_seen - violations_before, 0);
}

TEST(DeviceWorker, AGpuGroupSpanningHostsNeedsEveryRankToAllowNcclAcrossHosts) {
  // NCCL between hosts runs over its network transport, neither authenticated nor encrypted: a
  // group of GPU workers on more than one host (host identities stand in for hosts) is refused,
  // naming the option and the ranks without it, unless every rank allows it.
  auto file = model::GgufFile::open(model_path("stories260K.gguf"));
  const auto config = model::load_config(*file);
  auto worker = [](const std::string& name, uint64_t host, bool allow) {
    WorkerServerOptions o = worker_options(name, true);
    o.host_identity = host;
    o.nccl_across_hosts = allow;
    return o;
  };
  {
    InprocServer a(worker("dev-hosts-a", 1, true)), b(worker("dev-hosts-b", 2, false));
    try {
      RemotePipeline remote(*file, config, tp_options({a.address(), b.address()}));
      ADD_FAILURE() << "a GPU group spanning hosts formed without --nccl-across-hosts on rank 1";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("--nccl-across-hosts"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("rank(s) 1"), std::string::npos) << e.what();
    }
  }
  const int made_before = device_comms_made;
  {
    InprocServer a(worker("dev-hosts-c", 1, true)), b(worker("dev-hosts-d", 2, true));
    RemotePipeline remote(*file, config, tp_options({a.address(), b.address()}));
    TpOptions t;
    t.n_ranks = 2;
    t.weights = remote.tp_weights()[0];
    t.make_backend = [](int) { return make_reference_backend(); };
    TpPipeline host(*file, config, KvOptions{256, 1, DType::F32}, t);
    expect_same_logits(host, remote, "a GPU group over two hosts, allowed");
  }
  EXPECT_EQ(device_comms_made - made_before, 2);
}

TEST(DeviceWorker, AGroupMixingGpuAndCpuRanksOrAGpuRankWithoutNcclIsRefusedNamingWhy) {
  auto file = model::GgufFile::open(model_path("stories260K.gguf"));
  const auto config = model::load_config(*file);
  auto refused = [&](const std::vector<std::string>& workers, const std::string& says) {
    try {
      RemotePipeline remote(*file, config, tp_options(workers));
      ADD_FAILURE() << "a group was formed; expected a refusal saying '" << says << "'";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };
  {
    Worker cpu("dev-mix-cpu", false), gpu("dev-mix-gpu", true);
    refused({cpu.address(), gpu.address()}, "must all compute on GPUs");
  }
  {
    Worker gpu("dev-nonccl-a", true), bare("dev-nonccl-b", true, /*device_comm=*/false);
    refused({gpu.address(), bare.address()}, "built without NCCL");
  }
}

}  // namespace
}  // namespace herd::test
