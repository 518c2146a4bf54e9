// GPUs in the planner's inputs: a worker's device=cuda:N, the GPU entries of a probe file (written
// by hand here: no GPU on the machines that run this), probe= on a CUDA worker, `herd plan`'s line
// for devices this herd cannot run, and `herd probe` on a host without a CUDA device (the real binary).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "engine/probe_profile.h"
#include "kernels/cuda/bandwidth.h"  // copy_bandwidth_from_times: host math, inline
#include "partition/profile.h"
#include "tests/process.h"
#include "tests/test_paths.h"

namespace herd::partition {
namespace {

std::string error_of(const std::string& text, const std::string& source = "c.txt") {
  try {
    parse_cluster(text, source);
  } catch (const ClusterError& e) {
    return e.what();
  }
  return "";
}

TEST(DeviceSpec, CpuMetalAndCudaN) {
  DeviceKind k = DeviceKind::Cpu;
  int idx = 7;
  EXPECT_EQ(parse_device_spec("cpu", &k, &idx), "cpu");
  EXPECT_EQ(k, DeviceKind::Cpu);
  EXPECT_EQ(idx, -1);
  EXPECT_EQ(parse_device_spec("Metal", &k, &idx), "metal");
  EXPECT_EQ(k, DeviceKind::Metal);
  EXPECT_EQ(parse_device_spec("cuda:3", &k, &idx), "cuda:3");
  EXPECT_EQ(k, DeviceKind::Cuda);
  EXPECT_EQ(idx, 3);
  EXPECT_EQ(parse_device_spec("CUDA:0", &k, &idx), "cuda:0");
  EXPECT_EQ(parse_device_spec("cuda", &k, &idx), "cuda:0");  // the files before cuda:N
  EXPECT_EQ(idx, 0);
  EXPECT_EQ(parse_device_spec("cuda:1023", &k, &idx), "cuda:1023");
  for (const char* bad : {"cuda:", "cuda:-1", "cuda:x", "cuda:1.5", "cuda:1024", "cuda:99999", "cuda:0x1", "cuda: 1"})
    EXPECT_THROW(parse_device_spec(bad, &k, &idx), std::invalid_argument) << bad;
  for (const char* bad : {"gpu:0", "tpu", "", "cudaa", "rocm:0"})
    EXPECT_THROW(parse_device_spec(bad, &k, &idx), std::invalid_argument) << bad;
}

TEST(ClusterFileGpu, WorkerDeviceCudaN) {
  const Cluster c = parse_cluster(
      "worker host=127.0.0.1 port=7101\n"
      "worker host=gpubox port=7000 device=cuda:1 mem=24GB bw=900GB/s\n"
      "worker host=gpubox port=7001 device=cuda mem=24GB bw=900GB/s\n"
      "worker host=mac port=7000 device=metal mem=64GB bw=400GB/s\n"
      "worker host=gpubox port=7002 kind=cuda mem=24GB bw=900GB/s\n",
      "c.txt");
  ASSERT_EQ(c.workers.size(), 5u);
  EXPECT_EQ(c.workers[0].device_arg, "cpu");
  EXPECT_EQ(c.workers[0].cuda_index, -1);
  EXPECT_EQ(c.workers[1].device_arg, "cuda:1");
  EXPECT_EQ(c.workers[1].cuda_index, 1);
  EXPECT_EQ(c.devices[c.workers[1].device].kind, DeviceKind::Cuda);
  EXPECT_EQ(c.devices[c.workers[1].device].free_bytes, 24000000000ull - (512ull << 20));  // a GPU's default keep
  EXPECT_EQ(c.workers[2].device_arg, "cuda:0");
  EXPECT_EQ(c.workers[3].device_arg, "metal");
  EXPECT_EQ(c.devices[c.workers[3].device].kind, DeviceKind::Metal);
  EXPECT_EQ(c.workers[4].device_arg, "cuda:0");
}

TEST(ClusterFileGpu, BadDeviceValuesNameTheLine) {
  const std::string ok = "worker host=127.0.0.1 port=7101\n";
  EXPECT_NE(error_of(ok + "worker host=b port=1 device=cuda:x\n").find("c.txt:2: device 'cuda:x': cuda:N needs N a whole number"),
            std::string::npos);
  EXPECT_NE(error_of(ok + "worker host=b port=1 device=cuda:-2\n").find("c.txt:2: device 'cuda:-2'"), std::string::npos);
  EXPECT_NE(error_of(ok + "worker host=b port=1 device=opencl\n").find("c.txt:2: unknown device 'opencl' (cpu, cuda:N, metal)"),
            std::string::npos);
  EXPECT_NE(error_of(ok + "worker host=b port=1 device=cuda:0 kind=cuda\n").find("c.txt:2: give device= or kind=, not both"),
            std::string::npos);
}

ProbeResult host_probe_with_gpus() {
  ProbeResult p;
  p.host = "gpubox";
  p.cpu = "test cpu";
  p.mem_total_bytes = 64000000000ull;
  p.mem_available_bytes = 60000000000ull;
  p.read_bw_Bps = 40e9;
  p.matmul_flops = 1e12;
  p.matvec_Bps[2] = 30e9;  // q4_0
  p.disk_read_Bps = 3e9;
  p.gpus.push_back({0, "NVIDIA GeForce RTX 3070", 8589934592ull, 8000000000ull, 380e9});
  p.gpus.push_back({1, "NVIDIA \"quoted\" GPU", 25769803776ull, 25000000000ull, 0});  // bandwidth not measured
  return p;
}

TEST(ProbeGpuBandwidth, MedianOfCopyTimesAsReadPlusWriteTraffic) {
  const size_t mib256 = size_t(256) << 20;
  // 256 MiB copied in 1 ms: 2 x 256 MiB of traffic per ms.
  EXPECT_DOUBLE_EQ(cuda::copy_bandwidth_from_times(mib256, {1.0f}), 2.0 * mib256 / 1e-3);
  // The median, not the mean: one slow outlier (a clock ramp, a context switch) changes nothing.
  EXPECT_DOUBLE_EQ(cuda::copy_bandwidth_from_times(mib256, {2.0f, 100.0f, 2.0f, 1.0f, 2.0f}), 2.0 * mib256 / 2e-3);
  EXPECT_DOUBLE_EQ(cuda::copy_bandwidth_from_times(1000, {4.0f, 1.0f, 2.0f, 3.0f}), 2000.0 / 2.5e-3);  // even count
  EXPECT_EQ(cuda::copy_bandwidth_from_times(mib256, {}), 0.0);
  EXPECT_EQ(cuda::copy_bandwidth_from_times(mib256, {0.0f, 0.0f, 1.0f}), 0.0);  // a zero median is no measurement
}

TEST(ProbeGpuJson, RoundTripOfAHandWrittenGpuEntry) {
  const ProbeResult p = host_probe_with_gpus();
  const ProbeResult q = probe_from_json(probe_to_json(p), "p.json");
  ASSERT_EQ(q.gpus.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(q.gpus[i].index, p.gpus[i].index);
    EXPECT_EQ(q.gpus[i].name, p.gpus[i].name);
    EXPECT_EQ(q.gpus[i].total_bytes, p.gpus[i].total_bytes);
    EXPECT_EQ(q.gpus[i].free_bytes, p.gpus[i].free_bytes);
    // %.6g: six significant digits, so a relative error under 1e-5 (0 stays exactly 0).
    EXPECT_NEAR(q.gpus[i].copy_bw_Bps, p.gpus[i].copy_bw_Bps, p.gpus[i].copy_bw_Bps * 1e-5);
  }
  // A file as herd probe wrote it before copy_bw_Bps (and one with no gpus key at all) still reads.
  const std::string old =
      "{\"herd_probe\": 1, \"mem_total_bytes\": 1000, \"read_bw_Bps\": 5,"
      " \"gpus\": [{\"index\": 0, \"name\": \"old\", \"total_bytes\": 100, \"free_bytes\": 90}]}";
  const ProbeResult o = probe_from_json(old, "old.json");
  ASSERT_EQ(o.gpus.size(), 1u);
  EXPECT_EQ(o.gpus[0].free_bytes, 90u);
  EXPECT_EQ(o.gpus[0].copy_bw_Bps, 0.0);
  EXPECT_TRUE(probe_from_json("{\"herd_probe\": 1, \"mem_total_bytes\": 1000, \"read_bw_Bps\": 5}", "x").gpus.empty());
  // Bad GPU figures are errors naming the field.
  auto err = [](const std::string& gpu) {
    try {
      probe_from_json("{\"herd_probe\": 1, \"mem_total_bytes\": 1000, \"read_bw_Bps\": 5, \"gpus\": [" + gpu + "]}", "g.json");
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err("{\"index\": 0, \"total_bytes\": 10, \"free_bytes\": 5, \"copy_bw_Bps\": -1}").find("g.json: \"gpus\": \"copy_bw_Bps\""),
            std::string::npos);
  EXPECT_NE(err("{\"index\": 0, \"total_bytes\": 10, \"free_bytes\": 5, \"copy_bw_Bps\": \"fast\"}").find("copy_bw_Bps"),
            std::string::npos);
  EXPECT_NE(err("{\"index\": 2, \"total_bytes\": 10, \"free_bytes\": 50}").find("gpu 2 has free_bytes larger than total_bytes"),
            std::string::npos);
}

TEST(ClusterFileGpu, ProbeOnACudaWorkerTakesThatGpu) {
  const std::string dir = ::testing::TempDir();
  std::ofstream(dir + "gpubox.json") << probe_to_json(host_probe_with_gpus());
  const std::string src = dir + "c.txt";
  const Cluster c = parse_cluster(
      "worker host=127.0.0.1 port=7101 probe=gpubox.json\n"                    // the host's CPU
      "worker host=gpubox port=7000 device=cuda:0 probe=gpubox.json\n"         // its RTX 3070
      "worker host=gpubox port=7001 device=cuda:1 probe=gpubox.json bw=900GB/s\n"  // measured nothing: bw= given
      "device name=g kind=cuda probe=gpubox.json\n",                         // a device line: cuda:0
      src);
  const DeviceProfile& cpu = c.devices[0];
  EXPECT_EQ(cpu.total_bytes, 64000000000ull);
  EXPECT_DOUBLE_EQ(cpu.bandwidth_Bps, 40e9);
  const DeviceProfile& g0 = c.devices[1];
  EXPECT_EQ(g0.kind, DeviceKind::Cuda);
  EXPECT_EQ(g0.total_bytes, 8589934592ull);
  EXPECT_EQ(g0.free_bytes, 8000000000ull);
  EXPECT_DOUBLE_EQ(g0.bandwidth_Bps, 380e9);
  EXPECT_TRUE(g0.matvec_Bps.empty());           // the CPU's kernel rates do not describe the GPU
  EXPECT_DOUBLE_EQ(g0.flops, 380e9 * 50);      // not measured: the default ratio
  EXPECT_DOUBLE_EQ(g0.disk_Bps, 3e9);
  EXPECT_EQ(c.devices[2].total_bytes, 25769803776ull);
  EXPECT_DOUBLE_EQ(c.devices[2].bandwidth_Bps, 900e9);
  EXPECT_EQ(c.devices[3].total_bytes, 8589934592ull);
  // A GPU the probe does not list, a GPU without a measured bandwidth and no bw=, a probe with no GPUs.
  EXPECT_NE(error_of("worker host=gpubox port=7000 device=cuda:5 probe=gpubox.json\n", src)
                .find(":1: probe " + dir + "gpubox.json lists no GPU cuda:5 (it lists cuda:0, cuda:1)"),
            std::string::npos);
  EXPECT_NE(error_of("worker host=gpubox port=7000 device=cuda:1 probe=gpubox.json\n", src)
                .find(":1: probe " + dir + "gpubox.json has no measured bandwidth for cuda:1"),
            std::string::npos);
  ProbeResult none = host_probe_with_gpus();
  none.gpus.clear();
  std::ofstream(dir + "cpuonly.json") << probe_to_json(none);
  EXPECT_NE(error_of("worker host=box port=7000 device=cuda:0 probe=cpuonly.json\n", src)
                .find("lists no GPU cuda:0 (it lists none: herd probe found no CUDA device there)"),
            std::string::npos);
}

TEST(PlanNotes, DevicesHerdCannotRunGetOneLineEach) {
  const Cluster c = parse_cluster(
      "device name=gpu kind=cuda mem=8GB bw=400GB/s host=box\n"
      "device name=cpu kind=cpu mem=16GB bw=40GB/s host=box\n"
      "device name=laptop kind=metal mem=16GB bw=100GB/s host=laptop\n",
      "c.txt");
  const auto with_cuda = devices_herd_cannot_run(c, true);
  ASSERT_EQ(with_cuda.size(), 1u);
  EXPECT_EQ(with_cuda[0], "device laptop (metal): modelled only: herd has no Metal backend yet");
  const auto without = devices_herd_cannot_run(c, false);
  ASSERT_EQ(without.size(), 2u);
  EXPECT_EQ(without[0], "device gpu (cuda): modelled only: this herd was built without CUDA (HERD_CUDA)");
  EXPECT_EQ(without[1], with_cuda[0]);
  EXPECT_TRUE(devices_herd_cannot_run(parse_cluster("device name=c kind=cpu mem=1GB bw=1GB/s\n"), false).empty());
}

TEST(PlanNotes, HerdPlanSaysWhichDevicesItCannotRun) {
  const std::string cl = ::testing::TempDir() + "gpu-notes.txt";
  std::ofstream(cl) << "device name=gpu kind=cuda mem=8GB bw=400GB/s flops=20T host=box\n"
                       "device name=laptop kind=metal mem=16GB bw=100GB/s host=laptop\n";
  auto r = test::run_process({test::herd_bin(), "plan", "--shape", "llama3-8b", "--type", "Q4_0", "--cluster", cl}, 60);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("note: device laptop (metal): modelled only: herd has no Metal backend yet"), std::string::npos) << r.out;
#if defined(HERD_TEST_CUDA_BUILT)
  EXPECT_EQ(r.out.find("note: device gpu"), std::string::npos) << r.out;
#else
  EXPECT_NE(r.out.find("note: device gpu (cuda): modelled only: this herd was built without CUDA"), std::string::npos) << r.out;
#endif
  // --json keeps stdout one JSON document: the notes go to stderr.
  r = test::run_process({test::herd_bin(), "plan", "--shape", "llama3-8b", "--type", "Q4_0", "--cluster", cl, "--json"}, 60);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("note:"), std::string::npos);
  EXPECT_NE(r.err.find("note: device laptop (metal)"), std::string::npos) << r.err;
}

// The real `herd probe` on this machine, which has no CUDA device (CI's and the dev machines have
// none; on a GPU host this test is skipped, as it checks the no-device path only).
TEST(ProbeCli, NoCudaDeviceIsOneClearLineAndAnEmptyGpuList) {
  const std::string out = ::testing::TempDir() + "probe-nogpu.json";
  std::remove(out.c_str());
  auto r = test::run_process({test::herd_bin(), "probe", "--quick", "-t", "1", "--out", out}, 240);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  if (r.out.find("  gpu 0 ") != std::string::npos) GTEST_SKIP() << "this host has a CUDA device: " << r.out;
  size_t lines = 0;
  for (size_t at = r.out.find("no CUDA device ("); at != std::string::npos; at = r.out.find("no CUDA device (", at + 1)) ++lines;
  EXPECT_EQ(lines, 1u) << r.out;
#if defined(HERD_TEST_CUDA_BUILT)
  // The CUDA runtime's reason (no driver here, or no device).
  EXPECT_NE(r.out.find("no CUDA device (cudaGetDeviceCount: "), std::string::npos) << r.out;
#else
  EXPECT_NE(r.out.find("no CUDA device (herd built without CUDA)"), std::string::npos) << r.out;
#endif
  std::ifstream f(out);
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_NE(ss.str().find("\"gpus\": []"), std::string::npos) << ss.str();
  EXPECT_TRUE(load_probe(out).gpus.empty());
  std::remove(out.c_str());
}

}  // namespace
}  // namespace herd::partition
