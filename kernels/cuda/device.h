// What the CUDA runtime sees on this host. Compiled only with HERD_CUDA.
#pragma once

#include <string>
#include <vector>

namespace herd::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  size_t total_bytes = 0;
  size_t free_bytes = 0;
  int cc_major = 0, cc_minor = 0;
};

// Empty when there is no driver or no GPU (never throws: a CPU-only host is a normal case).
std::vector<DeviceInfo> list_devices();

}  // namespace herd::cuda
