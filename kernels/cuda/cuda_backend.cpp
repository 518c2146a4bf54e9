// CudaBackend (cuda_backend.h): host code, compiled by the C++ compiler against the CUDA runtime;
// the kernels are behind kernels/cuda/matmul.h and kernels/cuda/ops.h.
#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/simd_driver.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/graph_policy.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/ops.h"
#include "kernels/quant.h"

namespace herd {
namespace {

constexpr uint32_t kCudaResident = 0x43554441;  // "CUDA": PackedWeights holding a device copy

// An allocation the device could not make: a std::bad_alloc (callers that size memory catch
// that) whose message says how much was asked for and how much was free.
class DeviceOutOfMemory : public std::bad_alloc {
 public:
  explicit DeviceOutOfMemory(std::string m) : msg_(std::move(m)) {}
  const char* what() const noexcept override { return msg_.c_str(); }

 private:
  std::string msg_;
};

std::string mib(size_t b) { return std::to_string((b + (1 << 20) - 1) >> 20) + " MiB"; }

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int dev) : dev_(dev), policy_(graphs_requested()) {
    const auto devices = cuda::list_devices();
    if (devices.empty())
      throw std::runtime_error("cuda:" + std::to_string(dev) + ": no CUDA device on this host (no driver or no GPU)");
    if (dev < 0 || dev >= static_cast<int>(devices.size()))
      throw std::runtime_error("cuda:" + std::to_string(dev) + ": no such device (this host has " +
                               std::to_string(devices.size()) + ": cuda:0.." + std::to_string(devices.size() - 1) + ")");
    gpu_ = devices[static_cast<size_t>(dev)].name;
    check(cudaSetDevice(dev_), "cudaSetDevice");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~CudaBackend() override {
    if (exec_) cudaGraphExecDestroy(exec_);
    if (pinned_pos_) cudaFreeHost(pinned_pos_);
    if (stream_) {
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
    }
  }

  std::string name() const override { return "cuda:" + std::to_string(dev_); }
  Device device() const override { return {Device::Kind::Cuda, dev_}; }

  bool supports(Op op, DType t) const override {
    switch (op) {
      case Op::MatMul:
        return cuda::has_q8_kernel(static_cast<uint32_t>(t)) || t == DType::F32 || t == DType::F16 || t == DType::BF16;
      case Op::GetRows: return true;  // dequantized on the host (dequantize_row knows every type)
      case Op::Attention:
      case Op::StoreRows: return is_kv_type(t);
      default: return t == DType::F32;
    }
  }

  Buffer alloc(size_t bytes) override {
    activate();
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw DeviceOutOfMemory(name() + " (" + gpu_ + "): cannot allocate " + mib(bytes) + ": " + cudaGetErrorString(e) +
                              " (" + mib(free_b) + " free of " + mib(total_b) + ")");
    }
    const int dev = dev_;
    return Buffer(device(), std::shared_ptr<void>(p, [dev](void* q) {
                    cudaSetDevice(dev);
                    cudaFree(q);
                  }),
                  bytes);
  }

  // A pass recorded as a CUDA graph (graph_policy.h; opt-in with HERD_CUDA_GRAPHS=1 until it has
  // run on a GPU): captured on the stream (the kernels are recorded, not run), the previous
  // executable graph updated from it (or a new one instantiated), then launched. An op that fails
  // while recording throws as it would otherwise; the stage then ends the pass with
  // end_pass(false) and the recording is dropped. A failure of the graph machinery itself is an
  // error for that pass and gives graphs up for this backend (direct launches from then on).
  void begin_pass(uint64_t key, int64_t rows) override {
    if (policy_.begin(key, rows) != cuda::GraphPolicy::Begin::Capture) return;
    if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed) != cudaSuccess) {
      cudaGetLastError();
      policy_.give_up("cudaStreamBeginCapture failed");
      return;
    }
    capturing_ = true;
  }
  void end_pass(bool completed) override {
    if (!capturing_) return;
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    const cudaError_t e = cudaStreamEndCapture(stream_, &graph);
    if (!completed || e != cudaSuccess || !graph) {
      cudaGetLastError();
      if (graph) cudaGraphDestroy(graph);
      release_retired();
      if (completed) {  // the recorded work never ran and cannot be replayed: say so, give up graphs
        policy_.give_up("cudaStreamEndCapture failed");
        throw std::runtime_error(name() + " (" + gpu_ + "): recording the pass as a CUDA graph failed: " +
                                 cudaGetErrorString(e));
      }
      return;
    }
    bool ok = true;
    if (policy_.finish() == cuda::GraphPolicy::Finish::Update && exec_) {
      cudaGraphExecUpdateResultInfo info{};
      if (cudaGraphExecUpdate(exec_, graph, &info) != cudaSuccess) {
        cudaGetLastError();
        policy_.update_failed();
        cudaGraphExecDestroy(exec_);
        exec_ = nullptr;
      }
    }
    if (!exec_) {
      if (cudaGraphInstantiate(&exec_, graph, 0) == cudaSuccess) {
        policy_.instantiated();
      } else {
        cudaGetLastError();
        exec_ = nullptr;
        ok = false;
      }
    }
    const cudaError_t launched = ok ? cudaGraphLaunch(exec_, stream_) : cudaErrorUnknown;
    cudaGraphDestroy(graph);
    release_retired();
    if (launched != cudaSuccess) {
      cudaGetLastError();
      policy_.give_up("instantiating or launching the graph failed");
      throw std::runtime_error(name() + " (" + gpu_ + "): launching the pass's CUDA graph failed: " +
                               cudaGetErrorString(launched));
    }
  }

  void copy_in(void* dst, const void* src, size_t n) override {
    if (n) check(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream_), "copy_in");
  }
  void copy_out(void* dst, const void* src, size_t n) override {
    if (n) check(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream_), "copy_out");
    check(cudaStreamSynchronize(stream_), "copy_out (waiting for the queued work)");
  }
  void synchronize() override { check(cudaStreamSynchronize(stream_), "waiting for the queued work"); }
  void copy(void* dst, const void* src, size_t n) override {
    if (n) check(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream_), "copy");
  }
  void fill_zero(void* dst, size_t n) override {
    if (n) check(cudaMemsetAsync(dst, 0, n, stream_), "fill_zero");
  }
  const float* resident(const float* host, size_t n) override {
    auto it = vectors_.find(host);
    if (it != vectors_.end()) return it->second.as<float>();
    Buffer b = alloc(n * sizeof(float));
    copy_in(b.data(), host, n * sizeof(float));
    return vectors_.emplace(host, std::move(b)).first->second.as<float>();
  }
  void release_resident(const float* host) override { vectors_.erase(host); }

  // One allocation for the stage's matrices, each packed to row_bytes per row (the file's rows may
  // be strided), uploaded row block by row block; released() after each, so a file mapping's pages
  // can go as they are copied.
  void prepare_matmul(std::span<WeightMatrix* const> ws,
                      const std::function<void(const WeightMatrix&)>& released) override {
    auto aligned = [](size_t b) { return (b + 255) / 256 * 256; };
    size_t total = 0;
    for (const WeightMatrix* w : ws) total += aligned(row_bytes(w->type, w->cols) * static_cast<size_t>(w->rows));
    if (total == 0) return;
    Buffer all = alloc(total);
    auto* base = all.as<uint8_t>();
    std::shared_ptr<const void> keep(all.data(), [all](const void*) {});  // the Buffer lives as long as any copy
    size_t at = 0;
    for (WeightMatrix* w : ws) {
      const size_t rb = row_bytes(w->type, w->cols), bytes = rb * static_cast<size_t>(w->rows);
      check(cudaMemcpy2DAsync(base + at, rb, w->data, w->row_stride, rb, static_cast<size_t>(w->rows),
                              cudaMemcpyHostToDevice, stream_),
            "uploading weights");
      check(cudaStreamSynchronize(stream_), "uploading weights");
      w->packed = PackedWeights{kCudaResident, bytes, base + at, keep};
      if (released) released(*w);
      at += aligned(bytes);
    }
  }

  void matmul(const WeightMatrix& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy) override {
    if (w.packed.layout != kCudaResident || !w.packed.data)
      throw std::logic_error(name() + ": matmul of a matrix prepare_matmul did not upload");
    if (n <= 0 || w.rows <= 0) return;
    const auto t = static_cast<uint32_t>(w.type);
    const size_t rb = row_bytes(w.type, w.cols);
    if (cuda::has_q8_kernel(t)) {
      float* act = scratch(act_, cuda::q8_act_bytes(n, w.cols));
      const cuda::DeviceQ8Act a = cuda::q8_act_view(act, n, w.cols);
      check(cuda::quantize_act(x, n, ldx, w.cols, act_scale_mode(w.type), a, stream_), "quantize activations");
      check(cuda::matmul_q8(t, w.packed.data, rb, w.rows, w.cols, a, n, y, ldy, stream_), "matmul");
    } else {
      check(cuda::matmul_f(t, w.packed.data, rb, w.rows, w.cols, x, ldx, n, y, ldy, stream_), "matmul");
    }
  }

  void get_rows(const WeightMatrix& w, const int32_t* ids, int64_t n, float* out, int64_t ldo) override {
    if (n <= 0) return;
    rows_.resize(static_cast<size_t>(n * w.cols));
    for (int64_t t = 0; t < n; ++t)
      dequantize_row(w.type, static_cast<const uint8_t*>(w.data) + static_cast<size_t>(ids[t]) * w.row_stride,
                     rows_.data() + t * w.cols, w.cols);
    check(cudaMemcpy2DAsync(out, sizeof(float) * static_cast<size_t>(ldo), rows_.data(),
                            sizeof(float) * static_cast<size_t>(w.cols), sizeof(float) * static_cast<size_t>(w.cols),
                            static_cast<size_t>(n), cudaMemcpyHostToDevice, stream_),
          "get_rows");
  }

  void rmsnorm(const float* x, int64_t ldx, const float* wt, int64_t rows, int64_t dim, float eps, float* out,
               int64_t ldo) override {
    check(cuda::rmsnorm(x, ldx, wt, rows, dim, eps, out, ldo, stream_), "rmsnorm");
  }
  void rope(float* x, int64_t n, int64_t ld, int64_t heads, int64_t hd, const int32_t* pos,
            const RopeParams& p) override {
    if (n <= 0) return;
    auto* dpos = reinterpret_cast<int32_t*>(scratch(pos_, sizeof(int32_t) * static_cast<size_t>(n)));
    if (capturing_) {
      // A recorded copy reads its source when the graph runs: from pinned memory this pass keeps
      // (every rope of a pass uploads the same positions), never from the caller's pageable array.
      const size_t bytes = sizeof(int32_t) * static_cast<size_t>(n);
      if (pinned_pos_bytes_ < bytes) {
        if (pinned_pos_) retired_pinned_.push_back(pinned_pos_);
        pinned_pos_ = nullptr;
        check(cudaMallocHost(&pinned_pos_, bytes), "rope (pinned positions)");
        pinned_pos_bytes_ = bytes;
      }
      std::memcpy(pinned_pos_, pos, bytes);
      check(cudaMemcpyAsync(dpos, pinned_pos_, bytes, cudaMemcpyHostToDevice, stream_), "rope (positions)");
    } else {
      copy_in(dpos, pos, sizeof(int32_t) * static_cast<size_t>(n));
    }
    check(cuda::rope(x, n, ld, heads, hd, dpos, p.mode == RopeMode::Neox ? 1 : 0, p.n_rot, p.freq_base, p.freq_scale,
                     p.freq_factors, stream_),
          "rope");
  }
  void softmax(float* x, int64_t n) override { check(cuda::softmax(x, n, stream_), "softmax"); }
  void attention(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv, const AttentionShape& s,
                 float scale, float* out, int64_t ldo) override {
    attend(q, ldq, DType::F32, k, v, sizeof(float) * static_cast<size_t>(ldkv), s, scale, out, ldo);
  }
  void attention_rows(const float* q, int64_t ldq, const TypedRows& k, const TypedRows& v, const AttentionShape& s,
                      float scale, float* out, int64_t ldo) override {
    if (k.type != v.type || k.row_stride != v.row_stride)
      throw std::invalid_argument("attention_rows: keys and values must share type and row stride");
    if (!is_kv_type(k.type))
      throw std::invalid_argument(name() + " attention: KV type " + std::string(dtype_name(k.type)) + " unsupported");
    attend(q, ldq, k.type, k.data, v.data, k.row_stride, s, scale, out, ldo);
  }
  void store_rows(const float* x, int64_t n, int64_t ldx, int64_t cols, DType t, void* dst, size_t st) override {
    if (!is_kv_type(t)) throw std::invalid_argument("store_rows: " + std::string(dtype_name(t)) + " is not a KV type");
    check(cuda::store_rows(x, n, ldx, cols, static_cast<uint32_t>(t), dst, st, stream_), "store_rows");
  }
  void load_rows(const void* src, size_t st, int64_t n, int64_t cols, DType t, float* dst, int64_t ldd) override {
    check(cuda::load_rows(src, st, n, cols, static_cast<uint32_t>(t), dst, ldd, stream_), "load_rows");
  }
  void add_bias(float* x, int64_t rows, int64_t ldx, const float* bias, int64_t dim) override {
    check(cuda::add_bias(x, rows, ldx, bias, dim, stream_), "add_bias");
  }
  void silu_mul(const float* g, const float* u, float* out, int64_t n) override {
    check(cuda::silu_mul(g, u, out, n, stream_), "silu_mul");
  }
  void add(const float* a, const float* b, float* out, int64_t n) override {
    check(cuda::add(a, b, out, n, stream_), "add");
  }

 private:
  void attend(const float* q, int64_t ldq, DType kv, const void* k, const void* v, size_t stride,
              const AttentionShape& s, float scale, float* out, int64_t ldo) {
    const cuda::AttnShapeD d{s.n_tokens, s.n_heads, s.n_kv_heads, s.head_dim, s.n_kv};
    void* sc = scratch(attn_, cuda::attention_scratch_bytes(d));
    check(cuda::attention(q, ldq, static_cast<uint32_t>(kv), k, v, stride, d, scale, out, ldo, sc, stream_),
          "attention");
  }
  void activate() { check(cudaSetDevice(dev_), "cudaSetDevice"); }
  void check(cudaError_t e, const char* what) const {
    if (e == cudaSuccess) return;
    cudaGetLastError();
    throw std::runtime_error(name() + " (" + gpu_ + "): " + what + ": " + cudaGetErrorString(e));
  }
  // A device scratch buffer of at least `bytes`, grown with headroom. Work queued on the stream
  // that still reads the old buffer keeps it alive: cudaFree waits for the device.
  // While a pass is recorded, the old buffer is kept until the graph has been launched (the
  // recorded kernels before the growth read it).
  float* scratch(Buffer& b, size_t bytes) {
    if (b.bytes() < bytes) {
      if (capturing_ && b.data()) retired_.push_back(b);
      b = alloc(bytes + bytes / 2);
    }
    return b.as<float>();
  }
  void release_retired() {
    retired_.clear();  // (cudaFree waits for the device: the launched graph has read them)
    for (void* p : retired_pinned_) {
      cudaStreamSynchronize(stream_);
      cudaFreeHost(p);
    }
    retired_pinned_.clear();
  }
  static bool graphs_requested() {
    const char* v = std::getenv("HERD_CUDA_GRAPHS");
    return v && std::strcmp(v, "1") == 0;
  }

  int dev_;
  std::string gpu_;
  cudaStream_t stream_ = nullptr;
  Buffer act_, pos_, attn_;
  cuda::GraphPolicy policy_;
  bool capturing_ = false;
  cudaGraphExec_t exec_ = nullptr;
  void* pinned_pos_ = nullptr;
  size_t pinned_pos_bytes_ = 0;
  std::vector<Buffer> retired_;
  std::vector<void*> retired_pinned_;
  std::vector<float> rows_;
  std::map<const float*, Buffer> vectors_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& opts) {
  return std::make_unique<CudaBackend>(opts.device);
}

}  // namespace herd
