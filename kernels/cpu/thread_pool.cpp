#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace herd {
namespace {
thread_local bool t_inside_job = false;  // set while a thread runs a chunk; nested calls go serial
}

ThreadPool::ThreadPool(int n_threads) { set_size(n_threads); }

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  stopping_ = false;
}

void ThreadPool::set_size(int n_threads) {
  if (n_threads < 1) throw std::invalid_argument("ThreadPool: thread count must be >= 1, got " + std::to_string(n_threads));
  if (n_threads == size()) return;
  stop_workers();
  workers_.reserve(static_cast<size_t>(n_threads - 1));
  // The generation is passed in rather than read by the new thread: a job posted before the
  // thread first runs must still count as new to it.
  const uint64_t gen = generation_;
  for (int i = 0; i < n_threads - 1; ++i) workers_.emplace_back([this, i, gen] { worker_loop(i + 1, gen); });
}

void ThreadPool::worker_loop(int index, uint64_t seen) {
  for (;;) {
    const RangeFn* fn;
    int64_t n;
    int chunks;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      fn = job_;
      n = job_n_;
      chunks = job_chunks_;
    }
    if (index >= chunks) continue;  // this job has fewer chunks than threads; not counted in pending_
    std::exception_ptr err;
    int64_t b, e;
    chunk_range(n, chunks, index, &b, &e);
    t_inside_job = true;
    try {
      (*fn)(b, e);
    } catch (...) {
      err = std::current_exception();
    }
    t_inside_job = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (err && !error_) error_ = err;
      if (--pending_ == 0) done_.notify_one();
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
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    job_n_ = n;
    job_chunks_ = chunks;
    pending_ = chunks - 1;
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
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
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [&] { return pending_ == 0; });
  job_ = nullptr;
  if (!err) err = error_;
  error_ = nullptr;
  lock.unlock();
  if (err) std::rethrow_exception(err);
}

}  // namespace herd
