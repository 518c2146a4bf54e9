#include "engine/kv_cache.h"

#include <stdexcept>
#include <string>

namespace herd {

KvCache::KvCache(int64_t n_layers, int64_t n_ctx, int64_t kv_dim)
    : n_layers_(n_layers), n_ctx_(n_ctx), kv_dim_(kv_dim) {
  if (n_layers < 0 || n_ctx <= 0 || kv_dim <= 0)
    throw std::invalid_argument("KvCache: invalid shape " + std::to_string(n_layers) + "x" + std::to_string(n_ctx) +
                                "x" + std::to_string(kv_dim));
  const size_t n = static_cast<size_t>(n_layers) * n_ctx * kv_dim;
  // new float[n] (no "()"): uninitialised, so untouched pages are never resident.
  k_.reset(new float[n]);
  v_.reset(new float[n]);
}

}  // namespace herd
