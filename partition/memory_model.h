// Memory a stage needs on its device. Everything is in bytes; `fits` compares against the
// device's free memory (what the cluster file says herd may use).
//
//   weights   exact tensor bytes of the stage's layers (+ token_embd on the first stage,
//             + output_norm/output on the last; a tied model's last stage holds token_embd too)
//   kv        2 (K, V) x layers x n_ctx x kv_dim x kv element bytes x n_parallel
//   scratch   activations for one n_batch forward: x, cur, q, k, v, attn, gate, up rows (f32),
//             and logits n_vocab x n_parallel on the last stage (attention streams over the cache:
//             its per-thread score rows are negligible)
//   overhead  the device's runtime overhead (CUDA context, process), from its profile
//   margin    `safety` x (weights + kv + scratch), at least min(64 MiB, a quarter of the device's free
//             memory: a 100 MiB worker is not left 36 MiB)
#pragma once

#include <cstdint>

#include "partition/model_shape.h"
#include "partition/options.h"
#include "partition/profile.h"

namespace herd::partition {

// The safety margin of `contents` bytes (weights + kv + scratch) on device d.
uint64_t safety_margin(const DeviceProfile& d, uint64_t contents, const PlanOptions& o);

struct StageMemory {
  uint64_t weights = 0, kv = 0, scratch = 0, overhead = 0, margin = 0;
  uint64_t total() const { return weights + kv + scratch + overhead + margin; }
};

StageMemory stage_memory(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end, const PlanOptions& o);
inline bool fits(const StageMemory& s, const DeviceProfile& d) { return s.total() <= d.free_bytes; }

// KV bytes of `n_layers` layers for the options' context and parallel sequences.
uint64_t kv_bytes(const ModelShape& m, int64_t n_layers, const PlanOptions& o);

// Streaming from disk ([offload]). A stage whose weights do not fit runs on a device with a disk
// speed (DeviceProfile::disk_Bps > 0, and PlanOptions::stream) by reading its layers from the
// model file every token, as a worker over its --mem-budget does (worker/shard_budget.cpp): its
// first `resident` layers stay in memory, the other `streamed` ones (and the output matrix on the
// last stage) are read again every token. Its memory is the resident layers, the stage's other
// tensors (norms; the embedding table stays in the file mapping, a row a token), a window for the
// streamed pieces (what the rest leaves, up to twice the widest streamed matrix set, at least
// 4 MiB), the KV cache of all its layers, scratch, overhead and margin; `resident` is the largest
// count for which that fits. fits = false when even streaming every layer does not fit.
// (streamed_stage_memory prices any resident count.)
struct StageFit {
  bool fits = false;
  int64_t resident = 0, streamed = 0;
};
StageFit stage_fit(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end, const PlanOptions& o);
// The memory of [first, end) with its first `resident` layers in memory and the rest streamed.
StageMemory streamed_stage_memory(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end,
                                  int64_t resident, const PlanOptions& o);

// What a streaming stage [first, end) whose first `resident` layers stay in memory reads from disk
// per token (its other layers, and the output matrix on the last stage), and the largest of those.
struct StreamedRead {
  uint64_t bytes = 0, widest = 0;
};
StreamedRead streamed_read(const ModelShape& m, int64_t first, int64_t end, int64_t resident);
// The memory left for that stage's window of pieces being read: the device's free memory less
// everything else streamed_stage_memory counts (0 when that alone is over).
uint64_t stream_window_room(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end, int64_t resident,
                            const PlanOptions& o);

// The most layers starting at `first` the device can hold, streaming where it may (0 when not
// even one fits).
int64_t max_layers_from(const ModelShape& m, const DeviceProfile& d, int64_t first, const PlanOptions& o);

}  // namespace herd::partition
