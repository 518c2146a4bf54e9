// A plan: which device runs which contiguous layer range, in pipeline order, what it costs in
// memory and what the cluster is predicted to do with it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/shard_plan.h"
#include "partition/cost_model.h"
#include "partition/memory_model.h"
#include "partition/model_shape.h"
#include "partition/options.h"
#include "partition/profile.h"

namespace herd::partition {

struct StagePlan {
  int device = 0;      // index into Cluster::devices (a tensor-parallel group: its leader, ranks[0])
  int64_t first = 0;   // first layer (inclusive)
  int64_t end = 0;     // one past the last layer
  StageMemory mem;       // a group: the leader's
  double decode_s = 0;   // per token
  double prefill_s = 0;  // for n_prompt tokens
  // Tensor parallelism (partition/tp_model.h): the group's devices in rank order (ranks[0] ==
  // device: the leader, which forwards to the next stage); empty for a one-device stage. Each rank
  // holds shards' ranges of every layer (weights: the relative speeds the shards were cut by), and
  // needs rank_mem; sync_s of decode_s is the all-reduces and the logits gather, and the busiest
  // rank sends sync_bytes per token.
  std::vector<int> ranks;
  std::vector<double> rank_weights;
  ShardPlan shards;
  std::vector<StageMemory> rank_mem;
  double sync_s = 0, sync_bytes = 0;
  int n_all_reduce = 0;  // per token
  // Streaming from disk (memory_model.h stage_fit): the last `streamed` layers are read from the
  // model file every token, disk_s per token at the device's disk speed (decode_s counts each
  // streamed layer at the longer of its compute and its read).
  int64_t streamed = 0;
  double disk_s = 0;
  // Bytes its device's host reads per token (plan_working_sets): where the probe's cache curve set
  // its matvec rates; 0 when the rates are those beyond the caches (a streaming stage, or no curve).
  double working_set_bytes = 0;
  int tp() const { return ranks.empty() ? 1 : static_cast<int>(ranks.size()); }
  int64_t size() const { return end - first; }
};

inline StagePlan make_stage(int device, int64_t first, int64_t end) {
  StagePlan s;
  s.device = device;
  s.first = first;
  s.end = end;
  return s;
}

struct Excluded {
  int device = 0;
  std::string reason;
};

struct HopPrediction {
  int from = -1, to = -1;      // device indices
  double bytes_per_token = 0;  // hidden state
  double decode_s = 0;         // latency + bytes / bandwidth per token
  double busy_s = 0;           // bytes / bandwidth
};

struct Prediction {
  double latency_s = 0;      // one token of one sequence through every stage and hop (+ coordinator)
  double bottleneck_s = 0;   // busiest stage or link per token (what bounds k sequences in flight)
  double cycle_s = 0;        // max(latency, k x bottleneck): one token for each of k sequences
  double token_s = 0;        // cycle / k: the objective `optimal` minimises
  double decode_tok_s = 0;   // k / cycle, all sequences together
  double ttft_s = 0;         // prompt of n_prompt tokens to the first token
  double prefill_tok_s = 0;  // n_prompt / ttft
  double bubble = 0;         // idle fraction of the stages: 1 - sum(stage busy) / (n_stages x cycle)
  std::vector<HopPrediction> hops;  // between consecutive stages
  double coord_in_s = 0;     // coordinator -> stage 0 per token (latency only: a token id)
  double coord_out_s = 0;    // last stage -> coordinator per token
};

struct Plan {
  std::string strategy;
  std::vector<StagePlan> stages;  // pipeline order; stage 0 holds the embedding
  std::vector<Excluded> excluded;
  Prediction pred;
  std::vector<std::string> notes;
  // The largest tensor-parallel group (1: a pure pipeline).
  int tp() const {
    int t = 1;
    for (const auto& s : stages) t = std::max(t, s.tp());
    return t;
  }
};

// A tensor-parallel stage over `ranks` (consecutive devices, leader first) holding [first, end);
// finish_plan fills its shards, memory and times.
StagePlan make_tp_stage(const std::vector<int>& ranks, int64_t first, int64_t end);

// Thrown when no plan (or not this strategy's plan) fits; the message lists the shortfall per
// device and what would make it fit.
class PlanError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Fills memory, times and predictions of a plan whose stages (device, first, end) are set, and
// marks every device without a stage as excluded with `unused_reason` (unless already listed).
void finish_plan(Plan& p, const ModelShape& m, const Cluster& c, const PlanOptions& o,
                 const std::string& unused_reason = "no layers assigned");

// Per device of c, the bytes its host reads per token in plan p (the priced working set of the
// caches): every stage's weights read per token (the output matrix on the last) and its KV cache
// at the mean position, summed over the stages whose devices share a host (DeviceProfile::host;
// a tensor-parallel stage's bytes split evenly over its ranks). 0 for a device without a stage, or
// on a host where a stage streams from disk (its reads go to storage, not the caches). finish_plan
// prices each device's matvecs at its probe's cache curve at this size (DeviceProfile::matvec_rate);
// the strategies choose layer ranges at the rates beyond the caches.
std::vector<double> plan_working_sets(const Plan& p, const ModelShape& m, const Cluster& c, const PlanOptions& o);

// The decode objective of a stage sequence: max(latency / k, bottleneck). Used by `optimal`
// and by the brute-force check in the tests.
double plan_objective(const Plan& p);

// Problems with a plan: empty when valid. Checks contiguity, exact cover of [0, n_layers),
// one stage per device, device indices in range, and every stage's memory within its device's free memory.
std::vector<std::string> validate_plan(const Plan& p, const ModelShape& m, const Cluster& c, const PlanOptions& o);

// The message of the PlanError for a model that fits nowhere: per device what it can hold and
// the shortfall, then what would make it fit (a smaller quant, a shorter context, another device).
std::string shortfall_report(const ModelShape& m, const Cluster& c, const PlanOptions& o, const std::string& what);

// Whether any order of the devices can hold the whole model (exact up to 16 devices).
bool model_fits(const ModelShape& m, const Cluster& c, const PlanOptions& o);

// "12.3 GB" (decimal, as the cluster file's units).
std::string gb(uint64_t bytes);

}  // namespace herd::partition
