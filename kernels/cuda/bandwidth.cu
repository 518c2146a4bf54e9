#include "kernels/cuda/bandwidth.h"

#include <cuda_runtime.h>

namespace herd::cuda {
namespace {

std::string err(const char* what, cudaError_t e) {
  cudaGetLastError();  // clear it so later calls on this thread do not see it
  return std::string(what) + ": " + cudaGetErrorString(e);
}

}  // namespace

std::string no_device_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return err("cudaGetDeviceCount", e);
  return n > 0 ? std::string() : std::string("the driver lists 0 devices");
}

CopyBandwidth measure_copy_bandwidth(int device, size_t bytes, int reps) {
  CopyBandwidth r;
  r.bytes = bytes;
  r.reps = reps;
  if (bytes == 0 || reps < 1) {
    r.error = "nothing to time (bytes and reps must be positive)";
    return r;
  }
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) return r.error = err("cudaSetDevice", e), r;
  void *src = nullptr, *dst = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  std::vector<float> ms;
  auto run = [&]() -> std::string {
    if (cudaError_t e = cudaMalloc(&src, bytes); e != cudaSuccess) return err("cudaMalloc (source)", e);
    if (cudaError_t e = cudaMalloc(&dst, bytes); e != cudaSuccess) return err("cudaMalloc (destination)", e);
    if (cudaError_t e = cudaMemset(src, 0x5a, bytes); e != cudaSuccess) return err("cudaMemset", e);
    if (cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking); e != cudaSuccess)
      return err("cudaStreamCreate", e);
    if (cudaError_t e = cudaEventCreate(&start); e != cudaSuccess) return err("cudaEventCreate", e);
    if (cudaError_t e = cudaEventCreate(&stop); e != cudaSuccess) return err("cudaEventCreate", e);
    for (int i = -1; i < reps; ++i) {  // i = -1: the untimed warm-up
      if (cudaError_t e = cudaEventRecord(start, stream); e != cudaSuccess) return err("cudaEventRecord", e);
      if (cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream); e != cudaSuccess)
        return err("cudaMemcpyAsync", e);
      if (cudaError_t e = cudaEventRecord(stop, stream); e != cudaSuccess) return err("cudaEventRecord", e);
      if (cudaError_t e = cudaEventSynchronize(stop); e != cudaSuccess) return err("cudaEventSynchronize", e);
      float t = 0;
      if (cudaError_t e = cudaEventElapsedTime(&t, start, stop); e != cudaSuccess) return err("cudaEventElapsedTime", e);
      if (i >= 0) ms.push_back(t);
    }
    return "";
  };
  r.error = run();
  if (r.error.empty()) {
    r.Bps = copy_bandwidth_from_times(bytes, ms);
    if (!(r.Bps > 0)) r.error = "the copies timed as 0 ms";
  }
  if (start) cudaEventDestroy(start);
  if (stop) cudaEventDestroy(stop);
  if (stream) cudaStreamDestroy(stream);
  if (src) cudaFree(src);
  if (dst) cudaFree(dst);
  return r;
}

}  // namespace herd::cuda
