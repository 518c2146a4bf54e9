// Bus bandwidth of Comm::all_reduce_sum, as nccl-tests defines it: algbw = bytes / time, busbw =
// algbw * 2(n-1)/n (the bytes each rank must move in a bandwidth-optimal all-reduce), so numbers for
// different n compare against the link speed. Median of the iterations on rank 0, after warm-up.
//   bench_comm [max_ranks [SIZES]]                      inproc threads and ring over tcp://127.0.0.1
//                                                       (SIZES: bytes per all-reduce, comma-separated,
//                                                       multiples of 4; default 4K,64K,1M,16M)
//   mpirun --allow-run-as-root -np N bench_comm         MpiComm (when built with MPI)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <thread>
#include <vector>

#include "engine/inproc_comm.h"
#include "engine/ring_comm.h"
#include "transport/link.h"
#ifdef HERD_HAVE_MPI
#include "engine/mpi_comm.h"
#endif

namespace {

using Clock = std::chrono::steady_clock;
std::vector<size_t> kSizes = {4 << 10, 64 << 10, 1 << 20, 16 << 20};  // bytes (argv[2] replaces them)

int iters_for(size_t bytes) { return static_cast<int>(std::clamp<size_t>((64u << 20) / bytes, 5, 50)); }

// One rank's loop; returns the median seconds per all-reduce (meaningful on every rank).
double time_rank(herd::Comm& c, size_t bytes) {
  std::vector<float> d(bytes / sizeof(float), 1.0f);
  for (int w = 0; w < 2; ++w)
    if (auto e = c.all_reduce_sum(d.data(), d.size()); !e.empty()) {
      std::fprintf(stderr, "%s\n", e.c_str());
      std::exit(1);
    }
  std::vector<double> t;
  for (int i = 0; i < iters_for(bytes); ++i) {
    const auto t0 = Clock::now();
    if (auto e = c.all_reduce_sum(d.data(), d.size()); !e.empty()) {
      std::fprintf(stderr, "%s\n", e.c_str());
      std::exit(1);
    }
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

void row(const char* impl, int n, size_t bytes, double s) {
  const double algbw = bytes / s / 1e9, busbw = algbw * 2.0 * (n - 1) / n;
  std::printf("%-8s %2d %10zu %10.1f %8.3f %8.3f\n", impl, n, bytes, s * 1e6, algbw, busbw);
}

void header() { std::printf("%-8s %2s %10s %10s %8s %8s\n", "impl", "n", "bytes", "time_us", "algbw", "busbw"); }

void bench_threads(const char* impl, int n, const std::function<std::vector<std::unique_ptr<herd::Comm>>(int)>& make) {
  auto comms = make(n);
  for (size_t bytes : kSizes) {
    std::vector<double> s(n);
    std::vector<std::thread> ts;
    for (int r = 0; r < n; ++r) ts.emplace_back([&, r] { s[r] = time_rank(*comms[r], bytes); });
    for (auto& t : ts) t.join();
    row(impl, n, bytes, s[0]);
  }
}

std::vector<std::unique_ptr<herd::Comm>> ring_tcp(int n) {
  std::vector<std::unique_ptr<herd::transport::Listener>> ls(n);
  std::vector<std::string> addrs(n);
  for (int r = 0; r < n; ++r) {
    ls[r] = herd::transport::listen("tcp://127.0.0.1:*");
    addrs[r] = ls[r]->address();
  }
  std::vector<std::unique_ptr<herd::Comm>> comms(n);
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r)
    ts.emplace_back([&, r] {
      std::string err;
      comms[r] = herd::make_ring_comm(addrs, r, &err, 20000, std::move(ls[r]));
      if (!comms[r]) {
        std::fprintf(stderr, "%s\n", err.c_str());
        std::exit(1);
      }
    });
  for (auto& t : ts) t.join();
  return comms;
}

}  // namespace

int main(int argc, char** argv) {
#ifdef HERD_HAVE_MPI
  if (std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE")) {
    MPI_Init(&argc, &argv);
    {
      herd::MpiComm c;
      if (c.rank() == 0) header();
      for (size_t bytes : kSizes) {
        const double s = time_rank(c, bytes);
        if (c.rank() == 0) row("mpi", c.size(), bytes, s);
      }
    }
    MPI_Finalize();
    return 0;
  }
#endif
  const int max_ranks = argc > 1 ? std::atoi(argv[1]) : 4;
  if (argc > 2) {
    kSizes.clear();
    for (const char* p = argv[2]; *p;) {
      char* end = nullptr;
      const unsigned long long b = std::strtoull(p, &end, 10);
      if (end == p || b == 0 || b % 4 != 0 || b > (1ull << 30) || (*end && *end != ',')) {
        std::fprintf(stderr, "bench_comm: SIZES must be byte counts, multiples of 4 up to 1 GiB, comma-separated: %s\n", argv[2]);
        return 2;
      }
      kSizes.push_back(static_cast<size_t>(b));
      p = *end ? end + 1 : end;
    }
  }
  if (max_ranks < 2) {
    std::fprintf(stderr, "bench_comm: max_ranks must be 2 or more\n");
    return 2;
  }
  std::printf("all-reduce, f32, %u hardware threads; algbw/busbw in GB/s\n", std::thread::hardware_concurrency());
  header();
  for (int n = 2; n <= max_ranks; ++n) bench_threads("inproc", n, herd::make_inproc_comms);
  for (int n = 2; n <= max_ranks; ++n) bench_threads("ring-tcp", n, ring_tcp);
  return 0;
}
