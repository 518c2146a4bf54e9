// engine/read_bound: the patterns read every byte (their sums are checked inside, so a kernel that
// skipped a block would throw), the bound is the best pattern's best run, names are validated.
#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>

#include "engine/read_bound.h"

namespace herd {
namespace {

TEST(ReadBound, EveryPatternRunsAndTheBoundIsTheBestRun) {
  ReadBoundOptions o;
  o.bytes = 3 << 20;  // small: correctness, not speed
  o.reps = 3;
  for (int threads : {1, 2, 3}) {
    o.threads = threads;
    const ReadBound b = measure_read_bound(o);
    ASSERT_EQ(b.patterns.size(), read_patterns().size());
    double best = 0;
    for (size_t i = 0; i < b.patterns.size(); ++i) {
      EXPECT_EQ(b.patterns[i].name, read_patterns()[i]);
      EXPECT_GT(b.patterns[i].median_Bps, 0);
      EXPECT_GE(b.patterns[i].best_Bps, b.patterns[i].median_Bps);
      best = std::max(best, b.patterns[i].best_Bps);
    }
    EXPECT_EQ(b.best_Bps, best);
    EXPECT_NE(std::find(read_patterns().begin(), read_patterns().end(), b.best), read_patterns().end());
  }
}

TEST(ReadBound, OddSizesAndMoreThreadsThanBlocksAreWholeBlocks) {
  ReadBoundOptions o;
  o.bytes = 1000;  // under one 512-byte block per thread: each thread still gets one
  o.threads = 4;
  o.reps = 1;
  EXPECT_NO_THROW(measure_read_bound(o));
  o.bytes = (1 << 20) + 77;
  o.threads = 3;
  EXPECT_NO_THROW(measure_read_bound(o));
}

TEST(ReadBound, OnlyTheNamedPatternsRunAndUnknownOnesAreErrors) {
  ReadBoundOptions o;
  o.bytes = 1 << 20;
  o.reps = 1;
  o.only = {"u64x8"};
  const ReadBound b = measure_read_bound(o);
  ASSERT_EQ(b.patterns.size(), 1u);
  EXPECT_EQ(b.best, "u64x8");
  o.only = {"sse9"};
  EXPECT_THROW(measure_read_bound(o), std::invalid_argument);
  o.only.clear();
  o.reps = 0;
  EXPECT_THROW(measure_read_bound(o), std::invalid_argument);
}

}  // namespace
}  // namespace herd
