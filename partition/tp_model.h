// The planner's model of a tensor-parallel group: several devices that each hold a share of every
// layer of one pipeline stage (engine/shard_plan.h) and join their partial sums twice per layer.
// Pure functions of the model shape, the devices' profiles, the links and the options.
//
// Shares: engine/shard_plan.h's plan_shards with the ranks' speeds as weights (their memory
// bandwidth: decode is memory-bound), so the planner predicts the split a run makes: KV heads in
// whole GQA groups (units of kv_unit groups when attn_output's quant blocks span several), FFN rows
// in whole blocks of ffn_down's type, vocabulary rows.
//
// Per token, per layer, two halves, each ending in an all-reduce every rank waits for:
//   attention half: rank r reads its share a_r = kv_heads_r / n_kv of q, k, v, attn_output and of
//     the KV cache, the attention norm in full (replicated); 9 kernel calls;
//   FFN half:       its share f_r = ffn_rows_r / n_ff of gate, up, down, the FFN norm in full;
//                   6 kernel calls (kOpsPerLayer = 15 in all, as cost_model.h);
//   each half takes max over ranks of max(bytes / rate, FLOPs / flops) + calls x op overhead,
//   then one all-reduce of n_embd values.
// Output (last stage): each rank projects its vocabulary rows (the final norm in full), then the
// logits are all-gathered (padded to the largest share, f32: engine/stage.cpp). Input: every rank
// looks up the embedding (replicated).
//
// All-reduce with --tp-sync f32, the chain of engine/ring_comm.h: 2(n-1) hops in sequence; a message of V values is
// K = ceil(V / kChainChunkValues) chunks, pipelined:
//   time = 2(n-1) x latency + (2(n-1) + K - 1) x (bytes / K) / bandwidth
// (never less than the busiest link's bytes / bandwidth: the message once for n = 2, twice for
// n >= 3), bytes = V x the sync's bytes per value (f32 4, f16 2, q8 34/32: blocks of 32 with an
// f16 scale). All-gather (ring, step by step): (n-1) x K steps of latency + chunk / bandwidth.
// With --tp-sync f16 / q8 the all-reduce is such an all-gather of each rank's encoded partial
// (engine/tp_sync.h: V x 2 or 34/32 bytes), summed locally: n-1 hops, (n-1) x those bytes sent.
// Bytes a rank sends per token: 2 x layers x (f32: the message, twice on ranks 0..n-3 of a chain of
// n >= 3; f16 / q8: n-1 encoded partials) + (n-1) x its padded logits share x 4 on the last stage. The link between ranks r and r+1
// is Cluster::link (same host: `link local`; in-process ranks use it too).
//
// Memory of a rank: its share of each layer's matrices, the norms in full, the KV cache of its
// heads; the embedding table in full on the first stage; its vocabulary rows of the output matrix
// (and the final norm) on the last; scratch for its shard's activations and the gathered logits.
#pragma once

#include <string>
#include <vector>

#include "engine/shard_plan.h"
#include "engine/tp_sync.h"
#include "partition/cost_model.h"
#include "partition/memory_model.h"

namespace herd::partition {

// Values per message of the chain (engine/ring_comm.h kRingChunkFloats, 64 KiB of f32; a copy so
// partition/ needs no transport header; test_tp_model checks they agree).
inline constexpr int64_t kChainChunkValues = 16384;

// Bytes per synchronised value on the wire: 4 (f32), 2 (f16), 34/32 (q8).
double sync_value_bytes(TpSync s);

// The shard shape of a model (what engine/tp_shard.cpp's shard_shape computes from the weights).
// Throws std::invalid_argument for a mixture of experts or heads that do not form groups.
ShardShape tp_shard_shape(const ModelShape& m);
// The most ranks a group of this model can have (KV-head units, FFN blocks, vocabulary rows);
// 1 for a model tensor parallelism cannot split (a mixture of experts).
int max_tp_ranks(const ModelShape& m);

// One collective over a chain / ring of n ranks on link l: seconds and bytes each rank sends.
struct CollectiveCost {
  double s = 0;
  double busiest_rank_bytes = 0;  // what the busiest rank sends
  int hops = 0;                   // sequential link traversals
};
CollectiveCost chain_all_reduce(int n, double values, double bytes_per_value, const LinkProfile& l);
CollectiveCost ring_all_gather(int n, double values_per_rank, const LinkProfile& l, double bytes_per_value = 4.0);
// The all-reduce tp_all_reduce runs for `s`: the chain (f32 when bandwidth-bound) or the
// all-gather of the rounded form (engine/tp_sync.h f32_sync_gathers).
CollectiveCost sync_all_reduce(int n, double values, TpSync s, const LinkProfile& l);

// The devices of a group in rank order, their shard weights and the slowest link between
// consecutive ranks (the chain is as slow as its slowest hop).
struct TpGroup {
  std::vector<int> devices;     // indices into Cluster::devices, rank order
  std::vector<double> weights;  // relative speeds (bandwidth)
  ShardPlan shards;
  LinkProfile link;
};
// Throws std::invalid_argument (from plan_shards) when the model cannot be split over them.
TpGroup make_tp_group(const ModelShape& m, const Cluster& c, const std::vector<int>& devices);

// Per-token decode cost of layers [first, end) on a group (+ output on the last stage, + input on
// the first), split into compute and sync; sync_bytes: what the busiest rank sends per token.
struct TpStageCost {
  double compute_s = 0, sync_s = 0, sync_bytes = 0;
  int n_all_reduce = 0;  // per token
  double total_s() const { return compute_s + sync_s; }
};
TpStageCost tp_stage_decode(const ModelShape& m, const Cluster& c, const TpGroup& g, int64_t first, int64_t end,
                            const PlanOptions& o);
// Prefill of n_prompt tokens through [first, end) (chunks of n_batch: an all-reduce of
// [chunk, n_embd] per half-layer per chunk).
double tp_stage_prefill_s(const ModelShape& m, const Cluster& c, const TpGroup& g, int64_t first, int64_t end,
                          const PlanOptions& o);

// Per-layer decode table of a group for the planners' DP (cost_model.h DeviceCost).
DeviceCost tp_group_cost(const ModelShape& m, const Cluster& c, const TpGroup& g, const PlanOptions& o);

// A hop into a stage of `to` ranks (every rank gets the hidden state, engine/tp: the leader of
// the previous stage sends it to each in rank order): the last arrival, max over r of
// latency(from, to_r) + (r + 1) x bytes / bandwidth (one device: hop_s), and the sender's busy
// time, the sum of bytes / bandwidth.
struct HopCost {
  double decode_s = 0, busy_s = 0;
};
HopCost group_hop(const Cluster& c, int from, const std::vector<int>& to, double bytes);
// The coordinator's token to every rank of the first stage (the slowest link counts).
double control_in_s(const Cluster& c, const std::vector<int>& ranks);

// Memory of rank `rank` of the group holding [first, end).
StageMemory tp_rank_memory(const ModelShape& m, const DeviceProfile& d, const ShardPlan& p, int rank, int64_t first,
                           int64_t end, const PlanOptions& o);
// The most layers from `first` every rank of the group can hold.
int64_t tp_max_layers_from(const ModelShape& m, const Cluster& c, const TpGroup& g, int64_t first, const PlanOptions& o);

}  // namespace herd::partition
