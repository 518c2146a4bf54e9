#include "engine/kv_cache.h"

#include <stdexcept>
#include <string>

namespace herd {

KvCache::KvCache(Backend& backend, int64_t n_layers, int64_t n_seq, int64_t n_ctx, int64_t kv_dim, DType type)
    : n_layers_(n_layers), n_seq_(n_seq), n_ctx_(n_ctx), kv_dim_(kv_dim), type_(type), row_bytes_(0) {
  if (n_layers < 0 || n_seq <= 0 || n_ctx <= 0 || kv_dim <= 0)
    throw std::invalid_argument("KvCache: invalid shape " + std::to_string(n_layers) + " layers x " +
                                std::to_string(n_seq) + " sequences x " + std::to_string(n_ctx) + " x " +
                                std::to_string(kv_dim));
  if (!is_kv_type(type)) throw std::invalid_argument("KV type must be f32, f16 or q8_0");
  if (kv_dim % block_size(type) != 0)
    throw std::invalid_argument("KV type " + std::string(dtype_name(type)) + " needs rows of a multiple of " +
                                std::to_string(block_size(type)) + " values; this model's are " +
                                std::to_string(kv_dim) + " (use --kv-type f16)");
  if (!backend.supports(Op::Attention, type) || !backend.supports(Op::StoreRows, type))
    throw std::invalid_argument(backend.name() + " has no attention over " + std::string(dtype_name(type)) + " KV");
  row_bytes_ = herd::row_bytes(type, kv_dim);
  const size_t n = static_cast<size_t>(n_layers) * n_seq * n_ctx * row_bytes_;
  k_ = backend.alloc(n);
  v_ = backend.alloc(n);
  len_.assign(static_cast<size_t>(n_seq), 0);
}

DType parse_kv_type(const std::string& name) {
  if (name == "f32") return DType::F32;
  if (name == "f16") return DType::F16;
  if (name == "q8_0") return DType::Q8_0;
  throw std::invalid_argument("unknown KV type '" + name + "' (choose f32, f16 or q8_0)");
}

}  // namespace herd
