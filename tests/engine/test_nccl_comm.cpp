// NcclComm (engine/nccl_comm.h) on real GPUs: one thread per device, the NCCL id carried over an
// InprocComm by exchange_nccl_id, device buffers checked against the host reference bit for bit.
// Built only with herd_comm_nccl. Without a CUDA device every test is SKIPPED (ctest reports it
// skipped, never passed); it has not yet run on a GPU (docs/cuda.md).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <thread>

#include "engine/inproc_comm.h"
#include "engine/nccl_comm.h"
#include "kernels/cuda/device.h"
#include "tests/engine/comm_checks.h"

namespace herd::test {
namespace {

int device_count() { return static_cast<int>(cuda::list_devices().size()); }

std::vector<std::string> on_threads(int n, const std::function<std::string(int)>& fn) {
  std::vector<std::string> out(static_cast<size_t>(n));
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r) ts.emplace_back([&, r] { out[static_cast<size_t>(r)] = fn(r); });
  for (auto& t : ts) t.join();
  return out;
}

// n ranks, rank r on device r, bootstrapped over an InprocComm; the caller's fn runs on each.
std::vector<std::string> with_group(int n, int timeout_ms, const std::function<std::string(NcclComm&)>& fn) {
  auto boot = make_inproc_comms(n);
  return on_threads(n, [&](int r) -> std::string {
    std::string err;
    auto c = NcclComm::bootstrap(*boot[static_cast<size_t>(r)], nccl_group_tag("test_nccl_comm"), r, &err, timeout_ms);
    if (!c) return err;
    return fn(*c);
  });
}

struct DeviceBuffer {
  float* p = nullptr;
  explicit DeviceBuffer(size_t n) {
    if (cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(float)) != cudaSuccess) p = nullptr;
  }
  ~DeviceBuffer() {
    if (p) cudaFree(p);
  }
};

// All-reduce, all-gather and broadcast on this rank, checked against every rank's regenerated input.
std::string check_collectives(NcclComm& c) {
  const int n_ranks = c.size(), me = c.rank();
  for (size_t n : {size_t{1}, size_t{3}, size_t{4097}, size_t{1} << 20}) {
    std::vector<float> mine(n), want(n);
    std::vector<std::vector<float>> all(static_cast<size_t>(n_ranks), std::vector<float>(n));
    for (int r = 0; r < n_ranks; ++r)
      for (size_t i = 0; i < n; ++i) all[static_cast<size_t>(r)][i] = random_input(5, r, i);
    mine = all[static_cast<size_t>(me)];
    std::vector<const float*> parts;
    for (auto& a : all) parts.push_back(a.data());
    rank_order_sum(parts.data(), n_ranks, n, want.data());
    DeviceBuffer d(n), g(n * static_cast<size_t>(n_ranks));
    if (!d.p || !g.p) return "cudaMalloc failed";
    cudaMemcpy(d.p, mine.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    if (auto e = c.all_gather(d.p, n, g.p); !e.empty()) return e;
    std::vector<float> gathered(n * static_cast<size_t>(n_ranks));
    cudaMemcpy(gathered.data(), g.p, gathered.size() * sizeof(float), cudaMemcpyDeviceToHost);
    for (int r = 0; r < n_ranks; ++r)
      if (std::memcmp(gathered.data() + static_cast<size_t>(r) * n, all[static_cast<size_t>(r)].data(), n * sizeof(float)))
        return "all_gather n=" + std::to_string(n) + ": rank " + std::to_string(r) + "'s part differs";
    if (auto e = c.all_reduce_sum(d.p, n); !e.empty()) return e;
    std::vector<float> got(n);
    cudaMemcpy(got.data(), d.p, n * sizeof(float), cudaMemcpyDeviceToHost);
    if (std::memcmp(got.data(), want.data(), n * sizeof(float)))
      return "all_reduce_sum n=" + std::to_string(n) + ": not bit-identical to the rank-order sum";
    const int root = n_ranks - 1;
    cudaMemcpy(d.p, mine.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    if (auto e = c.broadcast(d.p, n, root); !e.empty()) return e;
    cudaMemcpy(got.data(), d.p, n * sizeof(float), cudaMemcpyDeviceToHost);
    if (std::memcmp(got.data(), all[static_cast<size_t>(root)].data(), n * sizeof(float)))
      return "broadcast n=" + std::to_string(n) + " from rank " + std::to_string(root) + " differs";
  }
  return "";
}

TEST(NcclComm, CollectivesBitIdenticalOnEveryDevice) {
  const int n = std::min(device_count(), 4);
  if (n < 1) GTEST_SKIP() << "no CUDA device";
  for (const auto& e : with_group(n, 60000, check_collectives)) EXPECT_EQ(e, "");
}

TEST(NcclComm, SendRecvAlongAPipeline) {
  const int n = std::min(device_count(), 4);
  if (n < 2) GTEST_SKIP() << "needs 2 CUDA devices, found " << n;
  const auto errs = with_group(n, 60000, [&](NcclComm& c) -> std::string {
    const size_t len = 12345;
    DeviceBuffer d(len);
    std::vector<float> h(len);
    if (c.rank() == 0) {
      for (size_t i = 0; i < len; ++i) h[i] = random_input(9, 0, i);
      cudaMemcpy(d.p, h.data(), len * sizeof(float), cudaMemcpyHostToDevice);
    } else if (auto e = c.recv(d.p, len, c.rank() - 1); !e.empty()) {
      return e;
    }
    if (c.rank() + 1 < c.size())
      if (auto e = c.send(d.p, len, c.rank() + 1); !e.empty()) return e;
    cudaMemcpy(h.data(), d.p, len * sizeof(float), cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < len; ++i)
      if (h[i] != random_input(9, 0, i)) return "element " + std::to_string(i) + " changed on its way";
    return "";
  });
  for (const auto& e : errs) EXPECT_EQ(e, "");
}

TEST(NcclComm, ASilentPeerIsATimeoutNotAHang) {
  const int n = std::min(device_count(), 2);
  if (n < 2) GTEST_SKIP() << "needs 2 CUDA devices, found " << n;
  const auto t0 = std::chrono::steady_clock::now();
  const auto errs = with_group(n, 2000, [&](NcclComm& c) -> std::string {
    if (c.rank() == 1) return "";  // never joins the all-reduce
    DeviceBuffer d(1024);
    const std::string e = c.all_reduce_sum(d.p, 1024);
    const std::string again = c.all_reduce_sum(d.p, 1024);
    return e == again ? e : "a broken comm answered another error: " + again;
  });
  EXPECT_NE(errs[0].find("timed out after 2000 ms"), std::string::npos) << errs[0];
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
}

}  // namespace
}  // namespace herd::test
