#include "partition/memory_model.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <stdexcept>

namespace herd::partition {

double kv_elem_bytes(const std::string& kv_type) {
  std::string t;
  for (char ch : kv_type) t += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (t == "f32") return 4;
  if (t == "f16" || t == "bf16") return 2;
  if (t == "q8_0") return 34.0 / 32.0;
  throw std::invalid_argument("unknown KV type '" + kv_type + "' (f32, f16, bf16, q8_0)");
}

uint64_t kv_bytes(const ModelShape& m, int64_t n_layers, const PlanOptions& o) {
  const double per = static_cast<double>(m.kv_bytes_per_token_layer(o.kv_elem_bytes));
  return static_cast<uint64_t>(std::ceil(per * static_cast<double>(n_layers) * static_cast<double>(o.n_ctx) *
                                         static_cast<double>(o.n_parallel)));
}

StageMemory stage_memory(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end, const PlanOptions& o) {
  const auto& c = m.config;
  StageMemory s;
  s.weights = m.stage_bytes(first, end);
  s.kv = kv_bytes(m, end - first, o);
  const uint64_t nb = static_cast<uint64_t>(std::min(o.n_batch, std::max<int64_t>(o.n_ctx, 1)));
  // A mixture of experts: each token's gate/up activations for its n_expert_used experts and the router's
  // n_expert logits instead of the dense FFN's 2 x n_ff.
  const int64_t ffn = c.is_moe() ? 2 * c.n_expert_used * c.n_ff_exp + c.n_expert : 2 * c.n_ff;
  if (end > first)
    s.scratch = 4ull * nb * static_cast<uint64_t>(2 * c.n_embd + 2 * c.q_dim() + 2 * c.kv_dim() + ffn);
  if (end == m.n_layers()) s.scratch += 4ull * static_cast<uint64_t>(c.n_vocab) * static_cast<uint64_t>(o.n_parallel);
  s.overhead = d.overhead_bytes;
  s.margin = std::max<uint64_t>(64ull << 20,
                                static_cast<uint64_t>(o.safety * static_cast<double>(s.weights + s.kv + s.scratch)));
  return s;
}

namespace {
// `full` (stage_memory of the whole range) with `streamed` bytes of layers on disk, the widest
// of them `widest` bytes: a window of two of them in memory (one when only one streams).
StageMemory with_streamed(StageMemory s, uint64_t streamed, uint64_t widest, int64_t n_streamed, const PlanOptions& o) {
  s.weights = s.weights - streamed + (n_streamed >= 2 ? 2 * widest : streamed);
  s.margin = std::max<uint64_t>(64ull << 20,
                                static_cast<uint64_t>(o.safety * static_cast<double>(s.weights + s.kv + s.scratch)));
  return s;
}
}  // namespace

StageMemory streamed_stage_memory(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end,
                                  int64_t resident, const PlanOptions& o) {
  uint64_t streamed = 0, widest = 0;
  for (int64_t l = first + resident; l < end; ++l) {
    streamed += m.layer_bytes[static_cast<size_t>(l)];
    widest = std::max(widest, m.layer_bytes[static_cast<size_t>(l)]);
  }
  return with_streamed(stage_memory(m, d, first, end, o), streamed, widest, end - first - resident, o);
}

StageFit stage_fit(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end, const PlanOptions& o) {
  const int64_t n = end - first;
  const StageMemory full = stage_memory(m, d, first, end, o);
  if (fits(full, d)) return {true, n, 0};
  if (!o.stream || !(d.disk_Bps > 0) || n <= 0) return {};
  // Every layer streams, as a worker over its --mem-budget does (worker/streamed_weights.h: it
  // keeps no resident prefix; every token reads the whole shard again).
  uint64_t streamed = 0, widest = 0;
  for (int64_t l = first; l < end; ++l) {
    streamed += m.layer_bytes[static_cast<size_t>(l)];
    widest = std::max(widest, m.layer_bytes[static_cast<size_t>(l)]);
  }
  if (fits(with_streamed(full, streamed, widest, n, o), d)) return {true, 0, n};
  return {};
}

int64_t max_layers_from(const ModelShape& m, const DeviceProfile& d, int64_t first, const PlanOptions& o) {
  // Memory grows with the range (streaming: its KV cache does), so binary search the largest end that fits.
  int64_t lo = first, hi = m.n_layers();
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (stage_fit(m, d, first, mid, o).fits) lo = mid;
    else hi = mid - 1;
  }
  return lo - first;
}

}  // namespace herd::partition
