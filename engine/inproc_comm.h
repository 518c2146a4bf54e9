// InprocComm: the ranks of a group are threads of one process sharing a group object; a collective
// is three barriers and plain memory reads, no messages. The reference the other implementations
// are tested against, and the fastest way to run tensor parallelism inside one host.
//
// All-reduce: every rank publishes a pointer to its buffer; rank r then sums slice r of all ranks'
// buffers in rank order into a shared result (so the reduction is spread over the threads and each
// element is still ((x0 + x1) + x2) + ...); after a second barrier every rank copies the result.
// A rank that never arrives makes the others time out (timeout_ms) with an error; a timeout breaks
// the whole group, so every waiting rank returns promptly rather than each waiting its own timeout.
#pragma once

#include <memory>
#include <vector>

#include "engine/comm.h"

namespace herd {

struct InprocGroup;

class InprocComm : public Comm {
 public:
  InprocComm(std::shared_ptr<InprocGroup> group, int rank);
  int rank() const override { return rank_; }
  int size() const override;
  std::string name() const override { return "inproc"; }
  std::string all_reduce_sum(float* data, size_t n) override;
  std::string all_gather(const float* in, size_t n, float* out) override;
  std::string broadcast(float* data, size_t n, int root) override;

 private:
  std::shared_ptr<InprocGroup> group_;
  int rank_;
};

// n Comm objects of one group; hand comms[r] to the thread that is rank r.
std::vector<std::unique_ptr<Comm>> make_inproc_comms(int n);

}  // namespace herd
