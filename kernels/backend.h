// The kernel seam. A backend (scalar reference, AVX2, AVX-512, NEON, CUDA...) implements the op
// set below and answers supports(op, type); planners and stages ask before they call.
// Ops take explicit shapes and leading dimensions (in elements) so a caller can point them at
// sub-blocks of larger buffers (a KV cache, one head, one stage's slice of a batch).
// Kernels know nothing of ranks, layers or files.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kernels/device.h"
#include "kernels/dtype.h"

namespace herd {

// supports(op, type): the weight type for MatMul/GetRows, the KV storage type for Attention and
// StoreRows, F32 for the activation-only ops.
enum class Op { MatMul, GetRows, RmsNorm, Rope, Softmax, Attention, SiluMul, Add, AddBias, StoreRows };

// Memory one backend allocated on its device (as CTranslate2's StorageView knows its device): a
// stage's KV cache and scratch. Shared ownership, so a view can outlive a resize of its owner.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Device device, std::shared_ptr<void> storage, size_t bytes)
      : device_(device), storage_(std::move(storage)), bytes_(bytes) {}
  Device device() const { return device_; }
  void* data() const { return storage_.get(); }
  size_t bytes() const { return bytes_; }
  template <typename T> T* as() const { return static_cast<T*>(storage_.get()); }

 private:
  Device device_;
  std::shared_ptr<void> storage_;
  size_t bytes_ = 0;
};

// Rows of one storage type in a backend's memory: row r starts at data + r * row_stride bytes.
// The KV cache is read through these (F32, F16 or Q8_0 rows of n_kv_heads * head_dim values).
struct TypedRows {
  DType type = DType::F32;
  const void* data = nullptr;
  size_t row_stride = 0;  // bytes
};

// A copy of a weight matrix that one backend rearranged into a layout its matmul kernels read
// faster (Backend::prepare_matmul), e.g. 16 rows interleaved so one vector lane is one output row.
// Opaque to everyone else. The bytes live in `storage`, shared by the matrices prepared together.
struct PackedWeights {
  uint32_t layout = 0;            // the backend's id of the layout (checked before use; 0 = none)
  size_t size = 0;                // bytes at data
  const uint8_t* data = nullptr;  // null: no packed copy
  std::shared_ptr<const void> storage;
};

// The layout a backend's prepare_matmul would copy one matrix into (Backend::packed_layout): its
// id (0: none), the copy's bytes, and its rows per group. The copy is groups of group_rows rows in
// row order, so the copy of rows [r0, r1) of the matrix, r0 a multiple of group_rows, is bytes
// [r0 / group_rows * G, ...) of the whole copy (G: the bytes of group_rows rows). A copy can then
// be made a slab at a time, into any memory (worker/streamed_weights.cpp writes it to a file).
struct PackedLayout {
  uint32_t id = 0;
  size_t bytes = 0;
  int64_t group_rows = 0;
};

// `bytes` of uninitialized, 64-byte aligned anonymous memory for packed weights, on transparent
// huge pages where the system allows (kernels/packed_weights.cpp says why). Freed with the last
// shared_ptr.
std::shared_ptr<uint8_t> allocate_packed_storage(size_t bytes);

// A 2-D weight matrix in its storage type: `rows` x `cols` values, row-major, each row
// `row_stride` bytes after the previous (row_bytes(type, cols) when packed).
struct WeightMatrix {
  DType type = DType::F32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_stride = 0;
  // Optional: the same matrix in a backend's faster layout (Backend::prepare_matmul); packed.data
  // null when none. `data` stays valid and authoritative: get_rows, the exact path and every other
  // backend read it, and a backend uses `packed` only for a layout id (and size) it knows.
  PackedWeights packed = {};
};

enum class RopeMode { Normal, Neox };  // Normal: rotate pairs (2i, 2i+1) (llama); Neox: (i, i+d/2) (qwen2)

struct RopeParams {
  RopeMode mode = RopeMode::Normal;
  int64_t n_rot = 0;        // rotated dims per head (== head_dim for llama/qwen2)
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;  // linear scaling: position * freq_scale
  // Llama-3.1-style per-dimension frequency divisors (GGUF tensor rope_freqs.weight): theta_i is
  // divided by freq_factors[i]. Null when the model has none.
  const float* freq_factors = nullptr;  // [n_rot / 2]
};

struct AttentionShape {
  int64_t n_tokens = 0;    // query rows in this call
  int64_t n_heads = 0;     // query heads
  int64_t n_kv_heads = 0;  // key/value heads (GQA: n_heads % n_kv_heads == 0)
  int64_t head_dim = 0;
  int64_t n_kv = 0;        // cache rows valid for the *last* query token (its position + 1)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual bool supports(Op op, DType type) const = 0;
  virtual void set_threads(int n_threads) { (void)n_threads; }
  virtual int threads() const { return 1; }  // what set_threads left (1: a backend without a pool)
  // For status pages and logs: "cpu-avx512-q8, 4 threads".
  std::string description() const {
    const int n = threads();
    return name() + ", " + std::to_string(n) + (n == 1 ? " thread" : " threads");
  }

  // The device this backend computes on, and memory there. The host default: 64-byte aligned,
  // uninitialised (pages never touched are never resident: a KV cache costs what it holds).
  virtual Device device() const { return {}; }
  virtual Buffer alloc(size_t bytes);

  // Where each op's pointers live: activations (x, y, out, q, gate, ...) and the KV rows are in
  // this backend's memory (alloc); weight matrices are read through the backend's own copy when
  // prepare_matmul made one (a device backend uploads them there), else `data`; the small weight
  // vectors (norm weights, biases, rope factors) are passed as resident() returned them; token
  // ids (get_rows) and positions (rope) are host memory, as a Batch holds them. A host backend's
  // memory is host memory, so for it these are all the same pointers.
  //
  // Moving bytes between the host and this backend's memory (the Stage's input and output):
  // copy_in: host -> backend, copy_out: backend -> host (complete when it returns), copy: within
  // the backend (no overlap), fill_zero. Host defaults: memcpy / memset.
  virtual void copy_in(void* dst, const void* host_src, size_t bytes);
  virtual void copy_out(void* host_dst, const void* src, size_t bytes);
  virtual void copy(void* dst, const void* src, size_t bytes);
  virtual void fill_zero(void* dst, size_t bytes);
  // A stage's pass over its layers, bracketed for a device that can record it and replay it as one
  // (the CUDA backend's graphs, kernels/cuda/graph_policy.h): begin_pass before the first op of
  // the layers (after the input is in), end_pass(true) after the last (before the output is copied
  // out), end_pass(false) when the pass ends by an exception. `key` identifies the pass's shapes
  // (same key: the same ops on buffers of the same sizes; the values may differ), `rows` its
  // rows. No copy_out within a pass. Host default: nothing.
  virtual void begin_pass(uint64_t key, int64_t rows) {
    (void)key;
    (void)rows;
  }
  virtual void end_pass(bool completed) { (void)completed; }
  // Returns when the work queued so far is complete, so that another queue (a Comm on the same
  // device: NCCL's stream) may read what the ops wrote. Not within a pass. Host default: nothing
  // (a host op is complete when it returns).
  virtual void synchronize() {}

  // A weight vector of n floats as this backend's ops read it. `host` must stay valid and unchanged
  // as long as the backend is used with it (weights do). Host default: `host` itself; a device
  // backend returns its copy, made on first use and kept.
  virtual const float* resident(const float* host, size_t n) {
    (void)n;
    return host;
  }
  // Drops the copy resident() made of `host` (the stage that owned the vector is gone: its address
  // may come back holding another vector, which must not find this copy). Host default: nothing.
  virtual void release_resident(const float* host) { (void)host; }

  // y[t][r] = sum_c W[r][c] * x[t][c]   for t < n_tokens, r < W.rows.
  // F16/BF16 matrices multiply x rounded to f16/bf16 first (llama.cpp's definition of those dot
  // products, which its reference logits depend on); every backend must do the same.
  // x: [n_tokens, ldx] f32 (first W.cols used); y: [n_tokens, ldy] f32 (first W.rows written).
  virtual void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y,
                      int64_t ldy) = 0;

  // Optional, once per stage at load (engine/stage.cpp): sets `packed` of each matrix this backend
  // has a faster matmul layout for (in its current mode) to a copy in that layout, all of them in
  // one allocation (so they can share huge pages); leaves the others unchanged (the default does
  // nothing). matmul gives the same bits with or without the copy, which lives as long as any
  // WeightMatrix holding it. released(part) is called for consecutive row ranges of each matrix
  // (a view: data and rows of the range) once they were copied: the caller may then drop the
  // source pages of a file mapping (they are re-read if `data` is touched again), so the peak
  // memory is the copies plus a few MiB, not twice the weights.
  virtual void prepare_matmul(std::span<WeightMatrix* const> ws,
                              const std::function<void(const WeightMatrix&)>& released = {}) {}
  // What prepare_matmul would make of w in the current mode (PackedLayout above; id 0 when it
  // would leave w unchanged). A matrix whose `packed` already holds bytes of this layout and size,
  // wherever they live (a file mapping), is left as it is by prepare_matmul and used by matmul.
  virtual PackedLayout packed_layout(const WeightMatrix& w) const {
    (void)w;
    return {};
  }

  // out[t][:] = dequantized row ids[t] of W.  out: [n, ldo]. ids (host memory) must be < W.rows (callers check).
  // A backend may read its own `packed` copy instead of `data` (the same values).
  virtual void get_rows(const WeightMatrix& w, const int32_t* ids, int64_t n, float* out, int64_t ldo) = 0;

  // out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight   for t < n_rows; rows of `dim` values.
  virtual void rmsnorm(const float* x, int64_t ldx, const float* weight, int64_t n_rows, int64_t dim, float eps,
                       float* out, int64_t ldo) = 0;

  // In-place rotary embedding. x: [n_tokens, ld_token] holding n_heads heads of head_dim each,
  // contiguous; pos[t] (host memory) is token t's position.
  virtual void rope(float* x, int64_t n_tokens, int64_t ld_token, int64_t n_heads, int64_t head_dim,
                    const int32_t* pos, const RopeParams& p) = 0;

  // In-place softmax over n values (max-subtracted).
  virtual void softmax(float* x, int64_t n) = 0;

  // Causal attention of n_tokens queries against a KV cache.
  //   q:   [n_tokens, n_heads * head_dim] (row stride ldq)
  //   k,v: [n_ctx, n_kv_heads * head_dim] (row stride ldkv), rows 0..n_kv-1 valid
  //   query t (0-based in this call) sees cache rows 0 .. n_kv - n_tokens + t (inclusive)
  //   out: [n_tokens, n_heads * head_dim] (row stride ldo)
  //   scale: usually 1/sqrt(head_dim)
  virtual void attention(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv,
                         const AttentionShape& s, float scale, float* out, int64_t ldo) = 0;

  // Attention whose keys and values are rows of any type this backend supports(Op::Attention, t)
  // for (k.type == v.type, same row_stride): F32 rows go straight to attention(); others are
  // converted to f32 first (load_rows), rows 0..n_kv-1 only. Same bits as attention() on the
  // converted values.
  virtual void attention_rows(const float* q, int64_t ldq, const TypedRows& k, const TypedRows& v,
                              const AttentionShape& s, float scale, float* out, int64_t ldo);

  // dst row t (at dst + t * dst_stride bytes) = x row t (cols f32 values, row stride ldx) stored as
  // `type` (F32 copied, F16 rounded to nearest even, Q8_0 quantized as kernels/quant.h does), for
  // t < n. The KV cache write: one row per token.
  virtual void store_rows(const float* x, int64_t n, int64_t ldx, int64_t cols, DType type, void* dst,
                          size_t dst_stride);

  // dst[t][0..cols) = the values of `type` rows at src + t * src_stride, as f32 (dequantize_row).
  virtual void load_rows(const void* src, size_t src_stride, int64_t n, int64_t cols, DType type, float* dst,
                         int64_t ldd);

  // x[t][i] += bias[i] for t < n_rows, i < dim (qwen2's q/k/v biases).
  virtual void add_bias(float* x, int64_t n_rows, int64_t ldx, const float* bias, int64_t dim);

  // out[i] = silu(gate[i]) * up[i]  (out may alias gate or up)
  virtual void silu_mul(const float* gate, const float* up, float* out, int64_t n) = 0;

  // out[i] = a[i] + b[i]  (out may alias a or b)
  virtual void add(const float* a, const float* b, float* out, int64_t n) = 0;

 private:
  std::vector<float> kv_scratch_;  // attention_rows: [2, n_kv, kv_dim] converted keys and values
};

// The KV storage types a stage may use (--kv-type): F32, F16, Q8_0.
bool is_kv_type(DType t);

// The scalar reference backend: straightforward loops, the oracle every other backend is tested against.
std::unique_ptr<Backend> make_reference_backend();

}  // namespace herd
