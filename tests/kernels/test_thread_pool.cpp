// ThreadPool: every index exactly once, deterministic chunking, persistent threads, exceptions.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels/cpu/thread_pool.h"

namespace herd {
namespace {

TEST(ThreadPool, EveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 4}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 2, 3, 5, 100, 1001}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      pool.parallel_for(n, [&](int64_t b, int64_t e) {
        ASSERT_LE(0, b);
        ASSERT_LE(b, e);
        ASSERT_LE(e, n);
        for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << threads << " threads, n " << n << " i " << i;
    }
  }
}

TEST(ThreadPool, ChunksAreBalancedAndContiguous) {
  int64_t prev_end = 0;
  for (int c = 0; c < 3; ++c) {
    int64_t b, e;
    chunk_range(10, 3, c, &b, &e);
    EXPECT_EQ(b, prev_end);
    EXPECT_TRUE(e - b == 3 || e - b == 4);
    prev_end = e;
  }
  EXPECT_EQ(prev_end, 10);
}

// Threads are made once: across many jobs no more distinct thread ids than the pool size appear.
TEST(ThreadPool, ThreadsArePersistent) {
  ThreadPool pool(3);
  std::mutex mu;
  std::set<std::thread::id> ids;
  for (int job = 0; job < 500; ++job)
    pool.parallel_for(3, [&](int64_t, int64_t) {
      std::lock_guard<std::mutex> lock(mu);
      ids.insert(std::this_thread::get_id());
    });
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_TRUE(ids.count(std::this_thread::get_id())) << "chunk 0 runs on the calling thread";
}

TEST(ThreadPool, ResizeAndReuse) {
  ThreadPool pool(4);
  std::atomic<int64_t> sum{0};
  for (int size : {4, 1, 3, 2, 3}) {
    pool.set_size(size);
    EXPECT_EQ(pool.size(), size);
    sum = 0;
    pool.parallel_for(1000, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum += i;
    });
    EXPECT_EQ(sum.load(), 999 * 1000 / 2);
  }
  EXPECT_THROW(pool.set_size(0), std::invalid_argument);
}

TEST(ThreadPool, ExceptionsReachTheCaller) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(9,
                                 [](int64_t b, int64_t) {
                                   if (b > 0) throw std::runtime_error("worker chunk failed");
                                 }),
               std::runtime_error);
  // The pool still works afterwards.
  std::atomic<int> n{0};
  pool.parallel_for(9, [&](int64_t b, int64_t e) { n += static_cast<int>(e - b); });
  EXPECT_EQ(n.load(), 9);
}

TEST(ThreadPool, NestedCallsRunSerially) {
  ThreadPool pool(2);
  std::atomic<int> n{0};
  pool.parallel_for(4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      pool.parallel_for(5, [&](int64_t bb, int64_t ee) { n += static_cast<int>(ee - bb); });
  });
  EXPECT_EQ(n.load(), 20);
}

}  // namespace
}  // namespace herd
