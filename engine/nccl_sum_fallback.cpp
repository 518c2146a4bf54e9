// A stand-in for herd::cuda::sum_in_rank_order (kernels/cuda/ops.h) while this branch lacks the
// kernels helper's launcher: comm.cmake compiles this file only when kernels/cuda/ops.h does not
// declare it, so the merged tree uses the real kernel and this file drops out by itself.
//
// It stages through the host: waits for `stream`, copies the parts down, sums them with
// rank_order_sum (engine/comm.h, the contract's reference) and copies the result up. Correct, and
// slow; it synchronises the stream, which a launcher must not, so it is only for NcclComm, which
// calls it on an idle stream right after its all-gather finished.
#include <cuda_runtime.h>

#include <vector>

#include "engine/comm.h"

namespace herd::cuda {

cudaError_t sum_in_rank_order(const float* parts, int n_parts, size_t n, float* out, cudaStream_t stream) {
  if (n_parts <= 0 || n == 0) return cudaSuccess;
  if (cudaError_t e = cudaStreamSynchronize(stream); e != cudaSuccess) return e;
  std::vector<float> host(static_cast<size_t>(n_parts) * n);
  if (cudaError_t e = cudaMemcpy(host.data(), parts, host.size() * sizeof(float), cudaMemcpyDeviceToHost); e != cudaSuccess)
    return e;
  std::vector<const float*> ptrs(static_cast<size_t>(n_parts));
  for (int p = 0; p < n_parts; ++p) ptrs[static_cast<size_t>(p)] = host.data() + static_cast<size_t>(p) * n;
  std::vector<float> sum(n);
  rank_order_sum(ptrs.data(), n_parts, n, sum.data());
  return cudaMemcpy(out, sum.data(), n * sizeof(float), cudaMemcpyHostToDevice);
}

}  // namespace herd::cuda
