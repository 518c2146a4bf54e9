// --device for the commands that run stages (herd worker): the backend factory for a parsed
// device, checked now. Without HERD_HAVE_CUDA (herd built where nvcc was not found) a CUDA device
// is a clear error naming the build, not a CPU run under a GPU's name.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "coordinator/model_session.h"
#include "engine/comm.h"
#include "engine/host_probe.h"
#include "kernels/backend.h"
#include "worker/worker_server.h"

namespace herd::cli {

// Null for the CPU (the caller's CPU backend); else a factory for that device's backend. Throws
// UsageError for text parse_device refuses, std::runtime_error when this build or host has no such
// device (a backend is made once here, so the error comes at startup, naming the device).
std::function<std::unique_ptr<Backend>()> device_backend_factory(const std::string& text);

// --device's list form, for --tp N in one process: "cuda:0,cuda:1", one device per rank (each
// checked as device_backend_factory checks one, and no device twice: NCCL joins one rank per GPU).
// A single device gives one factory (null for the CPU).
std::vector<std::function<std::unique_ptr<Backend>()>> device_backend_factories(const std::string& text);

// --device TEXT into a session's options: one device (device_backend; null for the CPU), or a list,
// one per tensor-parallel rank (rank_device_backends, joined by device_comm_factory()). Throws as
// device_backend_factories does.
void set_session_devices(SessionOptions& s, const std::string& text);

// How a tensor-parallel rank on a GPU joins its group: an NcclComm on the rank's device (its
// backend's), bootstrapped over the group's host Comm `over` (engine/nccl_comm.h). Null when this
// herd was built without NCCL.
using DeviceCommFactory = std::function<std::unique_ptr<Comm>(Comm& over, Backend& be, std::string* error)>;
DeviceCommFactory device_comm_factory();

// What a worker computing on `device` (not the CPU) reports in its Hello: the kernel rates of `be`
// measured on that device (engine/host_probe.h probe_device, startup sizes), its memory (total,
// free) and copy bandwidth as the memory and read-bandwidth figures, its name as the CPU's. Throws
// std::runtime_error when the device cannot be queried.
ProbeResult device_startup_profile(const std::string& device, Backend& be, const std::vector<uint32_t>& types);

// Free memory of `device` now (the Hello's free figure for a GPU worker); 0 when unknown.
uint64_t device_free_bytes(const std::string& device);

// A worker computing on `device` (herd worker --device, herd mpi --worker-device; not the CPU):
// o.device_backend (made now if unset: a missing GPU is an error now, not at the first Assign), its
// free memory for the Hello, the NCCL Comm of GPU tensor-parallel groups and the stage hops
// between GPUs (launch/device_hop.h), and unless o.profile is set already, the GPU's figures
// measured now (device_startup_profile, in this process: CUDA does not survive a fork).
void set_worker_device(WorkerServerOptions& o, const std::string& device);

// What --help says of the devices this build can run.
std::string device_help();

}  // namespace herd::cli
