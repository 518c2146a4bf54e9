// The herd binary's stage hops between GPUs (worker/device_hop.h): a 2-rank NcclComm per hop,
// upstream rank 0 and downstream rank 1, on the GPU of the worker's --device backend. Compiled
// only where this build has NCCL (HERD_HAVE_NCCL: herd_comm_nccl); never run on a GPU yet
// (docs/cuda.md "Stage hops between GPUs").
#pragma once

#include "worker/device_hop.h"

namespace herd::cli {

// The hooks for a worker on a GPU; empty (no hops: every hop uses the links) without NCCL.
DeviceHopHooks nccl_device_hop_hooks();

}  // namespace herd::cli
