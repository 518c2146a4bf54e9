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
  auto group = herd::make_inproc_comms(gpus);
  std::vector<std::unique_ptr<herd::Comm>> nccl(static_cast<size_t>(gpus));
  std::vector<std::unique_ptr<herd::Backend>> be(static_cast<size_t>(gpus));
  {
    std::vector<std::thread> ts;
    std::vector<std::string> errs(static_cast<size_t>(gpus));
    for (int r = 0; r < gpus; ++r)
      ts.emplace_back([&, r] {
        const auto i = static_cast<size_t>(r);
        be[i] = herd::make_cuda_backend({r});
        nccl[i] = herd::NcclComm::bootstrap(*group[i], herd::nccl_group_tag("bench_nccl"), r, &errs[i], 60000);
      });
    for (auto& t : ts) t.join();
    for (const auto& e : errs)
      if (!e.empty()) die(e);
  }
  std::printf("%-12s %2s %10s %10s %8s %8s\n", "op", "n", "bytes", "time_us", "algbw", "busbw");
  for (size_t bytes : sizes) {
    const size_t n = bytes / sizeof(float);
    std::vector<double> rank0;
    std::vector<std::thread> ts;
    for (int r = 0; r < gpus; ++r)
      ts.emplace_back([&, r] {
        const auto i = static_cast<size_t>(r);
        herd::Buffer d = be[i]->alloc(bytes);
        be[i]->fill_zero(d.data(), bytes);
        be[i]->synchronize();
        std::vector<double> t;
        for (int k = -3; k < iters_for(bytes); ++k) {
          const auto t0 = Clock::now();
          if (auto e = nccl[i]->all_reduce_sum(d.as<float>(), n); !e.empty()) die(e);
          if (k >= 0) t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
        }
        if (r == 0) rank0 = t;
      });
    for (auto& t : ts) t.join();
    const double s = median(rank0), algbw = static_cast<double>(bytes) / s / 1e9;
    std::printf("%-12s %2d %10zu %10.1f %8.3f %8.3f\n", "all_reduce", gpus, bytes, s * 1e6, algbw,
                algbw * 2.0 * (gpus - 1) / gpus);
  }
  // Send/recv between GPUs 0 and 1 over their own 2-rank communicator (as a stage hop makes one).
  auto pair = herd::make_inproc_comms(2);
  std::vector<std::unique_ptr<herd::NcclComm>> hop(2);
  {
    std::vector<std::thread> ts;
    std::vector<std::string> errs(2);
    for (int r = 0; r < 2; ++r)
      ts.emplace_back([&, r] {
        hop[static_cast<size_t>(r)] =
            herd::NcclComm::bootstrap(*pair[static_cast<size_t>(r)], herd::nccl_group_tag("bench_nccl hop"), r,
                                      &errs[static_cast<size_t>(r)], 60000);
      });
    for (auto& t : ts) t.join();
    for (const auto& e : errs)
      if (!e.empty()) die(e);
  }
  for (size_t bytes : sizes) {
    const size_t n = bytes / sizeof(float);
    std::vector<double> rank0;
    std::vector<std::thread> ts;
    for (int r = 0; r < 2; ++r)
      ts.emplace_back([&, r] {
        const auto i = static_cast<size_t>(r);
        herd::Buffer d = be[i]->alloc(bytes);
        be[i]->fill_zero(d.data(), bytes);
        be[i]->synchronize();
        std::vector<double> t;
        for (int k = -3; k < iters_for(bytes); ++k) {
          const auto t0 = Clock::now();
          std::string e = r == 0 ? hop[0]->send(d.as<float>(), n, 1) : hop[1]->recv(d.as<float>(), n, 0);
          if (e.empty()) e = r == 0 ? hop[0]->recv(d.as<float>(), n, 1) : hop[1]->send(d.as<float>(), n, 0);
          if (!e.empty()) die(e);
          if (k >= 0) t.push_back(std::chrono::duration<double>(Clock::now() - t0).count() / 2);
        }
        if (r == 0) rank0 = t;
      });
    for (auto& t : ts) t.join();
    const double s = median(rank0);
    std::printf("%-12s %2d %10zu %10.1f %8.3f %8s\n", "send/recv", 2, bytes, s * 1e6, static_cast<double>(bytes) / s / 1e9,
                "-");
  }
  return 0;
}
