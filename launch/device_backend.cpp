#include "launch/device_backend.h"

#include <stdexcept>

#include "common/log.h"
#include "common/timer.h"
#include "launch/args.h"
#include "launch/device_hop.h"

#if defined(HERD_HAVE_NCCL)
#include "engine/nccl_comm.h"
#endif
#if defined(HERD_HAVE_CUDA)
#include "kernels/cuda/bandwidth.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device.h"
#endif

namespace herd::cli {

std::function<std::unique_ptr<Backend>()> device_backend_factory(const std::string& text) {
  Device d;
  try {
    d = parse_device(text);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("--device: ") + e.what());
  }
  if (d.kind == Device::Kind::Host) return nullptr;
#if defined(HERD_HAVE_CUDA)
  const CudaBackendOptions o{d.index};
  (void)make_cuda_backend(o);  // throws now, naming the device, when it cannot be used
  return [o] { return make_cuda_backend(o); };
#else
  throw std::runtime_error("--device " + text + ": this herd was built without CUDA (nvcc was not found when it was "
                           "configured; see the README's GPU section)");
#endif
}

std::vector<std::function<std::unique_ptr<Backend>()>> device_backend_factories(const std::string& text) {
  std::vector<std::string> names;
  for (size_t at = 0;;) {
    const size_t comma = text.find(',', at);
    names.push_back(text.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  std::vector<Device> seen;  // the whole list is checked before any device is opened
  for (const std::string& n : names) {
    Device d;
    try {
      d = parse_device(n);
    } catch (const std::invalid_argument& e) {
      throw UsageError(std::string("--device: ") + e.what());
    }
    if (names.size() > 1 && d.kind == Device::Kind::Host)
      throw UsageError("--device " + text + ": a list names GPUs, one per tensor-parallel rank (cpu is not one)");
    for (const Device& s : seen)
      if (s == d) throw UsageError("--device " + text + ": " + d.name() + " twice (one rank per GPU)");
    seen.push_back(d);
  }
  std::vector<std::function<std::unique_ptr<Backend>()>> out;
  for (const std::string& n : names) out.push_back(device_backend_factory(n));
  return out;
}

void set_session_devices(SessionOptions& s, const std::string& text) {
  auto devices = device_backend_factories(text);
  if (devices.size() == 1) {
    s.device_backend = devices[0];
    return;
  }
  s.rank_device_backends = std::move(devices);
  s.device_comm = device_comm_factory();
}

DeviceCommFactory device_comm_factory() {
#if defined(HERD_HAVE_NCCL)
  return [](Comm& over, Backend& be, std::string* error) -> std::unique_ptr<Comm> {
    const Device d = be.device();
    if (d.kind != Device::Kind::Cuda) {
      *error = be.name() + " is not a CUDA device";
      return nullptr;
    }
    return NcclComm::bootstrap(over, nccl_group_tag("herd tensor-parallel group"), d.index, error, over.timeout_ms());
  };
#else
  return nullptr;
#endif
}

ProbeResult device_startup_profile(const std::string& device, Backend& be, const std::vector<uint32_t>& types) {
  HostProbeOptions o;
  o.startup = true;
  o.types = types;
  ProbeResult r = probe_device(be, o, size_t(64) << 20);
#if defined(HERD_HAVE_CUDA)
  const int index = parse_device(device).index;
  const auto gpus = cuda::list_devices();
  if (index < 0 || index >= static_cast<int>(gpus.size())) throw std::runtime_error(device + ": no such device");
  const auto& g = gpus[static_cast<size_t>(index)];
  r.cpu = g.name;
  r.mem_total_bytes = g.total_bytes;
  r.mem_available_bytes = g.free_bytes;
  const auto bw = cuda::measure_copy_bandwidth(index, size_t(64) << 20, 3);
  if (!bw.error.empty()) throw std::runtime_error(device + ": copy bandwidth: " + bw.error);
  r.read_bw_Bps = bw.Bps;
  r.gpus.push_back({g.index, g.name, static_cast<uint64_t>(g.total_bytes), static_cast<uint64_t>(g.free_bytes), bw.Bps});
#else
  throw std::runtime_error("--device " + device + ": this herd was built without CUDA");
#endif
  return r;
}

uint64_t device_free_bytes(const std::string& device) {
#if defined(HERD_HAVE_CUDA)
  const int index = parse_device(device).index;
  const auto gpus = cuda::list_devices();
  if (index >= 0 && index < static_cast<int>(gpus.size())) return gpus[static_cast<size_t>(index)].free_bytes;
#else
  (void)device;
#endif
  return 0;
}

void set_worker_device(WorkerServerOptions& o, const std::string& device) {
  if (!o.device_backend) o.device_backend = device_backend_factory(device);
  if (!o.device_backend) return;  // cpu
  o.device_free_bytes = [device] { return device_free_bytes(device); };
  o.device_comm = device_comm_factory();   // tensor-parallel groups of GPU workers join over NCCL
  o.device_hop = nccl_device_hop_hooks();  // GPU to GPU to a next stage on a GPU (empty without NCCL)
  if (o.profile) return;
  Timer t;
  auto be = o.device_backend();
  o.profile = device_startup_profile(device, *be, o.profile_types);
  o.profile_source = "measured at startup on " + device;
  HERD_LOG_INFO("worker: ", device, " (", o.profile->cpu, ") ", o.profile->mem_available_bytes >> 20, " MiB free, ",
                o.profile->read_bw_Bps / 1e9, " GB/s copy, ", o.profile->matvec_Bps.size(), " matvec types (",
                t.seconds(), " s)");
}

std::string device_help() {
#if defined(HERD_HAVE_CUDA)
  return "cpu (default) or cuda:N, the Nth CUDA GPU (its weights, KV cache and activations stay on the GPU; not yet "
         "run on a GPU: see the README's GPU section)";
#else
  return "cpu (default); cuda:N needs a herd built with CUDA (this one was built without)";
#endif
}

}  // namespace herd::cli
