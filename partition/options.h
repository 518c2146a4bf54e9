// What the user asks of a plan: context, parallel sequences, KV dtype, prompt length, margins.
#pragma once

#include <cstdint>
#include <string>

#include "engine/tp_sync.h"

namespace herd::partition {

struct PlanOptions {
  int64_t n_ctx = 4096;          // context per sequence the KV cache is sized for
  int64_t n_parallel = 1;        // sequences in flight (each has its own KV cache; pipeline micro-batches)
  // Bytes per K/V element: 4 (f32), 2 (f16: what `herd plan`, run, chat and workers default to),
  // 1.0625 (q8_0). The struct keeps f32, the largest, for callers that set nothing.
  double kv_elem_bytes = 4;
  std::string kv_type = "f32";
  int64_t n_batch = 512;         // prompt tokens per forward (scratch size)
  int64_t n_prompt = 512;        // prompt length for the time-to-first-token prediction
  double act_bytes = 4;          // bytes per activation element on the wire (f32 hidden state)
  double safety = 0.05;          // margin: this fraction of a stage's weights + KV + scratch (at least 64 MiB)
  bool keep_order = false;       // `optimal`: devices stay in the cluster's order (a fixed pipeline such as
                                 // `--workers`), each used or skipped; exact for that order
  // Tensor parallelism (partition/tp_model.h). `optimal` also tries groups of consecutive devices as
  // tensor-parallel stages when max_tp >= 2 (groups of at most max_tp devices); 1 keeps every stage
  // on one device, what a caller that runs only pipelines must ask for.
  int64_t max_tp = 1;
  TpSync tp_sync = TpSync::F32;  // precision of the partial sums on the wire (--tp-sync)
  // Devices with a disk speed (DeviceProfile::disk_Bps) may hold more layers than their memory,
  // streaming the rest from disk every token (memory_model.h stage_fit); false: --no-stream.
  bool stream = true;
};

// "f32" | "f16" | "bf16" | "q8_0" -> bytes per element; throws std::invalid_argument otherwise.
double kv_elem_bytes(const std::string& kv_type);

}  // namespace herd::partition
