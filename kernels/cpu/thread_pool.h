// A small persistent thread pool for the CPU backends. Threads are created once (set_size). Between
// jobs a worker first spins (up to kSpinNs, yielding after the first microseconds) on an atomic
// job counter, then parks on a condition variable: back-to-back ops (a decode step is ~100 of them, each tens of microseconds) then cost
// no futex wake-ups, and an idle pool still sleeps. The caller waits for the workers the same way.
// parallel_for splits [0, n) into contiguous chunks with a fixed rule that depends only on n and
// the pool size; an op that writes each output from exactly one index therefore gives
// bit-identical results for any thread count.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace herd {

class ThreadPool {
 public:
  // fn(begin, end) handles indices [begin, end).
  using RangeFn = std::function<void(int64_t begin, int64_t end)>;

  explicit ThreadPool(int n_threads = 1);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Total threads that take part in a job, the calling thread included (>= 1). Not thread-safe
  // against a concurrent parallel_for.
  void set_size(int n_threads);
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn over [0, n) split into at most size() chunks, chunk 0 on the calling thread; returns
  // when every chunk is done and rethrows the first exception a chunk threw. A call from inside a
  // chunk (nesting) runs serially on that thread. One job at a time per pool.
  void parallel_for(int64_t n, const RangeFn& fn);

 private:
  void worker_loop(int index, uint64_t seen_generation);
  void stop_workers();

  // How long a worker (or the caller) busy-waits before it sleeps on a condition variable.
  static constexpr int64_t kSpinNs = 50'000;

  std::vector<std::thread> workers_;  // worker i runs chunk i + 1
  std::mutex mu_;
  std::condition_variable wake_;  // workers sleep here for a new generation
  std::condition_variable done_;  // the caller sleeps here for pending_ == 0
  // Job fields are written (under mu_) before generation_ is bumped with release order and read by
  // workers after an acquire load of it; every worker, taking part or not, decrements pending_
  // once per generation, so the next job never overwrites fields a worker may still read.
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<int> pending_{0};
  int sleeping_workers_ = 0;  // guarded by mu_: workers blocked in wake_ (notify only if > 0)
  const RangeFn* job_ = nullptr;
  int64_t job_n_ = 0;
  int job_chunks_ = 0;
  std::exception_ptr error_;  // guarded by mu_
};

// The chunk [begin, end) of [0, n) that chunk `index` of `chunks` covers (balanced, contiguous).
inline void chunk_range(int64_t n, int chunks, int index, int64_t* begin, int64_t* end) {
  const int64_t base = n / chunks, extra = n % chunks;
  *begin = index * base + (index < extra ? index : extra);
  *end = *begin + base + (index < extra ? 1 : 0);
}

}  // namespace herd
