// Comm: one rank of a group that runs collectives (all-reduce, all-gather, broadcast) on f32 data.
// Tensor parallelism joins the shards of a layer with an all-reduce; the implementations are the
// transports a group can have: threads of one process (InprocComm), a ring of herd links over TCP or
// inproc (RingComm), MPI (MpiComm, engine/mpi_comm.h, its own library).
//
// The contract every implementation keeps, so a split run gives the same tokens whatever carried
// it: all_reduce_sum's result is, on every rank, bit-identical to summing in f32 in rank order,
// ((x0 + x1) + x2) + x3, whatever order messages arrive in. f32 addition is not associative, so an
// implementation may not let arrival order (or MPI's choice of algorithm) pick the order.
//
// Errors are values: each call returns "" on success, else the reason (a dead or silent peer, a
// malformed message). No call hangs (each waits at most timeout_ms() for any one step) or aborts.
// After an error the group is broken: later calls on that rank return the same error at once (a
// collective that failed half-way leaves peers at different points; there is no resynchronising).
#pragma once

#include <cstddef>
#include <string>

#include "kernels/device.h"

namespace herd {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // "inproc", "ring", "mpi", "nccl"
  // Where the pointers every call takes live: host memory (the default), or one device's memory
  // (NcclComm: its GPU). A Stage on a device joins its shards only through a Comm on that device.
  virtual Device device() const { return {}; }

  // In place: data[i] = sum over ranks in rank order of each rank's data[i]. n equal on all ranks.
  virtual std::string all_reduce_sum(float* data, size_t n) = 0;
  // out: [size() * n], rank r's `in` at out + r * n. `in` may not overlap `out`.
  virtual std::string all_gather(const float* in, size_t n, float* out) = 0;
  // Every rank's data becomes root's data.
  virtual std::string broadcast(float* data, size_t n, int root) = 0;

  // How long one call may wait for a peer before it reports it silent. Generous by default: a
  // peer may be slow (computing its shard) without being dead; dead peers over TCP are noticed
  // sooner anyway, by the links' heartbeats.
  static constexpr int kDefaultTimeoutMs = 30000;
  void set_timeout_ms(int ms) { timeout_ms_ = ms > 0 ? ms : 1; }
  int timeout_ms() const { return timeout_ms_; }

 private:
  int timeout_ms_ = kDefaultTimeoutMs;
};

// out[i] = ((parts[0][i] + parts[1][i]) + ...) + parts[n_parts-1][i], in f32: the reference every
// implementation's all-reduce must equal bit for bit. out may alias parts[0].
void rank_order_sum(const float* const* parts, int n_parts, size_t n, float* out);

}  // namespace herd
