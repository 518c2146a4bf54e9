// The KV cache of one stage's layers for one sequence. Memory is allocated uninitialised so
// that a worker's RSS grows with the tokens actually cached, not with the context size.
#pragma once

#include <cstdint>
#include <memory>

namespace herd {

class KvCache {
 public:
  KvCache(int64_t n_layers, int64_t n_ctx, int64_t kv_dim);

  int64_t n_layers() const { return n_layers_; }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t kv_dim() const { return kv_dim_; }
  uint64_t bytes() const { return 2ull * sizeof(float) * n_layers_ * n_ctx_ * kv_dim_; }

  // Row `pos` of layer `l` (l is the stage-local layer index).
  float* k(int64_t l, int64_t pos) { return k_.get() + (l * n_ctx_ + pos) * kv_dim_; }
  float* v(int64_t l, int64_t pos) { return v_.get() + (l * n_ctx_ + pos) * kv_dim_; }

 private:
  int64_t n_layers_, n_ctx_, kv_dim_;
  std::unique_ptr<float[]> k_;  // [n_layers, n_ctx, kv_dim]
  std::unique_ptr<float[]> v_;  // [n_layers, n_ctx, kv_dim]
};

}  // namespace herd
