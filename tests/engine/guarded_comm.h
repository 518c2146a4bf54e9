// GuardedComm: a Comm on a GuardedDevice's memory (tests/engine/guarded_device.h), the stand-in for
// NCCL in CPU tests of tensor parallelism on devices. Every pointer it takes must be in its
// device's arena (the device records a violation otherwise, and a host access to the arena dies);
// it moves the data out through the device's copy_out, runs the collective on a host Comm (`over`:
// an in-process group, a ring of workers), and moves the result back in. So a stage that gives it
// a host pointer, or reads device memory itself, fails the test; the bits are the host Comm's, and
// every Comm's all-reduce is the rank-order sum (engine/comm.h), as NCCL's is (engine/nccl_comm.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/comm.h"
#include "tests/engine/guarded_device.h"

namespace herd::test {

class GuardedComm : public Comm {
 public:
  GuardedComm(Comm& over, GuardedDevice& dev) : over_(over), dev_(dev) { set_timeout_ms(over.timeout_ms()); }
  int rank() const override { return over_.rank(); }
  int size() const override { return over_.size(); }
  std::string name() const override { return "guarded(" + over_.name() + ")"; }
  Device device() const override { return dev_.device(); }
  int calls() const { return calls_; }

  std::string all_reduce_sum(float* data, size_t n) override {
    ++calls_;
    host_.resize(n);
    dev_.copy_out(host_.data(), data, n * sizeof(float));
    std::string err = over_.all_reduce_sum(host_.data(), n);
    if (err.empty()) dev_.copy_in(data, host_.data(), n * sizeof(float));
    return err;
  }
  std::string all_gather(const float* in, size_t n, float* out) override {
    ++calls_;
    host_.resize(n);
    all_.resize(n * static_cast<size_t>(size()));
    dev_.copy_out(host_.data(), in, n * sizeof(float));
    std::string err = over_.all_gather(host_.data(), n, all_.data());
    if (err.empty()) dev_.copy_in(out, all_.data(), all_.size() * sizeof(float));
    return err;
  }
  std::string broadcast(float* data, size_t n, int root) override {
    ++calls_;
    host_.resize(n);
    dev_.copy_out(host_.data(), data, n * sizeof(float));
    std::string err = over_.broadcast(host_.data(), n, root);
    if (err.empty()) dev_.copy_in(data, host_.data(), n * sizeof(float));
    return err;
  }

 private:
  Comm& over_;
  GuardedDevice& dev_;
  std::vector<float> host_, all_;
  int calls_ = 0;
};

// TpOptions::device_comm for ranks on GuardedDevices.
inline std::unique_ptr<Comm> guarded_comm(Comm& over, Backend& be, std::string* error) {
  auto* dev = dynamic_cast<GuardedDevice*>(&be);
  if (!dev) {
    *error = be.name() + " is not a guarded device";
    return nullptr;
  }
  return std::make_unique<GuardedComm>(over, *dev);
}

}  // namespace herd::test
