// herd probe: measures this host the way the planner models it (partition/cost_model.h) and
// writes a profile a cluster file can reference (`device name=X probe=FILE.json`).
//
// Every rate is the median of several timed runs after an untimed warm-up. Matrices are larger
// than the last-level cache (3x a 32 MiB L3 by default) so the rates are what decode sees when
// it streams a model's weights from DRAM, not a cache-resident best case.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <thread>
#include <vector>

#include "common/timer.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "kernels/dtype.h"
#include "engine/host_probe.h"
#include "engine/probe_profile.h"

#if defined(HERD_HAVE_CUDA)
#include "kernels/cuda/bandwidth.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device.h"
#endif

namespace herd::cli {
namespace {

std::string fmt_bytes(double b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  return buf;
}

}  // namespace

int cmd_probe(const Args& args) {
  std::string out_path, isa = "auto", disk;
  int64_t threads = 0;
  bool quick = false;
  ArgParser p("herd probe [--out FILE.json] [-t N] [--quick] [--disk FILE]",
              "Measures this host as the planner models it: memory, read bandwidth, matvec bytes/s per tensor "
              "type, matmul FLOP/s, attention and per-kernel overhead, loopback latency. Prints a table; with "
              "--out writes a JSON profile a cluster file uses as `device name=X probe=FILE.json` (docs/planner.md). "
              "Measure with the thread count each worker will run with (-t).");
  p.add("--out", "FILE", "write the profile as JSON", &out_path);
  p.add("-t,--threads", "N", "threads per kernel (0 = all hardware threads)", &threads, 0, kMaxThreads);
  p.add("--quick", "",
        "fewer repetitions, one read pattern (the last herd_membw lists), buffers 1.25x the last-level cache instead of 2x (a few seconds "
        "on a desktop; its time grows with the cache: 13 s for this VM host's 480 MiB L3 under load)",
        &quick);
  p.add("--cpu", "ISA", "CPU kernels: auto, avx512, avx2, scalar", &isa);
  p.add("--disk", "FILE",
        "also time sequential reads of FILE from storage (O_DIRECT, 64 MiB requests from one and from four readers, "
        "up to 1 GiB, the median of three rounds; give the model, on the disk a "
        "streaming worker reads): a cluster file's probe= then sets disk= (docs/planner.md, streaming from disk)",
        &disk);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  const int hw = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  if (threads < 0 || threads > 4096) throw UsageError("-t must be in 0..4096");
  const int nt = threads == 0 ? hw : static_cast<int>(threads);
  Timer total;

  HostProbeOptions po;
  po.threads = nt;
  po.quick = quick;
  po.isa = isa;
  ProbeResult r = probe_host(po);
  if (!disk.empty()) r.disk_read_Bps = disk_read_bps(disk);

  // GPUs: every CUDA device with its memory and a device-to-device copy bandwidth (kernels/cuda/
  // bandwidth.h: 256 MiB copies, the median of 5). Without a device, or without the CUDA backend in
  // this build, `gpus` stays empty and the table says why in one line.
  std::string no_gpu = "herd built without CUDA";
#if defined(HERD_HAVE_CUDA)
  std::vector<std::string> gpu_notes;
  for (const auto& g : cuda::list_devices()) {
    ProbeGpu pg{g.index, g.name, static_cast<uint64_t>(g.total_bytes), static_cast<uint64_t>(g.free_bytes)};
    const cuda::CopyBandwidth bw = cuda::measure_copy_bandwidth(g.index);
    pg.copy_bw_Bps = bw.Bps;
    gpu_notes.push_back(bw.error.empty() ? "" : "copy bandwidth not measured: " + bw.error);
    r.gpus.push_back(pg);
  }
  if (r.gpus.empty()) {
    no_gpu = cuda::no_device_reason();
    if (no_gpu.empty()) no_gpu = "no device could be queried";
  }
#endif
  std::printf("herd probe: %s, %s, %d of %d hardware threads, kernels %s (%.1f s)\n\n", r.host.c_str(), r.cpu.c_str(),
              nt, hw, r.isa.c_str(), total.seconds());
  std::printf("  %-26s %s total, %s available\n", "memory", fmt_bytes(static_cast<double>(r.mem_total_bytes)).c_str(),
              fmt_bytes(static_cast<double>(r.mem_available_bytes)).c_str());
  std::printf("  %-26s %.2f GB/s\n", "read bandwidth", r.read_bw_Bps / 1e9);
  for (const auto& [t, bps] : r.matvec_Bps) {
    const auto tr = dtype_traits(t);
    const double bpw = 8.0 * static_cast<double>(tr->block_bytes) / static_cast<double>(tr->block_size);
    std::printf("  matvec %-19s %.2f GB/s of weights (%.2f Gweights/s)", std::string(tr->name).c_str(), bps / 1e9,
                bps * 8.0 / bpw / 1e9);
    // The cache curve: the same kernel over smaller matrices (what fits the caches).
    if (auto it = r.matvec_cached_Bps.find(t); it != r.matvec_cached_Bps.end() && !it->second.empty()) {
      std::printf("; over");
      for (const auto& [b, rate] : it->second) std::printf(" %llu MiB %.1f,", (unsigned long long)(b >> 20), rate / 1e9);
      std::printf(" %llu MiB %.1f GB/s", (unsigned long long)(r.matvec_bytes >> 20), bps / 1e9);
    }
    std::printf("\n");
  }
  std::printf("  %-26s %.1f GFLOP/s\n", "matmul q4_0 (128 tokens)", r.matmul_flops / 1e9);
  std::printf("  %-26s %.2f GB/s of f32 KV cache\n", "decode attention", r.attn_Bps / 1e9);
  std::printf("  %-26s %.2f us per kernel call\n", "op overhead", r.op_overhead_s * 1e6);
  std::printf("  %-26s %.1f us one way (TCP, 127.0.0.1)\n", "loopback latency", r.loopback_latency_s * 1e6);
  if (r.disk_read_Bps > 0) std::printf("  %-26s %.2f GB/s sequential (%s)\n", "disk read", r.disk_read_Bps / 1e9, disk.c_str());
  if (r.gpus.empty()) std::printf("  %-26s no CUDA device (%s)\n", "gpus", no_gpu.c_str());
#if defined(HERD_HAVE_CUDA)
  for (size_t i = 0; i < r.gpus.size(); ++i) {
    const ProbeGpu& g = r.gpus[i];
    std::printf("  gpu %d %-20s %s total, %s free", g.index, g.name.c_str(), fmt_bytes(static_cast<double>(g.total_bytes)).c_str(),
                fmt_bytes(static_cast<double>(g.free_bytes)).c_str());
    if (g.copy_bw_Bps > 0) std::printf(", %.1f GB/s device-to-device copy\n", g.copy_bw_Bps / 1e9);
    else std::printf(", %s\n", gpu_notes[i].c_str());
    // The CUDA backend's own rates on it, as a GPU worker measures them at startup (shown here,
    // not written to the JSON: a worker started with --device reports its own).
    try {
      auto be = make_cuda_backend({g.index});
      HostProbeOptions gpo;
      gpo.quick = true;
      const ProbeResult gr = probe_device(*be, gpo, size_t(256) << 20);
      for (const auto& [t, bps] : gr.matvec_Bps)
        std::printf("  gpu %d matvec %-13s %.1f GB/s of weights%s\n", g.index, std::string(dtype_traits(t)->name).c_str(),
                    bps / 1e9, g.copy_bw_Bps > 0 ? (" (" + std::to_string(static_cast<int>(100 * bps / g.copy_bw_Bps)) +
                                                    "% of the copy bandwidth)").c_str()
                                                 : "");
      std::printf("  gpu %d %-20s %.1f GFLOP/s, attention %.1f GB/s, %.1f us per kernel call\n", g.index,
                  "matmul q4_0 (128 t)", gr.matmul_flops / 1e9, gr.attn_Bps / 1e9, gr.op_overhead_s * 1e6);
    } catch (const std::exception& e) {
      std::printf("  gpu %d kernels not measured: %s\n", g.index, e.what());
    }
  }
#endif
  if (!out_path.empty()) {
    std::ofstream f(out_path);
    f << probe_to_json(r);
    if (!f) throw std::runtime_error("cannot write " + out_path);
    std::printf("\nwrote %s (cluster file: device name=%s probe=%s)\n", out_path.c_str(), r.host.c_str(), out_path.c_str());
  }
  return 0;
}

}  // namespace herd::cli
