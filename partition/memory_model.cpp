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

uint64_t safety_margin(const DeviceProfile& d, uint64_t contents, const PlanOptions& o) {
  const uint64_t floor = std::min<uint64_t>(64ull << 20, d.free_bytes / 4);
  return std::max<uint64_t>(floor, static_cast<uint64_t>(o.safety * static_cast<double>(contents)));
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
  s.margin = safety_margin(d, s.weights + s.kv + s.scratch, o);
  return s;
}

namespace {
// The worker asks for at least this much memory for the pieces of its streamed matrices.
constexpr uint64_t kMinStreamWindow = 4ull << 20;

// What a streaming stage reads from disk: layers [from, end), and the output matrix when the stage
// holds it (the worker streams every matrix of the stage it repacks). `freed`: the bytes the stage
// no longer holds in memory: those, and the embedding table, whose rows stay in the GGUF's file
// mapping (a token touches one row; the worker never copies the table). A tied output matrix is
// the table, counted once.
struct Streamed {
  uint64_t bytes = 0, widest = 0, freed = 0;
};
Streamed streamed_of(const ModelShape& m, int64_t first, int64_t from, int64_t end) {
  Streamed s;
  if (from >= end) return s;
  for (int64_t l = from; l < end; ++l) {
    s.bytes += m.layer_bytes[static_cast<size_t>(l)];
    s.widest = std::max(s.widest, m.layer_bytes[static_cast<size_t>(l)]);
  }
  s.freed = s.bytes;
  const bool tied = m.config.tied_embeddings;
  if (first == 0) s.freed += m.embd_bytes;
  if (end == m.n_layers()) {
    s.bytes += m.output_matrix.bytes;
    s.widest = std::max(s.widest, m.output_matrix.bytes);
    // (never more than the stage counts for it: output_bytes holds output.weight, embd_bytes the tied table)
    if (!(tied && first == 0)) s.freed += std::min(m.output_matrix.bytes, tied ? m.embd_bytes : m.output_bytes);
  }
  return s;
}

// `full` (stage_memory of the whole range) with s's matrices on disk. The worker
// (worker/shard_budget.cpp) cuts them into pieces of a quarter of what the rest of the stage leaves
// of its budget and keeps as many in memory as fit, so the window is what is left: up to the
// widest two (the one computing and the next), at least kMinStreamWindow.
StageMemory without_streamed(StageMemory full, const DeviceProfile& d, const Streamed& s, const PlanOptions& o) {
  full.weights -= s.freed;
  full.margin = safety_margin(d, full.weights + full.kv + full.scratch, o);
  return full;
}
StageMemory with_streamed(StageMemory full, const DeviceProfile& d, const Streamed& s, const PlanOptions& o) {
  full = without_streamed(full, d, s, o);
  const uint64_t left = d.free_bytes > full.total() ? d.free_bytes - full.total() : 0;
  full.weights += std::min({2 * s.widest, s.bytes, std::max(left, kMinStreamWindow)});
  return full;
}
}  // namespace

StreamedRead streamed_read(const ModelShape& m, int64_t first, int64_t end, int64_t resident) {
  const Streamed s = streamed_of(m, first, first + resident, end);
  return {s.bytes, s.widest};
}

uint64_t stream_window_room(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end, int64_t resident,
                            const PlanOptions& o) {
  const StageMemory rest =
      without_streamed(stage_memory(m, d, first, end, o), d, streamed_of(m, first, first + resident, end), o);
  return d.free_bytes > rest.total() ? d.free_bytes - rest.total() : 0;
}

StageMemory streamed_stage_memory(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end,
                                  int64_t resident, const PlanOptions& o) {
  return with_streamed(stage_memory(m, d, first, end, o), d, streamed_of(m, first, first + resident, end), o);
}

StageFit stage_fit(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end, const PlanOptions& o) {
  const int64_t n = end - first;
  const StageMemory full = stage_memory(m, d, first, end, o);
  if (fits(full, d)) return {true, n, 0};
  if (!o.stream || !(d.disk_Bps > 0) || n <= 0) return {};
  // As a worker over its --mem-budget does (worker/shard_budget.cpp): the most leading layers that
  // leave room for the window stay resident, the rest (and the output matrix) stream. Streaming
  // everything needs the least memory, so when that does not fit nothing does; the largest count
  // that fits is found by a scan from the top (the window term makes fitting not quite monotone).
  if (!fits(with_streamed(full, d, streamed_of(m, first, first, end), o), d)) return {};
  for (int64_t r = n - 1; r > 0; --r)
    if (fits(with_streamed(full, d, streamed_of(m, first, first + r, end), o), d)) return {true, r, n - r};
  return {true, 0, n};
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
