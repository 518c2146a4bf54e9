#include "engine/kv_cache.h"

#include <cstdio>
#include <fstream>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>

namespace herd {
namespace {

// MemTotal + SwapTotal from /proc/meminfo in bytes; 0 when unknown. (Not host_probe's reader:
// kv_cache.cpp is also built alone, e.g. into the NEON cross tests.)
uint64_t memory_and_swap_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string line;
  uint64_t total = 0;
  while (std::getline(f, line)) {
    if (line.rfind("MemTotal:", 0) != 0 && line.rfind("SwapTotal:", 0) != 0) continue;
    std::istringstream ls(line.substr(line.find(':') + 1));
    uint64_t kb = 0;
    ls >> kb;
    total += kb * 1024;
  }
  return total;
}

}  // namespace

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
  // Sized before allocating: a context far past this host's memory is a clear error, not a
  // std::bad_alloc (or, with overcommit, the OOM killer while the zeroed pages are touched).
  // Shapes are bounded by the callers (context <= 2^24, slots <= 4096, model rows validated), so
  // the double product is exact enough and cannot overflow.
  const double need = 2.0 * static_cast<double>(n_layers) * static_cast<double>(n_seq) * static_cast<double>(n_ctx) *
                      static_cast<double>(row_bytes_);
  auto too_large = [&](const std::string& why) {
    char gib[64];
    std::snprintf(gib, sizeof gib, "%.1f GiB", need / (1024.0 * 1024.0 * 1024.0));
    return std::runtime_error("the KV cache for a context of " + std::to_string(n_ctx) + " tokens x " +
                              std::to_string(n_seq) + " sequence(s) needs " + gib + " (" + std::to_string(n_layers) +
                              " layers, " + std::string(dtype_name(type)) + "): " + why + " (lower -c or --parallel)");
  };
  const uint64_t mem = memory_and_swap_bytes();
  if (need >= 1.8e19 || (mem > 0 && need > static_cast<double>(mem))) {
    char have[64];
    std::snprintf(have, sizeof have, "%.1f GiB", static_cast<double>(mem) / (1024.0 * 1024.0 * 1024.0));
    throw too_large(std::string("more than this host's memory and swap (") + have + ")");
  }
  const size_t n = static_cast<size_t>(n_layers) * n_seq * n_ctx * row_bytes_;
  try {
    k_ = backend.alloc(n);
    v_ = backend.alloc(n);
  } catch (const std::bad_alloc&) {
    throw too_large("cannot allocate that much");
  }
  len_.assign(static_cast<size_t>(n_seq), 0);
}

DType parse_kv_type(const std::string& name) {
  if (name == "f32") return DType::F32;
  if (name == "f16") return DType::F16;
  if (name == "q8_0") return DType::Q8_0;
  throw std::invalid_argument("unknown KV type '" + name + "' (choose f32, f16 or q8_0)");
}

}  // namespace herd
