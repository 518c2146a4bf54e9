#include "launch/device_backend.h"

#include <stdexcept>

#include "launch/args.h"

#if defined(HERD_HAVE_CUDA)
#include "kernels/cuda/cuda_backend.h"
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

std::string device_help() {
#if defined(HERD_HAVE_CUDA)
  return "cpu (default) or cuda:N, the Nth CUDA GPU (its weights, KV cache and activations stay on the GPU; not yet "
         "run on a GPU: see the README's GPU section)";
#else
  return "cpu (default); cuda:N needs a herd built with CUDA (this one was built without)";
#endif
}

}  // namespace herd::cli
