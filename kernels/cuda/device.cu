#include "kernels/cuda/device.h"

#include <cuda_runtime.h>

namespace herd::cuda {

std::vector<DeviceInfo> list_devices() {
  std::vector<DeviceInfo> out;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return out;
  }
  // Querying free memory makes each device current in turn: the caller's current device (a
  // backend's, whose stream belongs to it) is restored at the end.
  int current = 0;
  const bool had_current = cudaGetDevice(&current) == cudaSuccess;
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    DeviceInfo d;
    d.index = i;
    d.name = prop.name;
    d.total_bytes = prop.totalGlobalMem;
    d.cc_major = prop.major;
    d.cc_minor = prop.minor;
    if (cudaSetDevice(i) == cudaSuccess) {
      size_t free_b = 0, total_b = 0;
      if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) d.free_bytes = free_b;
    }
    out.push_back(d);
  }
  if (had_current) cudaSetDevice(current);
  return out;
}

}  // namespace herd::cuda
