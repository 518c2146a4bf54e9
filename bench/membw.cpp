// herd_membw: streaming read bandwidth, the ceiling of token generation (every decoded token reads
// all the weights once). Sums a buffer (default 256 MiB, far beyond any cache) as 64-bit integers
// (vectorisable, no float reduction order issues) split over T threads; prints the median of R runs.
//   herd_membw [--threads 1,2] [--mib 256] [--reps 5] [--csv]
// Output: one line per thread count, "threads=T GB/s=X" (or "T,X" with --csv).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

uint64_t sum_range(const uint64_t* p, size_t n) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) a += p[i], b += p[i + 1], c += p[i + 2], d += p[i + 3];
  for (; i < n; ++i) a += p[i];
  return a + b + c + d;
}

double run_once(const std::vector<uint64_t>& buf, int threads, uint64_t& sink) {
  const size_t n = buf.size();
  std::vector<uint64_t> part(static_cast<size_t>(threads), 0);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int k = 0; k < threads; ++k) {
    pool.emplace_back([&, k] {
      const size_t lo = n * static_cast<size_t>(k) / static_cast<size_t>(threads);
      const size_t hi = n * static_cast<size_t>(k + 1) / static_cast<size_t>(threads);
      part[static_cast<size_t>(k)] = sum_range(buf.data() + lo, hi - lo);
    });
  }
  for (auto& th : pool) th.join();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (uint64_t v : part) sink += v;
  return static_cast<double>(n * sizeof(uint64_t)) / s / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  std::string threads = "1";
  long mib = 256, reps = 5;
  bool csv = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "herd_membw: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--threads" || a == "-t") threads = next();
    else if (a == "--mib") mib = std::atol(next().c_str());
    else if (a == "--reps" || a == "-r") reps = std::atol(next().c_str());
    else if (a == "--csv") csv = true;
    else {
      std::fprintf(stderr, "usage: herd_membw [--threads 1,2] [--mib 256] [--reps 5] [--csv]\n");
      return a == "-h" || a == "--help" ? 0 : 2;
    }
  }
  if (mib <= 0 || reps <= 0) {
    std::fprintf(stderr, "herd_membw: --mib and --reps must be positive\n");
    return 2;
  }
  std::vector<uint64_t> buf(static_cast<size_t>(mib) << 17);  // mib MiB of u64
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = i * 0x9E3779B97F4A7C15ull;  // touch every page
  uint64_t sink = 0;
  std::stringstream ss(threads);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const int t = std::max(1, std::atoi(item.c_str()));
    run_once(buf, t, sink);  // warm-up
    std::vector<double> gbs;
    for (long r = 0; r < reps; ++r) gbs.push_back(run_once(buf, t, sink));
    std::sort(gbs.begin(), gbs.end());
    const double med = gbs[gbs.size() / 2];
    if (csv) std::printf("%d,%.3f\n", t, med);
    else std::printf("threads=%d GB/s=%.3f\n", t, med);
  }
  std::fprintf(stderr, "(checksum %llu)\n", static_cast<unsigned long long>(sink));
  return 0;
}
