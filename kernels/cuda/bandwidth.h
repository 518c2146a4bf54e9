// What `herd probe` measures on a GPU: its device-to-device copy bandwidth. Compiled only with
// HERD_CUDA (bandwidth.cu); copy_bandwidth_from_times is plain host math, inline here so the CPU
// tests check it in every build. Nothing here has run on a GPU yet (docs/cuda.md).
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

namespace herd::cuda {

// Why this host has no usable CUDA device, in words: cudaGetDeviceCount's error ("CUDA driver
// version is insufficient...", "no CUDA-capable device is detected") or "the driver lists 0
// devices"; "" when there is at least one.
std::string no_device_reason();

struct CopyBandwidth {
  double Bps = 0;     // memory bandwidth: 2 x bytes per copy (each byte read once and written once) / time
  size_t bytes = 0;   // bytes per copy
  int reps = 0;
  std::string error;  // "" on success, else what failed (never throws)
};

// Times `reps` cudaMemcpyAsync device-to-device copies of `bytes` (after one untimed warm-up) on
// device `device`, each between a pair of cudaEvents, and returns the median. Frees what it takes.
CopyBandwidth measure_copy_bandwidth(int device, size_t bytes = size_t(256) << 20, int reps = 5);

// The median of per-copy times (milliseconds) as bytes/s of memory traffic: 2 * bytes / median.
// 0 when there are no times or the median is not positive.
inline double copy_bandwidth_from_times(size_t bytes, std::vector<float> ms) {
  if (ms.empty()) return 0;
  std::sort(ms.begin(), ms.end());
  const size_t k = ms.size();
  const double med = k % 2 ? ms[k / 2] : 0.5 * (static_cast<double>(ms[k / 2 - 1]) + static_cast<double>(ms[k / 2]));
  if (!(med > 0)) return 0;
  return 2.0 * static_cast<double>(bytes) / (med * 1e-3);
}

}  // namespace herd::cuda
