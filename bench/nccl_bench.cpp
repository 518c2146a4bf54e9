// NCCL latency at tensor parallelism's message sizes ([cuda] target): NcclComm::all_reduce_sum
// (all-gather + rank-order sum, engine/nccl_comm.h) over every GPU of this host, one thread per
// GPU as `herd run --tp N --device cuda:0,...` runs it, and a send/recv ping-pong between GPUs 0 and
// 1 (a stage hop between GPU workers, worker/device_hop.h), one-way = half the round trip. Median
// of the iterations after warm-up; busbw as nccl-tests defines it (algbw * 2(n-1)/n).
//   bench_nccl [SIZES]     SIZES: bytes, comma-separated, multiples of 4. Default: one decode
//                          token's partial sum of a 4096- and an 8192-wide model (16K, 32K), and a
//                          512-token prompt's of the 4096-wide one (8M).
// Needs 2 GPUs (NCCL joins one rank per GPU); says so and exits 0 on a host with fewer.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/inproc_comm.h"
#include "engine/nccl_comm.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "bench_nccl: %s\n", why.c_str());
  std::exit(1);
}

int iters_for(size_t bytes) { return static_cast<int>(std::clamp<size_t>((256u << 20) / bytes, 10, 200)); }

double median(std::vector<double> t) {
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

// NcclComms on GPUs 0..n-1, each bootstrapped on a thread of its own over an in-process group
// (making one is a collective); dies naming the error.
std::vector<std::unique_ptr<herd::NcclComm>> bootstrap(int n, const char* name) {
  auto group = herd::make_inproc_comms(n);
  std::vector<std::unique_ptr<herd::NcclComm>> out(static_cast<size_t>(n));
  std::vector<std::string> errs(static_cast<size_t>(n));
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r)
    ts.emplace_back([&, r] {
      const auto i = static_cast<size_t>(r);
      out[i] = herd::NcclComm::bootstrap(*group[i], herd::nccl_group_tag(name), r, &errs[i], 60000);
    });
  for (auto& t : ts) t.join();
  for (const auto& e : errs)
    if (!e.empty()) die(e);
  return out;
}

// Runs op(rank, device buffer of `bytes`, floats) on ranks 0..n-1 at once, each on its own thread,
// 3 warm-up calls then iters_for(bytes) timed ones; rank 0's median seconds per call.
double median_on_rank0(const std::vector<std::unique_ptr<herd::Backend>>& be, int n, size_t bytes,
                       const std::function<std::string(int, float*, size_t)>& op) {
  std::vector<double> rank0;
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r)
    ts.emplace_back([&, r] {
      herd::Backend& b = *be[static_cast<size_t>(r)];
      herd::Buffer d = b.alloc(bytes);
      b.fill_zero(d.data(), bytes);
      b.synchronize();
      std::vector<double> t;
      for (int k = -3; k < iters_for(bytes); ++k) {
        const auto t0 = Clock::now();
        if (auto e = op(r, d.as<float>(), bytes / sizeof(float)); !e.empty()) die(e);
        if (k >= 0) t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      if (r == 0) rank0 = std::move(t);
    });
  for (auto& t : ts) t.join();
  return median(rank0);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<size_t> sizes = {16 << 10, 32 << 10, 8 << 20};
  if (argc > 1) {
    sizes.clear();
    for (std::string s = argv[1]; !s.empty();) {
      const size_t comma = s.find(',');
      const std::string tok = s.substr(0, comma);
      char* end = nullptr;
      double v = std::strtod(tok.c_str(), &end);
      if (end && (*end == 'K' || *end == 'k')) v *= 1024;
      if (end && (*end == 'M' || *end == 'm')) v *= 1024 * 1024;
      if (v < 4 || static_cast<size_t>(v) % 4 != 0) die("sizes are bytes, multiples of 4: '" + tok + "'");
      sizes.push_back(static_cast<size_t>(v));
      s = comma == std::string::npos ? "" : s.substr(comma + 1);
    }
  }
  const int gpus = static_cast<int>(herd::cuda::list_devices().size());
  if (gpus < 2) {
    std::printf("bench_nccl: needs 2 GPUs (NCCL joins one rank per GPU); this host has %d\n", gpus);
    return 0;
  }
  std::vector<std::unique_ptr<herd::Backend>> be;
  for (int r = 0; r < gpus; ++r) be.push_back(herd::make_cuda_backend({r}));
  auto all = bootstrap(gpus, "bench_nccl");
  std::printf("%-12s %2s %10s %10s %8s %8s\n", "op", "n", "bytes", "time_us", "algbw", "busbw");
  for (size_t bytes : sizes) {
    const double s = median_on_rank0(be, gpus, bytes, [&](int r, float* d, size_t n) {
      return all[static_cast<size_t>(r)]->all_reduce_sum(d, n);
    });
    const double algbw = static_cast<double>(bytes) / s / 1e9;
    std::printf("%-12s %2d %10zu %10.1f %8.3f %8.3f\n", "all_reduce", gpus, bytes, s * 1e6, algbw,
                algbw * 2.0 * (gpus - 1) / gpus);
  }
  // Send/recv between GPUs 0 and 1 over their own 2-rank communicator (as a stage hop makes one);
  // a round trip, halved.
  auto hop = bootstrap(2, "bench_nccl hop");
  for (size_t bytes : sizes) {
    const double s = median_on_rank0(be, 2, bytes, [&](int r, float* d, size_t n) {
      const int peer = 1 - r;
      herd::NcclComm& c = *hop[static_cast<size_t>(r)];
      std::string e = r == 0 ? c.send(d, n, peer) : c.recv(d, n, peer);
      if (e.empty()) e = r == 0 ? c.recv(d, n, peer) : c.send(d, n, peer);
      return e;
    }) / 2;
    std::printf("%-12s %2d %10zu %10.1f %8.3f %8s\n", "send/recv", 2, bytes, s * 1e6, static_cast<double>(bytes) / s / 1e9,
                "-");
  }
  return 0;
}
