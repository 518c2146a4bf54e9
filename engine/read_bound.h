// The streaming read bound, measured the way STREAM-like tools do: a decode step reads every
// weight once, so the fastest a machine can read a buffer far beyond its caches bounds tokens/s.
// A single plain loop under-reads (on this project's VM one thread of 64-bit adds read 18-26 GB/s
// where AVX-512 loads sustained 23-26), and a "% of the bound" over it flatters the kernels. So:
// several access patterns (64-bit scalar adds, AVX2 and AVX-512 loads at 4 and 8 accumulators,
// AVX-512 loads from 4 and 8 streams side by side as a matvec's rows are, whichever the CPU has), each thread pinned to its own CPU of the allowed set, best of N runs per
// pattern, and the bound is the best pattern's best run. Integer adds: no float rounding, and the
// sums are checked against a scalar sum so no pattern can skip a byte.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace herd {

struct ReadPatternResult {
  std::string name;       // "u64x4", "avx2x4", "avx512x8", "avx512s8" (8 streams), ...
  double best_Bps = 0;    // the fastest run
  double median_Bps = 0;  // the median run
};

struct ReadBound {
  std::vector<ReadPatternResult> patterns;  // the patterns this CPU runs, in a fixed order
  double best_Bps = 0;                      // the best pattern's best run: the bound
  std::string best;                         // its name
};

struct ReadBoundOptions {
  size_t bytes = size_t(512) << 20;  // the buffer (make it beyond the last-level cache)
  int threads = 1;                   // each sums a contiguous slice
  int reps = 7;                      // timed runs per pattern (after one untimed)
  bool pin = true;                   // pin thread k to the k-th CPU of the allowed set
  std::vector<std::string> only;     // pattern names to run (empty: all this CPU supports)
};

// Throws std::invalid_argument for a zero size, threads or reps, or an unknown pattern name, and
// std::runtime_error when a pattern's sum differs from the scalar sum (a broken kernel).
ReadBound measure_read_bound(const ReadBoundOptions& o);

// The pattern names this CPU can run, in the order measure_read_bound runs them.
std::vector<std::string> read_patterns();

}  // namespace herd
