// NcclComm (engine/nccl_comm.h). Compiled by the host compiler against the CUDA runtime and NCCL
// headers; the only kernel it launches is herd::cuda::sum_in_rank_order (kernels/cuda).
#include "engine/nccl_comm.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "engine/nccl_poll.h"
#include "kernels/cuda/ops.h"

static_assert(NCCL_UNIQUE_ID_BYTES == herd::kNcclIdBytes, "herd's NcclId must be exactly an ncclUniqueId");
static_assert(sizeof(ncclUniqueId) == herd::kNcclIdBytes, "ncclUniqueId is not 128 bytes");

namespace herd {

struct NcclComm::Impl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  float* scratch = nullptr;  // device, all-reduce's gathered parts
  size_t scratch_floats = 0;
  bool aborted = false;
};

namespace {

std::string cuda_err(cudaError_t e) { return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")"; }

NcclAsync async_state(ncclComm_t comm) {
  ncclResult_t async = ncclSuccess;
  if (ncclCommGetAsyncError(comm, &async) != ncclSuccess) return NcclAsync::Error;
  return async == ncclSuccess ? NcclAsync::Ok : async == ncclInProgress ? NcclAsync::InProgress : NcclAsync::Error;
}

StreamState stream_state(cudaStream_t s) {
  if (!s) return StreamState::NotUsed;
  const cudaError_t e = cudaStreamQuery(s);
  if (e == cudaSuccess) return StreamState::Done;
  if (e == cudaErrorNotReady) return StreamState::NotReady;
  return StreamState::Error;
}

// Why a failed step failed, from the communicator and the stream.
std::string failure_detail(ncclComm_t comm, cudaStream_t s) {
  std::string d;
  ncclResult_t async = ncclSuccess;
  if (comm && ncclCommGetAsyncError(comm, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress) {
    d = ncclGetErrorString(async);
    if (const char* last = ncclGetLastError(comm); last && *last) d += std::string(": ") + last;
  }
  if (s) {
    const cudaError_t e = cudaStreamQuery(s);
    if (e != cudaSuccess && e != cudaErrorNotReady) d += (d.empty() ? "" : "; ") + std::string("stream: ") + cuda_err(e);
  }
  return d;
}

std::string peers_all(int n) { return "all " + std::to_string(n) + " ranks"; }

}  // namespace

NcclComm::NcclComm(int rank, int size, int device) : rank_(rank), size_(size), device_(device) {}

std::string NcclComm::new_unique_id(NcclId* id) {
  ncclUniqueId u;
  const ncclResult_t r = ncclGetUniqueId(&u);
  if (r != ncclSuccess) return std::string("ncclGetUniqueId: ") + ncclGetErrorString(r);
  std::memcpy(id->data(), u.internal, kNcclIdBytes);
  return "";
}

std::unique_ptr<NcclComm> NcclComm::create(const NcclId& id, int nranks, int rank, int device, std::string* error,
                                           int timeout_ms) {
  const std::string where = "nccl rank " + std::to_string(rank) + " (device cuda:" + std::to_string(device) + "): ";
  if (nranks < 1 || rank < 0 || rank >= nranks) {
    *error = where + "rank outside a group of " + std::to_string(nranks);
    return nullptr;
  }
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) {
    cudaGetLastError();
    *error = where + "cudaSetDevice: " + cuda_err(e);
    return nullptr;
  }
  std::unique_ptr<NcclComm> c(new NcclComm(rank, nranks, device));
  c->set_timeout_ms(timeout_ms);
  c->impl_ = std::make_unique<Impl>();
  if (cudaError_t e = cudaStreamCreateWithFlags(&c->impl_->stream, cudaStreamNonBlocking); e != cudaSuccess) {
    c->impl_->stream = nullptr;
    *error = where + "cudaStreamCreate: " + cuda_err(e);
    return nullptr;
  }
  ncclUniqueId u;
  std::memcpy(u.internal, id.data(), kNcclIdBytes);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // every step returns at once and is polled: no call can hang
  const ncclResult_t r = ncclCommInitRankConfig(&c->impl_->comm, nranks, u, rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    *error = where + "ncclCommInitRankConfig: " + ncclGetErrorString(r);
    if (c->impl_->comm) ncclCommAbort(c->impl_->comm);
    c->impl_->comm = nullptr;
    return nullptr;
  }
  ncclComm_t comm = c->impl_->comm;
  const StepVerdict v = wait_step([&](NcclAsync* a, StreamState* s) { *a = async_state(comm), *s = StreamState::NotUsed; },
                                  c->timeout_ms());
  if (v != StepVerdict::Done) {
    *error = nccl_step_error(rank, device, "init", peers_all(nranks), v, c->timeout_ms(), failure_detail(comm, nullptr));
    ncclCommAbort(comm);
    c->impl_->comm = nullptr;
    return nullptr;
  }
  return c;
}

std::unique_ptr<NcclComm> NcclComm::bootstrap(Comm& over, uint64_t group_tag, int device, std::string* error,
                                              int timeout_ms) {
  NcclId id{};
  const std::string root_error = over.rank() == 0 ? new_unique_id(&id) : "";
  if (std::string e = exchange_nccl_id(over, group_tag, &id, root_error); !e.empty()) {
    *error = e;
    return nullptr;
  }
  return create(id, over.size(), over.rank(), device, error, timeout_ms);
}

NcclComm::~NcclComm() {
  if (!impl_) return;
  cudaSetDevice(device_);
  if (impl_->comm && !impl_->aborted) {
    bool clean = false;
    if (broken_.empty()) {
      const ncclResult_t fr = ncclCommFinalize(impl_->comm);  // flushes what is queued; polled below
      clean = fr == ncclSuccess || fr == ncclInProgress;
    }
    if (clean) {
      ncclComm_t comm = impl_->comm;
      clean = wait_step([&](NcclAsync* a, StreamState* s) { *a = async_state(comm), *s = StreamState::NotUsed; },
                        timeout_ms()) == StepVerdict::Done;
    }
    if (clean) ncclCommDestroy(impl_->comm);
    else ncclCommAbort(impl_->comm);
  }
  if (impl_->scratch) cudaFree(impl_->scratch);
  if (impl_->stream) cudaStreamDestroy(impl_->stream);
}

std::string NcclComm::fail(std::string why) {
  if (broken_.empty()) broken_ = std::move(why);
  if (impl_ && impl_->comm && !impl_->aborted) {
    ncclCommAbort(impl_->comm);  // frees every rank waiting on this one: they fail rather than hang
    impl_->aborted = true;
  }
  return broken_;
}

std::string NcclComm::begin(const char* step) {
  if (!broken_.empty()) return broken_;
  if (!impl_ || !impl_->comm) return fail("nccl rank " + std::to_string(rank_) + ": " + step + ": no communicator");
  if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) {
    cudaGetLastError();
    return fail(nccl_step_error(rank_, device_, step, "no peer", StepVerdict::Failed, timeout_ms(), "cudaSetDevice: " + cuda_err(e)));
  }
  return "";
}

std::string NcclComm::finish(const char* step, const std::string& peers, int issue_rc) {
  const auto rc = static_cast<ncclResult_t>(issue_rc);
  if (rc != ncclSuccess && rc != ncclInProgress)
    return fail(nccl_step_error(rank_, device_, step, peers, StepVerdict::Failed, timeout_ms(),
                                std::string(ncclGetErrorString(rc)) + "; " + failure_detail(impl_->comm, impl_->stream)));
  ncclComm_t comm = impl_->comm;
  cudaStream_t stream = impl_->stream;
  const StepVerdict v =
      wait_step([&](NcclAsync* a, StreamState* s) { *a = async_state(comm), *s = stream_state(stream); }, timeout_ms());
  if (v == StepVerdict::Done) return "";
  return fail(nccl_step_error(rank_, device_, step, peers, v, timeout_ms(), failure_detail(comm, stream)));
}

std::string NcclComm::all_gather(const float* in, size_t n, float* out) {
  if (auto e = begin("all_gather"); !e.empty()) return e;
  return finish("all_gather", peers_all(size_),
                ncclAllGather(in, out, n, ncclFloat32, impl_->comm, impl_->stream));
}

std::string NcclComm::all_reduce_sum(float* data, size_t n) {
  if (auto e = begin("all_reduce_sum"); !e.empty()) return e;
  if (size_ == 1 || n == 0) return "";  // the sum of one part is that part
  std::string why;
  const size_t need = allreduce_scratch_floats(size_, n, &why);
  if (need == 0) return fail(nccl_step_error(rank_, device_, "all_reduce_sum", "no peer", StepVerdict::Failed, timeout_ms(), why));
  if (need > impl_->scratch_floats) {
    if (impl_->scratch) cudaFree(impl_->scratch);
    impl_->scratch = nullptr;
    impl_->scratch_floats = 0;
    if (cudaError_t e = cudaMalloc(&impl_->scratch, need * sizeof(float)); e != cudaSuccess) {
      cudaGetLastError();
      impl_->scratch = nullptr;
      return fail(nccl_step_error(rank_, device_, "all_reduce_sum scratch", "no peer", StepVerdict::Failed, timeout_ms(),
                                  "cudaMalloc of " + std::to_string(need * sizeof(float)) + " bytes: " + cuda_err(e)));
    }
    impl_->scratch_floats = need;
  }
  if (auto e = finish("all_reduce_sum (gather)", peers_all(size_),
                      ncclAllGather(data, impl_->scratch, n, ncclFloat32, impl_->comm, impl_->stream));
      !e.empty())
    return e;
  if (cudaError_t e = cuda::sum_in_rank_order(impl_->scratch, size_, n, data, impl_->stream); e != cudaSuccess)
    return fail(nccl_step_error(rank_, device_, "all_reduce_sum (rank-order sum)", "no peer", StepVerdict::Failed,
                                timeout_ms(), "launch: " + cuda_err(e)));
  return finish("all_reduce_sum (rank-order sum)", "no peer", ncclSuccess);
}

std::string NcclComm::broadcast(float* data, size_t n, int root) {
  if (auto e = begin("broadcast"); !e.empty()) return e;
  if (root < 0 || root >= size_)
    return fail(nccl_step_error(rank_, device_, "broadcast", "root " + std::to_string(root), StepVerdict::Failed,
                                timeout_ms(), "root outside the group of " + std::to_string(size_)));
  return finish("broadcast", "root rank " + std::to_string(root),
                ncclBroadcast(data, data, n, ncclFloat32, root, impl_->comm, impl_->stream));
}

std::string NcclComm::send(const float* data, size_t n, int peer) {
  if (auto e = begin("send"); !e.empty()) return e;
  if (peer < 0 || peer >= size_ || peer == rank_)
    return fail(nccl_step_error(rank_, device_, "send", "rank " + std::to_string(peer), StepVerdict::Failed, timeout_ms(),
                                "no such peer in a group of " + std::to_string(size_)));
  return finish("send", "rank " + std::to_string(peer), ncclSend(data, n, ncclFloat32, peer, impl_->comm, impl_->stream));
}

std::string NcclComm::recv(float* data, size_t n, int peer) {
  if (auto e = begin("recv"); !e.empty()) return e;
  if (peer < 0 || peer >= size_ || peer == rank_)
    return fail(nccl_step_error(rank_, device_, "recv", "rank " + std::to_string(peer), StepVerdict::Failed, timeout_ms(),
                                "no such peer in a group of " + std::to_string(size_)));
  return finish("recv", "rank " + std::to_string(peer), ncclRecv(data, n, ncclFloat32, peer, impl_->comm, impl_->stream));
}

}  // namespace herd
