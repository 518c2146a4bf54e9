// The host-side decisions of NcclComm (engine/nccl_comm.h), apart from NCCL and CUDA so the CPU
// tests check them: when a step in flight is done, failed or timed out; how long to sleep between
// polls; how large the all-reduce scratch is; what an error says. NcclComm only translates
// ncclCommGetAsyncError / cudaStreamQuery results into the two states below and acts on the verdict.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace herd {

// What ncclCommGetAsyncError reported: ncclSuccess, ncclInProgress (a non-blocking call still being
// issued, or init/finalize still running), anything else.
enum class NcclAsync { Ok, InProgress, Error };
// What cudaStreamQuery reported: cudaSuccess, cudaErrorNotReady, anything else. NotUsed: the step
// has no stream work (communicator init, finalize).
enum class StreamState { Done, NotReady, Error, NotUsed };
enum class StepVerdict { Done, KeepWaiting, Failed, TimedOut };

// One observation of a step that started elapsed_ms ago. Errors win (a failed communicator is
// failed even if the stream drained); then done (the communicator settled and its stream work, if
// any, finished); then the deadline (elapsed_ms >= timeout_ms); else keep waiting.
StepVerdict judge_step(NcclAsync comm, StreamState stream, double elapsed_ms, int timeout_ms);

// The sleep before poll number `poll` (0-based) of one step, microseconds: 0 for the first few
// polls (a small collective finishes in microseconds), then doubling from 5 us to at most 1000 us,
// so a waiting rank neither spins a core for the whole timeout nor adds more than 1 ms of latency.
int poll_sleep_us(int poll);

// Polls `observe` (which reports the communicator's and the stream's state) until judge_step says
// something other than KeepWaiting. now_ms and sleep_us default to the steady clock and
// std::this_thread::sleep_for; the tests pass a fake clock. Never returns KeepWaiting.
struct StepClock {
  std::function<double()> now_ms;
  std::function<void(int)> sleep_us;
};
StepClock real_step_clock();
StepVerdict wait_step(const std::function<void(NcclAsync*, StreamState*)>& observe, int timeout_ms,
                      const StepClock& clock = real_step_clock());

// Floats of all-reduce scratch for n values on nranks ranks (the all-gather of every rank's data,
// nranks * n), or 0 with *error set when nranks < 1 or the product overflows size_t bytes.
size_t allreduce_scratch_floats(int nranks, size_t n, std::string* error);

// The error NcclComm reports and keeps: "nccl rank R (device cuda:D): STEP: WHAT" where WHAT is
// the verdict in words ("timed out after T ms waiting for PEERS", or detail for a failure).
// peers: who the step waited on ("rank 2", "all 4 ranks").
std::string nccl_step_error(int rank, int device, const std::string& step, const std::string& peers, StepVerdict v,
                            int timeout_ms, const std::string& detail);

}  // namespace herd
