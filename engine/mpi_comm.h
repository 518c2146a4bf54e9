// MpiComm: a group over an MPI communicator (MPI_COMM_WORLD by default), for runs started with
// mpirun. The caller owns MPI_Init/MPI_Finalize.
//
// All-reduce keeps the fixed rank-order contract, which MPI_Allreduce does not (the standard leaves
// its reduction order to the implementation, and Open MPI picks algorithms by size): a
// reduce-scatter by MPI_Alltoallv (rank j receives every rank's slice j, in rank order, and sums it
// ((x0 + x1) + x2) + ...), then MPI_Allgatherv of the summed slices. That moves 2N(n-1)/n bytes
// per rank, the same as a bandwidth-optimal all-reduce.
//
// Every call is non-blocking MPI (MPI_Ialltoallv, ...) completed by polling MPI_Test until
// timeout_ms, so a silent rank is an error value, not a hang (an MPI collective cannot be
// cancelled: after a timeout the comm is broken). Errors return instead of aborting
// (MPI_ERRORS_RETURN on the communicator); under mpirun a rank that dies usually ends the job.
#pragma once

#include <mpi.h>

#include <vector>

#include "engine/comm.h"

namespace herd {

class MpiComm : public Comm {
 public:
  explicit MpiComm(MPI_Comm comm = MPI_COMM_WORLD);
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }
  std::string all_reduce_sum(float* data, size_t n) override;
  std::string all_gather(const float* in, size_t n, float* out) override;
  std::string broadcast(float* data, size_t n, int root) override;
  // Why the comm is broken ("" while it works): a collective that failed or timed out.
  const std::string& broken() const { return broken_; }

 private:
  std::string wait(MPI_Request* req, const char* what);  // polls to completion or timeout
  std::string check(int rc, const char* what);           // an MPI return code as an error value
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  std::string broken_;
  std::vector<float> gathered_;  // all-reduce scratch: [n] = every rank's slice of this rank's part
};

}  // namespace herd
