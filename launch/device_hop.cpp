#include "launch/device_hop.h"

#include <memory>
#include <string>

#if defined(HERD_HAVE_NCCL)
#include "engine/nccl_comm.h"
#endif

namespace herd::cli {

#if defined(HERD_HAVE_NCCL)

namespace {

// One end of a hop: NcclComm's point-to-point calls on device pointers; each returns once the
// transfer is complete (or failed, or timed out: the comm is broken then, and says so).
class NcclHop : public DeviceHop {
 public:
  explicit NcclHop(std::unique_ptr<NcclComm> comm) : comm_(std::move(comm)) {}
  std::string send(const float* device_data, size_t n) override { return comm_->send(device_data, n, 1); }
  std::string recv(float* device_data, size_t n) override { return comm_->recv(device_data, n, 0); }
  std::string name() const override {
    return "nccl on " + comm_->device().name() + ", rank " + std::to_string(comm_->rank()) + " of 2";
  }

 private:
  std::unique_ptr<NcclComm> comm_;
};

}  // namespace

DeviceHopHooks nccl_device_hop_hooks() {
  DeviceHopHooks h;
  h.new_id = [](NcclId* id) { return NcclComm::new_unique_id(id); };
  h.join = [](const NcclId& id, int rank, Backend& backend, int timeout_ms,
              std::string* error) -> std::unique_ptr<DeviceHop> {
    const Device d = backend.device();
    if (d.kind != Device::Kind::Cuda) {
      *error = backend.name() + " is not on a CUDA device";
      return nullptr;
    }
    auto comm = NcclComm::create(id, 2, rank, d.index, error, timeout_ms);
    if (!comm) return nullptr;
    comm->set_timeout_ms(timeout_ms);
    return std::make_unique<NcclHop>(std::move(comm));
  };
  return h;
}

#else

DeviceHopHooks nccl_device_hop_hooks() { return {}; }

#endif

}  // namespace herd::cli
