#include "engine/nccl_poll.h"

#include <chrono>
#include <limits>
#include <thread>

namespace herd {

StepVerdict judge_step(NcclAsync comm, StreamState stream, double elapsed_ms, int timeout_ms) {
  if (comm == NcclAsync::Error || stream == StreamState::Error) return StepVerdict::Failed;
  const bool stream_done = stream == StreamState::Done || stream == StreamState::NotUsed;
  if (comm == NcclAsync::Ok && stream_done) return StepVerdict::Done;
  if (elapsed_ms >= static_cast<double>(timeout_ms)) return StepVerdict::TimedOut;
  return StepVerdict::KeepWaiting;
}

int poll_sleep_us(int poll) {
  constexpr int kSpins = 8;
  if (poll < kSpins) return 0;
  const int doublings = poll - kSpins;
  if (doublings >= 8) return 1000;  // 5 << 8 = 1280 > 1000 already
  const int us = 5 << doublings;
  return us > 1000 ? 1000 : us;
}

StepClock real_step_clock() {
  return {[] {
            using namespace std::chrono;
            return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
          },
          [](int us) {
            if (us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
          }};
}

StepVerdict wait_step(const std::function<void(NcclAsync*, StreamState*)>& observe, int timeout_ms,
                      const StepClock& clock) {
  const double start = clock.now_ms();
  for (int poll = 0;; ++poll) {
    NcclAsync comm = NcclAsync::Error;
    StreamState stream = StreamState::Error;
    observe(&comm, &stream);
    const StepVerdict v = judge_step(comm, stream, clock.now_ms() - start, timeout_ms);
    if (v != StepVerdict::KeepWaiting) return v;
    clock.sleep_us(poll_sleep_us(poll));
  }
}

size_t allreduce_scratch_floats(int nranks, size_t n, std::string* error) {
  if (nranks < 1) {
    *error = "all-reduce scratch: nranks " + std::to_string(nranks) + " is not a group size";
    return 0;
  }
  const size_t r = static_cast<size_t>(nranks);
  if (n > std::numeric_limits<size_t>::max() / sizeof(float) / r) {
    *error = "all-reduce scratch: " + std::to_string(r) + " x " + std::to_string(n) + " floats overflow";
    return 0;
  }
  return r * n;
}

std::string nccl_step_error(int rank, int device, const std::string& step, const std::string& peers, StepVerdict v,
                            int timeout_ms, const std::string& detail) {
  std::string s = "nccl rank " + std::to_string(rank) + " (device cuda:" + std::to_string(device) + "): " + step + ": ";
  switch (v) {
    case StepVerdict::TimedOut:
      s += "timed out after " + std::to_string(timeout_ms) + " ms waiting for " + peers;
      break;
    case StepVerdict::Failed:
      s += "failed (waiting for " + peers + ")";
      break;
    case StepVerdict::Done:
    case StepVerdict::KeepWaiting:
      s += "no error";  // not an error verdict: a caller's mistake, said plainly rather than hidden
      break;
  }
  if (!detail.empty()) s += ": " + detail;
  return s;
}

}  // namespace herd
