#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>

namespace herd {
namespace {
thread_local bool t_inside_job = false;  // set while a thread runs a chunk; nested calls go serial

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Busy-waits until done() or kSpinNs passed; true when done() became true.
template <class Pred>
bool spin_until(Pred done, int64_t spin_ns) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 1;; ++i) {
    if (done()) return true;
    cpu_relax();
    if ((i & 63) != 0) continue;
    const int64_t ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    if (ns > spin_ns) return done();
    // Past the first few microseconds the thread we wait for may share this core (more threads
    // than free cores): give it the core rather than burn the time slice.
    if (ns > 5'000) std::this_thread::yield();
  }
}
}  // namespace

ThreadPool::ThreadPool(int n_threads) { set_size(n_threads); }

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_.store(true, std::memory_order_release);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  stopping_.store(false, std::memory_order_relaxed);
}

void ThreadPool::set_size(int n_threads) {
  if (n_threads < 1) throw std::invalid_argument("ThreadPool: thread count must be >= 1, got " + std::to_string(n_threads));
  if (n_threads == size()) return;
  stop_workers();
  workers_.reserve(static_cast<size_t>(n_threads - 1));
  // The generation is passed in rather than read by the new thread: a job posted before the
  // thread first runs must still count as new to it.
  const uint64_t gen = generation_.load(std::memory_order_relaxed);
  for (int i = 0; i < n_threads - 1; ++i) workers_.emplace_back([this, i, gen] { worker_loop(i + 1, gen); });
}

void ThreadPool::worker_loop(int index, uint64_t seen) {
  for (;;) {
    auto ready = [&] {
      return stopping_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen;
    };
    if (!spin_until(ready, kSpinNs)) {
      std::unique_lock<std::mutex> lock(mu_);
      ++sleeping_workers_;
      wake_.wait(lock, ready);
      --sleeping_workers_;
    }
    if (stopping_.load(std::memory_order_acquire)) return;
    // Exactly one generation ahead: the caller waits for every worker before posting the next.
    seen = generation_.load(std::memory_order_acquire);
    const RangeFn* fn = job_;
    const int64_t n = job_n_;
    const int chunks = job_chunks_;
    std::exception_ptr err;
    if (index < chunks) {
      int64_t b, e;
      chunk_range(n, chunks, index, &b, &e);
      t_inside_job = true;
      try {
        (*fn)(b, e);
      } catch (...) {
        err = std::current_exception();
      }
      t_inside_job = false;
    }
    if (err) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = err;
    }
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // The caller may be asleep in done_: taking the mutex orders this notify after its
      // predicate check (no lost wake-up); without waiters notify_one makes no system call.
      { std::lock_guard<std::mutex> lock(mu_); }
      done_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const RangeFn& fn) {
  if (n <= 0) return;
  const int chunks = static_cast<int>(std::min<int64_t>(n, size()));
  if (chunks == 1 || t_inside_job) {
    fn(0, n);
    return;
  }
  bool notify;
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    job_n_ = n;
    job_chunks_ = chunks;
    error_ = nullptr;
    pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    notify = sleeping_workers_ > 0;
  }
  if (notify) wake_.notify_all();
  std::exception_ptr err;
  int64_t b, e;
  chunk_range(n, chunks, 0, &b, &e);
  t_inside_job = true;
  try {
    fn(b, e);
  } catch (...) {
    err = std::current_exception();
  }
  t_inside_job = false;
  auto done = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  if (!spin_until(done, kSpinNs)) {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, done);
  }
  std::lock_guard<std::mutex> lock(mu_);
  job_ = nullptr;
  if (!err) err = error_;
  error_ = nullptr;
  if (err) std::rethrow_exception(err);
}

}  // namespace herd
