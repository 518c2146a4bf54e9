// From what the workers told us to the planner and back: each worker's Hello profile becomes a
// partition::DeviceProfile (the one conversion of the wire profile to the planner's type), the
// measured links become partition::LinkProfiles, the strategy makes a partition::Plan, and the
// plan's stages become the layer ranges a RemotePipeline assigns, with a one-line summary.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cluster/protocol.h"
#include "engine/tp_sync.h"
#include "coordinator/worker_set.h"
#include "model/weights.h"
#include "partition/model_shape.h"
#include "partition/plan.h"

namespace herd {

// The disk speed the planner assumes for a worker that streams but measured none (a SATA SSD).
inline constexpr double kAssumedWorkerDiskBps = 0.5e9;

// A worker's Hello profile as the planner's device named `name` (its own host; memory = what it
// reports free, its budget; overhead = its process's memory; disk = its measured one, the assumed
// one when it streams without a measurement, none when it does not stream; a profile without
// rates — an older worker, a failed measurement — gets a modest host's figures).
partition::DeviceProfile device_profile(const cluster::WorkerProfile& w, const std::string& name);
// A measured link as the planner's (bandwidth 0 = not measured: 1 GbE).
partition::LinkProfile link_profile(const cluster::LinkStats& s);

struct SplitRequest {
  std::string strategy = "optimal";  // partition/strategies.h
  int64_t n_ctx = 0;
  int64_t act_bytes = 4;             // bytes per hidden-state element between stages
  int64_t n_seq = 1;                 // sequence slots: each stage holds n_seq KV caches of n_ctx
  std::string kv_type = "f16";       // KV storage (partition::kv_elem_bytes)
  TpSync tp_sync = TpSync::F32;      // tensor parallelism: what the all-reduces send (partition/tp_model.h)
};

struct SplitPlan {
  partition::Cluster cluster;        // the workers as devices (device i = worker i) and the links
  partition::PlanOptions options;
  partition::Plan plan;
  std::vector<size_t> stage_workers;      // stage s runs on worker stage_workers[s] (group > 1: see plan_split)
  std::vector<model::LayerRange> ranges;  // stage s's layers (group > 1: per worker of stage_workers)
  std::string summary;  // "plan: worker 1 layers 0-13, worker 2 layers 14-29; predicted 96 tok/s"
};

// Plans the split over every worker of `workers` in order (the stages keep that order), from their
// Hello profiles, their coordinator links (workers.links()) and the stage-to-stage links measured on
// an earlier assignment (`measured_hops`, keyed by (from, to) address; else estimated from the two
// coordinator links). Throws std::runtime_error for an unknown strategy; partition::PlanError when
// the model does not fit.
//
// group > 1 (tensor parallelism, --tp): each `group` consecutive workers are one stage. With the
// `optimal` strategy the planner's TP model prices each group (its ranks' shares, two all-reduces
// per layer on their links: partition::plan_tp) and may leave groups out; the other strategies
// plan each group as one device: the members' memory and rates summed, its links its first worker's. stage_workers then lists every worker of each
// stage's group, in order (group-size entries per stage), and ranges one entry per worker.
SplitPlan plan_split(const partition::ModelShape& shape, const WorkerSet& workers,
                     const std::map<std::pair<std::string, std::string>, cluster::LinkStats>& measured_hops,
                     const SplitRequest& request, size_t group = 1);

// Contiguous ranges, one per worker, with layer counts proportional to free_bytes (each >= 1;
// largest remainders get the leftovers). Throws when there are more workers than layers.
std::vector<model::LayerRange> split_by_memory(int64_t n_layers, const std::vector<uint64_t>& free_bytes);

}  // namespace herd
