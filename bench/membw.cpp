// herd_membw: the streaming read bound, the ceiling of token generation (every decoded token reads
// all the weights once), measured as engine/read_bound.h does for `herd probe`: a buffer beyond the
// last-level cache (default: twice it, at least 512 MiB), every read pattern this CPU runs (64-bit
// adds, AVX2 / AVX-512 loads at 4 and 8 accumulators, AVX-512 from 4 and 8 streams at once), threads
// pinned, best of R runs.
//   herd_membw [--threads 1,2] [--mib N] [--reps 7] [--patterns a,b] [--no-pin] [--csv]
// Output per thread count: one line per pattern (best and median GB/s) and the bound, e.g.
//   threads=1 pattern=avx512x8 best_GB/s=25.1 median_GB/s=24.3
//   threads=1 GB/s=25.1 (avx512x8)
// or with --csv "threads,pattern,best_GBps,median_GBps" rows, the bound as pattern "bound".
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "engine/host_probe.h"
#include "engine/read_bound.h"

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

int usage(int rc) {
  std::fprintf(rc ? stderr : stdout,
               "usage: herd_membw [--threads 1,2] [--mib N] [--reps 7] [--patterns a,b] [--no-pin] [--csv]\n"
               "  --mib N        buffer size (default: twice the last-level cache, at least 512 MiB)\n"
               "  --patterns     some of:");
  for (const auto& p : herd::read_patterns()) std::fprintf(rc ? stderr : stdout, " %s", p.c_str());
  std::fprintf(rc ? stderr : stdout, " (default: all)\n");
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  std::string threads = "1";
  long mib = 0, reps = 7;
  bool csv = false, pin = true;
  std::vector<std::string> patterns;
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
    else if (a == "--patterns") patterns = split(next());
    else if (a == "--no-pin") pin = false;
    else if (a == "--csv") csv = true;
    else if (a == "-h" || a == "--help") return usage(0);
    else return usage(2);
  }
  if (mib < 0 || reps <= 0) {
    std::fprintf(stderr, "herd_membw: --mib and --reps must be positive\n");
    return 2;
  }
  herd::ReadBoundOptions o;
  herd::HostProbeOptions full;
  o.bytes = mib > 0 ? static_cast<size_t>(mib) << 20
                    : herd::probe_working_set_bytes(full, herd::last_level_cache_bytes(),
                                                    herd::meminfo_bytes("MemAvailable"), true);
  o.reps = static_cast<int>(reps);
  o.pin = pin;
  o.only = patterns;
  if (csv) std::printf("threads,pattern,best_GBps,median_GBps\n");
  for (const std::string& t : split(threads)) {
    o.threads = std::max(1, std::atoi(t.c_str()));
    herd::ReadBound b;
    try {
      b = herd::measure_read_bound(o);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "herd_membw: %s\n", e.what());
      return 2;
    }
    for (const auto& p : b.patterns) {
      if (csv) std::printf("%d,%s,%.3f,%.3f\n", o.threads, p.name.c_str(), p.best_Bps / 1e9, p.median_Bps / 1e9);
      else
        std::printf("threads=%d pattern=%s best_GB/s=%.3f median_GB/s=%.3f\n", o.threads, p.name.c_str(),
                    p.best_Bps / 1e9, p.median_Bps / 1e9);
    }
    if (csv) std::printf("%d,bound,%.3f,\n", o.threads, b.best_Bps / 1e9);
    else std::printf("threads=%d GB/s=%.3f (%s)\n", o.threads, b.best_Bps / 1e9, b.best.c_str());
  }
  std::fprintf(stderr, "(buffer %.0f MiB%s)\n", static_cast<double>(o.bytes) / 1048576.0, pin ? ", pinned" : "");
  return 0;
}
