#include "engine/inproc_comm.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "common/busy_poll.h"

namespace herd {

enum class InprocOp { all_reduce, all_gather, broadcast };

struct InprocGroup {
  struct Slot {
    const float* data = nullptr;  // this rank's input for the current collective
    size_t n = 0;
    InprocOp op = InprocOp::all_reduce;
    int root = 0;
  };
  explicit InprocGroup(int n) : size(n), slots(n) {}

  // A barrier with a deadline. The last rank to arrive runs `last` (under the lock) before it
  // releases the others. A timeout (or a failed `last`) breaks the group for good.
  // A waiting rank first spins on `released` (yielding; for busy_poll_window(), and only
  // while its core is not wanted: a yield that comes back late ends it), then sleeps on the
  // condition variable: the ranks are computing their shares of one layer on other cores, and
  // a sleeper pays a halted virtual CPU's wake-up (~100 us on a VM) at each of a token's
  // 2 x layers collectives.
  template <class F>
  std::string arrive(int rank, int timeout_ms, F&& last) {
    std::unique_lock<std::mutex> lock(m);
    if (!broken.empty()) return broken;
    const uint64_t g = generation;
    if (++arrived == size) {
      arrived = 0;
      ++generation;
      broken = last();
      released.store(generation, std::memory_order_release);
      cv.notify_all();
      return broken;
    }
    lock.unlock();
    using Clock = std::chrono::steady_clock;
    const auto spin_end = Clock::now() + busy_poll_window();
    for (auto now = Clock::now(); now < spin_end && released.load(std::memory_order_acquire) == g;) {
      std::this_thread::yield();
      const auto after = Clock::now();
      if (after - now > std::chrono::microseconds(200)) break;  // another thread wanted this core
      now = after;
    }
    lock.lock();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    cv.wait_until(lock, deadline, [&] { return generation != g || !broken.empty(); });
    if (generation == g && broken.empty()) {
      broken = "inproc rank " + std::to_string(rank) + ": timed out after " + std::to_string(timeout_ms) +
               " ms waiting for " + std::to_string(size - arrived) + " other rank(s)";
      cv.notify_all();
    }
    return broken;
  }

  // Run by the last arriver: every rank must have called the same collective with the same size.
  std::string check_agree() const {
    for (int r = 1; r < size; ++r)
      if (slots[r].op != slots[0].op || slots[r].n != slots[0].n || slots[r].root != slots[0].root)
        return "inproc: ranks 0 and " + std::to_string(r) + " called different collectives (op/size/root differ)";
    return {};
  }

  const int size;
  std::mutex m;
  std::condition_variable cv;
  int arrived = 0;
  uint64_t generation = 0;
  std::atomic<uint64_t> released{0};  // generation, published for the spinning waiters
  std::string broken;
  std::vector<Slot> slots;
  std::vector<float> result;  // all-reduce: [n], slice r written by rank r
};

InprocComm::InprocComm(std::shared_ptr<InprocGroup> group, int rank) : group_(std::move(group)), rank_(rank) {}

int InprocComm::size() const { return group_->size; }

std::string InprocComm::all_reduce_sum(float* data, size_t n) {
  InprocGroup& g = *group_;
  g.slots[rank_] = {data, n, InprocOp::all_reduce, 0};
  // Resizing here is safe: every rank has arrived, so all finished copying the previous result.
  if (auto err = g.arrive(rank_, timeout_ms(), [&] {
        auto e = g.check_agree();
        if (e.empty()) g.result.resize(n);
        return e;
      });
      !err.empty())
    return err;
  const int size = g.size;
  const size_t lo = n * rank_ / size, hi = n * (rank_ + 1) / size;
  std::vector<const float*> parts(size);
  for (int p = 0; p < size; ++p) parts[p] = g.slots[p].data + lo;
  rank_order_sum(parts.data(), size, hi - lo, g.result.data() + lo);
  // Nobody may overwrite its input before every slice is summed.
  if (auto err = g.arrive(rank_, timeout_ms(), [] { return std::string(); }); !err.empty()) return err;
  if (n) std::memcpy(data, g.result.data(), n * sizeof(float));
  return {};
}

std::string InprocComm::all_gather(const float* in, size_t n, float* out) {
  InprocGroup& g = *group_;
  g.slots[rank_] = {in, n, InprocOp::all_gather, 0};
  if (auto err = g.arrive(rank_, timeout_ms(), [&] { return g.check_agree(); }); !err.empty()) return err;
  for (int p = 0; p < g.size; ++p)
    if (n) std::memcpy(out + p * n, g.slots[p].data, n * sizeof(float));
  // Inputs must stay valid until every rank has copied them.
  return g.arrive(rank_, timeout_ms(), [] { return std::string(); });
}

std::string InprocComm::broadcast(float* data, size_t n, int root) {
  InprocGroup& g = *group_;
  if (root < 0 || root >= g.size) return "inproc: broadcast root " + std::to_string(root) + " out of range";
  g.slots[rank_] = {data, n, InprocOp::broadcast, root};
  if (auto err = g.arrive(rank_, timeout_ms(), [&] { return g.check_agree(); }); !err.empty()) return err;
  if (rank_ != root && n) std::memcpy(data, g.slots[root].data, n * sizeof(float));
  return g.arrive(rank_, timeout_ms(), [] { return std::string(); });
}

std::vector<std::unique_ptr<Comm>> make_inproc_comms(int n) {
  auto group = std::make_shared<InprocGroup>(n);
  std::vector<std::unique_ptr<Comm>> comms;
  for (int r = 0; r < n; ++r) comms.push_back(std::make_unique<InprocComm>(group, r));
  return comms;
}

}  // namespace herd
