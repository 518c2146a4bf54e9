// Predicted times. Decode is memory-bound: a stage reads its weights once per token (a mixture of
// experts: all but the experts, plus n_expert_used of n_expert of them: layer_matrix_bytes and
// ModelShape::layer_read_bytes(l, 1)), plus
// its KV cache up to the current position; if its FLOPs at the device's matmul rate take longer,
// that counts instead (per layer: max of the two), plus a fixed cost per kernel call:
//   layer = max(sum over the layer's matrices of bytes / matvec rate of their type
//               + other weight bytes (norms) / bw + KV bytes at pos / attention rate,
//               FLOPs / flops) + kOpsPerLayer x op_overhead
// where the matvec and attention rates and the op overhead are what `herd probe` measured
// (a hand-written profile without them uses bw for both rates and no overhead).
// Decode predictions are at the mean position of a full context (n_ctx / 2).
// Prefill is compute-bound: FLOPs of n_prompt tokens (matmuls + causal attention) at the
// device's rate, but never faster than reading the weights once per n_batch chunk (with experts:
// the expected share of them a chunk's tokens route to, ModelShape::layer_read_bytes).
// A hop moves one hidden state [n_tokens, n_embd] (act_bytes each) over the link: latency +
// bytes / bandwidth. The coordinator sends token ids to stage 0 and gets the sampled token back
// from the last stage (latency only, a few bytes).
#pragma once

#include <cstdint>
#include <vector>

#include "partition/model_shape.h"
#include "partition/options.h"
#include "partition/profile.h"

namespace herd::partition {

// Kernel calls of one decoder layer in engine/stage.cpp (the llama recipe) at decode: 2 rmsnorm, 7 matmul (q, k, v,
// o, gate, up, down), 2 rope, 1 attention, 1 silu_mul, 2 residual adds (+3 bias adds for qwen2).
inline constexpr int kOpsPerLayer = 15;
inline constexpr int kOpsBiasQkv = 3;
// Output: final rmsnorm + output matmul; input: one get_rows of the embedding.
inline constexpr int kOpsOutput = 2;
inline constexpr int kOpsInput = 1;
// qwen3's per-head q and k RMS norms.
inline constexpr int kOpsQkNorm = 2;
// A mixture-of-experts FFN replaces the dense one's 4 calls (gate, up, down, silu_mul) by the router
// (matmul + top-k softmax) and, per expert used, gate, up, down, silu_mul and its weighted add.
inline constexpr int kOpsDenseFfn = 4;
inline constexpr int kOpsMoeRouter = 2;
inline constexpr int kOpsPerExpert = 5;

// Kernel calls of one layer for a batch of n_tokens (experts: the expected number of distinct
// experts the batch routes to, ModelShape::expert_fraction; one token: n_expert_used).
double layer_ops(const ModelShape& m, double n_tokens);

// Decode seconds of layer l alone on device d (the terms above), and of the output projection.
double layer_decode_s(const ModelShape& m, const DeviceProfile& d, int64_t l, const PlanOptions& o);
double output_decode_s(const ModelShape& m, const DeviceProfile& d);
double input_decode_s(const ModelShape& m, const DeviceProfile& d);

// A layer streamed from disk (memory_model.h stage_fit): read while the previous one computes, so
// it costs the longer of its compute and its bytes over the disk's sequential read speed. The
// output projection of a streaming last stage likewise.
double streamed_layer_decode_s(const ModelShape& m, const DeviceProfile& d, int64_t l, const PlanOptions& o);
double streamed_output_decode_s(const ModelShape& m, const DeviceProfile& d);

// Per-token decode time of layers [first, end) on device d (+ output projection on the last stage),
// its streamed layers (stage_fit) at streamed_layer_decode_s.
double stage_decode_s(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end, const PlanOptions& o);
// Prefill time of n_prompt tokens through layers [first, end).
double stage_prefill_s(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end, const PlanOptions& o);

// Hidden-state bytes per token crossing a hop.
double hop_bytes_per_token(const ModelShape& m, const PlanOptions& o);
// Time for `n_tokens` hidden states over the link (latency + bytes / bandwidth).
double hop_s(const LinkProfile& l, double bytes);
// Time the link is busy (bytes / bandwidth): what limits throughput with several sequences in flight.
double hop_busy_s(const LinkProfile& l, double bytes);
// The coordinator's round trip: token ids to stage 0 and the sampled token back (tiny messages).
double control_s(const LinkProfile& l);

// Per-layer decode cost table for one device, for O(1) range queries in the planners.
struct DeviceCost {
  std::vector<double> prefix;  // [n_layers + 1] prefix sums of per-layer decode seconds
  double output_s = 0;         // output projection (last stage)
  double stream_output_s = 0;  // the same on a streaming stage: its matrix is read from disk too
  double input_s = 0;          // embedding lookup (first stage)
  // A device that may stream: prefix sums of streamed_layer_decode_s, and the resident layers of
  // every range that fits ([first * (n_layers + 1) + end], stage_fit). Empty: never streams.
  std::vector<double> stream_prefix;
  std::vector<int32_t> resident;
  double range_s(int64_t first, int64_t end, int64_t n_layers) const {
    int64_t split = end;
    if (!resident.empty()) split = first + resident[static_cast<size_t>(first * (n_layers + 1) + end)];
    return prefix[static_cast<size_t>(split)] - prefix[static_cast<size_t>(first)] +
           (split < end ? stream_prefix[static_cast<size_t>(end)] - stream_prefix[static_cast<size_t>(split)] : 0) +
           (end == n_layers ? (split < end ? stream_output_s : output_s) : 0) + (first == 0 && end > first ? input_s : 0);
  }
};
DeviceCost device_cost(const ModelShape& m, const DeviceProfile& d, const PlanOptions& o);

}  // namespace herd::partition
