// NcclComm: a group over NCCL, one rank per CUDA device. Its own library (herd_comm_nccl), built only
// with HERD_CUDA and libnccl found. Compiles and links; it has never run on a GPU (docs/cuda.md).
//
// Every pointer this Comm takes is a DEVICE pointer on its device (device()): unlike the host
// Comms, it knows where its data lives, as a CTranslate2 StorageView knows its device. Work runs on
// the comm's own stream; each call returns once that work is complete (or failed, or timed out), so
// the caller may read the buffers (on the device) right after.
//
// The Comm contract (engine/comm.h) holds: all_reduce_sum is bit-identical to the rank-order f32
// sum, because it is NOT ncclAllReduce (whose reduction order is NCCL's choice of ring or tree):
// it is an ncclAllGather of every rank's data into a device scratch [size * n], then a kernel that
// sums the parts in rank order ((x0 + x1) + x2) + ... (herd::cuda::sum_in_rank_order). Each rank
// receives (n-1) * N bytes against a ring all-reduce's 2N(n-1)/n: the same for 2 ranks, n/2 times
// more for larger groups, the price of a fixed order.
//
// No hangs: the communicator is created non-blocking (ncclConfig_t blocking = 0); every step
// (init, each collective, finalize) is polled with ncclCommGetAsyncError and cudaStreamQuery
// (engine/nccl_poll.h wait_step) until done or timeout_ms(); a timeout or an error aborts the
// communicator (ncclCommAbort) and the error, naming the rank, the device, the step and the peers,
// is returned by that call and every later one.
#pragma once

#include <memory>
#include <string>

#include "engine/comm.h"
#include "engine/nccl_bootstrap.h"

namespace herd {

class NcclComm : public Comm {
 public:
  // rank 0 of a group: a fresh id (ncclGetUniqueId), to send with exchange_nccl_id. "" or the error.
  static std::string new_unique_id(NcclId* id);

  // Rank `rank` of `nranks` on CUDA device `device`, joined with the id every rank got from
  // exchange_nccl_id. Waits at most timeout_ms for the others; null with *error on failure.
  static std::unique_ptr<NcclComm> create(const NcclId& id, int nranks, int rank, int device, std::string* error,
                                          int timeout_ms = Comm::kDefaultTimeoutMs);
  // Both steps over a group the ranks already have (MPI, herd's ring, inproc): rank 0 makes the id,
  // exchange_nccl_id carries it (group_tag: nccl_group_tag of a name for this group), then every
  // rank joins as over.rank() of over.size() on `device`. Null with *error on failure.
  static std::unique_ptr<NcclComm> bootstrap(Comm& over, uint64_t group_tag, int device, std::string* error,
                                             int timeout_ms = Comm::kDefaultTimeoutMs);

  // Finalizes the communicator (bounded by timeout_ms()), or aborts it when broken or when the
  // finalize times out; frees the scratch and the stream.
  ~NcclComm() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "nccl"; }
  Device device() const override { return {Device::Kind::Cuda, device_}; }

  // DEVICE pointers, all of them.
  std::string all_reduce_sum(float* data, size_t n) override;
  std::string all_gather(const float* in, size_t n, float* out) override;
  std::string broadcast(float* data, size_t n, int root) override;
  // Point to point, for a pipeline's stage hops between GPUs: n floats to / from rank `peer`.
  std::string send(const float* data, size_t n, int peer);
  std::string recv(float* data, size_t n, int peer);

  const std::string& broken() const { return broken_; }

 private:
  NcclComm(int rank, int size, int device);
  struct Impl;  // ncclComm_t, cudaStream_t, the scratch (nccl_comm.cpp: no nccl.h in this header)
  // Makes the device current and checks the comm is not broken: "" or the error.
  std::string begin(const char* step);
  // Waits for the step just issued (issue_rc: what the NCCL call returned); "" or the error, which
  // breaks the comm (and aborts the communicator).
  std::string finish(const char* step, const std::string& peers, int issue_rc);
  std::string fail(std::string why);

  int rank_, size_, device_;
  std::unique_ptr<Impl> impl_;
  std::string broken_;
};

}  // namespace herd
