// GuardedDevice: a stand-in device backend for CPU tests of the device seam (kernels/backend.h,
// "Where each op's pointers live"). Its memory is an arena mapped PROT_NONE except while one of its
// own ops runs, so a host access to it (a std::memcpy into "GPU" memory) dies with SIGSEGV, and
// every op records a violation when a pointer is on the wrong side (device vs host). Inside, the
// ops are the reference backend's on the arena's bytes: a run on it gives the reference's bits.
// Used by tests/engine/test_device_seam.cpp and tests/integration/test_device_worker.cpp.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/reference_backend.h"
#include "kernels/quant.h"

namespace herd::test {

constexpr uint32_t kGuardedLayout = 0x47524431;  // "GRD1": a matrix uploaded into the arena

class GuardedDevice : public Backend {
 public:
  explicit GuardedDevice(size_t arena_bytes = size_t(1) << 30) : cap_(arena_bytes) {
    ++made;
    void* p = mmap(nullptr, cap_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("GuardedDevice: mmap failed");
    base_ = static_cast<uint8_t*>(p);
  }
  ~GuardedDevice() override {
    munmap(base_, cap_);
    if (!violations_.empty()) violations_seen += static_cast<int>(violations_.size());
  }
  // Across every GuardedDevice destroyed so far (one a worker made and dropped included).
  static inline std::atomic<int> violations_seen{0};
  static inline std::atomic<int> made{0};

  std::string name() const override { return "guarded-device"; }
  // A device that is not the host (the kind a Stage treats as a device); never a real GPU.
  Device device() const override { return {Device::Kind::Cuda, 99}; }
  bool supports(Op op, DType t) const override { return ref_->supports(op, t); }

  Buffer alloc(size_t bytes) override {
    const size_t at = (used_ + 63) / 64 * 64;
    if (at + bytes > cap_) throw std::bad_alloc();
    used_ = at + bytes;
    return Buffer(device(), std::shared_ptr<void>(base_ + at, [](void*) {}), bytes);
  }

  bool in_arena(const void* p) const {
    const auto* b = static_cast<const uint8_t*>(p);
    return b >= base_ && b < base_ + cap_;
  }
  const std::vector<std::string>& violations() const { return violations_; }
  int uploads() const { return uploads_; }
  size_t residents() const { return vectors_.size(); }  // resident() copies held
  void lock_for_tests() { protect(PROT_NONE); }
  uint8_t* arena() const { return base_; }

  void copy_in(void* dst, const void* src, size_t n) override {
    Open o(*this);
    need(dst, true, "copy_in dst");
    need(src, false, "copy_in src");
    std::memcpy(dst, src, n);
  }
  // The passes (Backend::begin_pass/end_pass) as events: "begin KEY ROWS", "end 1|0", "copy_out";
  // a copy_out inside a pass, a nested begin or an end without a begin is a violation.
  void begin_pass(uint64_t key, int64_t rows) override {
    if (in_pass_) violations_.push_back("begin_pass inside a pass");
    in_pass_ = true;
    events.push_back("begin " + std::to_string(key) + " " + std::to_string(rows));
  }
  void end_pass(bool completed) override {
    if (!in_pass_) violations_.push_back("end_pass without begin_pass");
    in_pass_ = false;
    events.push_back(completed ? "end 1" : "end 0");
  }
  std::vector<std::string> events;
  int throw_at_matmul = -1;  // the Nth matmul from now throws (a failing device op), -1: none

  void copy_out(void* dst, const void* src, size_t n) override {
    if (in_pass_) violations_.push_back("copy_out inside a pass (a recorded pass cannot wait for its own output)");
    events.push_back("copy_out");
    Open o(*this);
    need(dst, false, "copy_out dst");
    need(src, true, "copy_out src");
    std::memcpy(dst, src, n);
  }
  // "sync" in the events; inside a pass it is a violation (a recorded pass cannot wait).
  void synchronize() override {
    if (in_pass_) violations_.push_back("synchronize inside a pass");
    events.push_back("sync");
  }
  void copy(void* dst, const void* src, size_t n) override {
    Open o(*this);
    need(dst, true, "copy dst");
    need(src, true, "copy src");
    std::memcpy(dst, src, n);
  }
  void fill_zero(void* dst, size_t n) override {
    Open o(*this);
    need(dst, true, "fill_zero");
    std::memset(dst, 0, n);
  }
  const float* resident(const float* host, size_t n) override {
    need(host, false, "resident (a weight vector the host holds)");
    auto it = vectors_.find(host);
    if (it != vectors_.end()) return it->second;
    Buffer b = alloc(n * sizeof(float));
    {
      Open o(*this);
      std::memcpy(b.data(), host, n * sizeof(float));
    }
    return vectors_[host] = b.as<float>();
  }
  void release_resident(const float* host) override { vectors_.erase(host); }

  void prepare_matmul(std::span<WeightMatrix* const> ws,
                      const std::function<void(const WeightMatrix&)>& released) override {
    for (WeightMatrix* w : ws) {
      const size_t rb = row_bytes(w->type, w->cols), bytes = rb * static_cast<size_t>(w->rows);
      Buffer b = alloc(bytes);
      {
        Open o(*this);
        for (int64_t r = 0; r < w->rows; ++r)
          std::memcpy(b.as<uint8_t>() + r * rb, static_cast<const uint8_t*>(w->data) + r * w->row_stride, rb);
      }
      w->packed = PackedWeights{kGuardedLayout, bytes, b.as<uint8_t>(),
                                std::shared_ptr<const void>(b.data(), [](const void*) {})};
      ++uploads_;
      if (released) released(*w);
    }
  }

  void matmul(const WeightMatrix& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy) override {
    if (throw_at_matmul >= 0 && throw_at_matmul-- == 0) throw std::runtime_error("guarded-device: a failing op");
    Open o(*this);
    need(x, true, "matmul x");
    need(y, true, "matmul y");
    if (w.packed.layout != kGuardedLayout) {
      violations_.push_back("matmul of a matrix that was never uploaded");
      return;
    }
    WeightMatrix d = w;
    d.data = w.packed.data;
    d.row_stride = row_bytes(w.type, w.cols);
    d.packed = {};
    ref_->matmul(d, x, n, ldx, y, ldy);
  }
  // As the CUDA backend will: the few rows a batch needs, dequantized from the host's copy, then
  // moved in.
  void get_rows(const WeightMatrix& w, const int32_t* ids, int64_t n, float* out, int64_t ldo) override {
    need(ids, false, "get_rows ids");
    std::vector<float> rows(static_cast<size_t>(n * w.cols));
    ref_->get_rows(w, ids, n, rows.data(), w.cols);
    Open o(*this);
    need(out, true, "get_rows out");
    for (int64_t t = 0; t < n; ++t) std::memcpy(out + t * ldo, rows.data() + t * w.cols, sizeof(float) * w.cols);
  }
  void rmsnorm(const float* x, int64_t ldx, const float* wt, int64_t rows, int64_t dim, float eps, float* out,
               int64_t ldo) override {
    Open o(*this);
    need(x, true, "rmsnorm x");
    need(wt, true, "rmsnorm weight");
    need(out, true, "rmsnorm out");
    ref_->rmsnorm(x, ldx, wt, rows, dim, eps, out, ldo);
  }
  void rope(float* x, int64_t n, int64_t ld, int64_t heads, int64_t hd, const int32_t* pos,
            const RopeParams& p) override {
    Open o(*this);
    need(x, true, "rope x");
    need(pos, false, "rope pos");
    if (p.freq_factors) need(p.freq_factors, true, "rope freq_factors");
    ref_->rope(x, n, ld, heads, hd, pos, p);
  }
  void softmax(float* x, int64_t n) override {
    Open o(*this);
    need(x, true, "softmax");
    ref_->softmax(x, n);
  }
  void attention(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv, const AttentionShape& s,
                 float scale, float* out, int64_t ldo) override {
    Open o(*this);
    for (const void* p : {static_cast<const void*>(q), static_cast<const void*>(k), static_cast<const void*>(v),
                          static_cast<const void*>(out)})
      need(p, true, "attention");
    ref_->attention(q, ldq, k, v, ldkv, s, scale, out, ldo);
  }
  void attention_rows(const float* q, int64_t ldq, const TypedRows& k, const TypedRows& v, const AttentionShape& s,
                      float scale, float* out, int64_t ldo) override {
    Open o(*this);
    need(q, true, "attention_rows q");
    need(k.data, true, "attention_rows k (the KV cache)");
    need(v.data, true, "attention_rows v (the KV cache)");
    need(out, true, "attention_rows out");
    ref_->attention_rows(q, ldq, k, v, s, scale, out, ldo);
  }
  void store_rows(const float* x, int64_t n, int64_t ldx, int64_t cols, DType t, void* dst, size_t st) override {
    Open o(*this);
    need(x, true, "store_rows x");
    need(dst, true, "store_rows dst (the KV cache)");
    ref_->store_rows(x, n, ldx, cols, t, dst, st);
  }
  void load_rows(const void* src, size_t st, int64_t n, int64_t cols, DType t, float* dst, int64_t ldd) override {
    Open o(*this);
    need(src, true, "load_rows src");
    need(dst, true, "load_rows dst");
    ref_->load_rows(src, st, n, cols, t, dst, ldd);
  }
  void add_bias(float* x, int64_t rows, int64_t ldx, const float* bias, int64_t dim) override {
    Open o(*this);
    need(x, true, "add_bias x");
    need(bias, true, "add_bias bias");
    ref_->add_bias(x, rows, ldx, bias, dim);
  }
  void silu_mul(const float* g, const float* u, float* out, int64_t n) override {
    Open o(*this);
    for (const float* p : {g, u, static_cast<const float*>(out)}) need(p, true, "silu_mul");
    ref_->silu_mul(g, u, out, n);
  }
  void add(const float* a, const float* b, float* out, int64_t n) override {
    Open o(*this);
    for (const float* p : {a, b, static_cast<const float*>(out)}) need(p, true, "add");
    ref_->add(a, b, out, n);
  }

 private:
  // The arena is readable and writable only while one of our ops runs (nested ones included).
  struct Open {
    GuardedDevice& g;
    explicit Open(GuardedDevice& d) : g(d) {
      if (g.depth_++ == 0) g.protect(PROT_READ | PROT_WRITE);
    }
    ~Open() {
      if (--g.depth_ == 0) g.protect(PROT_NONE);
    }
  };
  void protect(int prot) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t len = (used_ + page - 1) / page * page;
    if (len && mprotect(base_, len, prot) != 0) throw std::runtime_error("GuardedDevice: mprotect failed");
  }
  void need(const void* p, bool device_side, const char* what) {
    if (p && in_arena(p) != device_side)
      violations_.push_back(std::string(what) + (device_side ? ": a host pointer" : ": a device pointer"));
  }

  std::unique_ptr<Backend> ref_ = make_reference_backend();
  uint8_t* base_ = nullptr;
  size_t cap_ = 0, used_ = 0;
  int depth_ = 0;
  bool in_pass_ = false;
  int uploads_ = 0;
  std::map<const float*, const float*> vectors_;
  std::vector<std::string> violations_;
};

}  // namespace herd::test
