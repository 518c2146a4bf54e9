// A pipeline hop between two stages that both compute on devices (GPUs): the hidden state goes
// device to device, not through either host. The worker only sees this seam; what moves the bytes
// is the herd binary's hook (launch/device_hop.h: a 2-rank NcclComm, upstream rank 0 and
// downstream rank 1) or, in CPU tests, a stand-in (tests/integration/test_device_hop.cpp), so the
// worker needs no CUDA.
//
// How two workers agree on one (cluster/protocol.h, protocol 11): after its link measurement the
// upstream stage offers it (HopOffer: the group's NCCL id), the downstream stage declines or
// accepts, both join within the hop timeout and the downstream says whether it joined. Anything
// short of that leaves the hop on the link, as before, with a logged reason. With a hop, a Forward
// carries only its header (Forward::device_hop) and the hidden state follows on the hop.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "engine/nccl_bootstrap.h"
#include "kernels/backend.h"

namespace herd {

// One end of a joined hop. Pointers are in the memory of the backend the hop was joined with.
// Each call returns once the transfer is complete (the buffer may be reused or read), or with the
// error after at most the hop's timeout; after an error the hop is broken (the worker drops it).
class DeviceHop {
 public:
  virtual ~DeviceHop() = default;
  virtual std::string send(const float* device_data, size_t n) = 0;  // to the downstream stage
  virtual std::string recv(float* device_data, size_t n) = 0;        // from the upstream stage
  virtual std::string name() const = 0;                              // for logs: "nccl cuda:0 -> peer"
};

// What a worker needs to make hops (WorkerServerOptions::device_hop); both set, or no hops.
struct DeviceHopHooks {
  // Upstream: a fresh group id (NcclComm::new_unique_id). "" or why none can be made.
  std::function<std::string(NcclId* id)> new_id;
  // Joins the hop's group as rank 0 (upstream) or 1 (downstream) on `backend`'s device, waiting at
  // most timeout_ms for the other end; the hop's transfers then wait at most timeout_ms each.
  // Null with *error on failure.
  std::function<std::unique_ptr<DeviceHop>(const NcclId& id, int rank, Backend& backend, int timeout_ms,
                                           std::string* error)>
      join;
  explicit operator bool() const { return new_id && join; }
};

// The group tag of the hop into a stage whose upstream link token is `token` (Assign::next_token on
// the upstream, Assign::upstream_token on the downstream): an offer is for this assignment's hop only.
uint64_t device_hop_tag(const std::string& token);

}  // namespace herd
