// Strategies: pure functions (model shape, device profiles + links, options) -> Plan.
// Every strategy returns a plan that validate_plan accepts, or throws PlanError (the message
// says what does not fit and what would). Devices keep the cluster file's order unless the
// strategy says otherwise.
//
//   even       the same number of layers on every device (remainder to the first ones)
//   memory     layers proportional to free memory (what llama.cpp's --tensor-split default and exo do)
//   speed      layers proportional to memory bandwidth (decode throughput)
//   gpu-first  fill each GPU (cuda, metal) in order as far as it fits, the rest on CPUs (like -ngl)
//   optimal    minimises the predicted time per token (plan.h: Prediction::token_s) under every
//              memory constraint: exact dynamic programming over contiguous layer ranges and device
//              subsets in every order for <= 8 devices; for more, over the given order, bandwidth
//              order and host-grouped order (each device used or skipped). Leaves a device out when
//              that is faster, and says so.
#pragma once

#include <string>
#include <vector>

#include "partition/plan.h"

namespace herd::partition {

using Strategy = Plan (*)(const ModelShape&, const Cluster&, const PlanOptions&);

Plan plan_even(const ModelShape& m, const Cluster& c, const PlanOptions& o);
Plan plan_memory(const ModelShape& m, const Cluster& c, const PlanOptions& o);
Plan plan_speed(const ModelShape& m, const Cluster& c, const PlanOptions& o);
Plan plan_gpu_first(const ModelShape& m, const Cluster& c, const PlanOptions& o);
Plan plan_optimal(const ModelShape& m, const Cluster& c, const PlanOptions& o);

struct NamedStrategy {
  const char* name;
  Strategy fn;
  const char* help;
};
const std::vector<NamedStrategy>& strategies();
// Throws std::invalid_argument listing the names when unknown.
Strategy find_strategy(const std::string& name);

// The groupings `optimal` tries for tensor parallelism, of devices 0..n-1 in order, each a list of
// groups of consecutive devices (the pipeline's stages in order), with at least one group of 2..max_tp:
//   (a) for each t in 2..min(n, max_tp): blocks of t, the n mod t devices left over as a last block;
//   (b) for each g in 1..n-1: g blocks as equal as possible (sizes differ by at most one, larger first);
// without duplicates, (a) first. E.g. n = 4, max_tp = 4: {0,1}{2,3}, {0,1,2}{3}, {0,1,2,3}.
std::vector<std::vector<std::vector<int>>> tp_groupings(int n, int max_tp);
// The best plan over one grouping: its groups as stages in that order, each used or skipped,
// exact layer split (DP). Throws PlanError when nothing fits, std::invalid_argument when a group
// cannot split the model (more ranks than KV-head groups).
Plan plan_tp_grouping(const ModelShape& m, const Cluster& c, const PlanOptions& o, const std::vector<std::vector<int>>& groups);
// Groups of exactly `tp` consecutive devices (`--workers a,b,c,d --tp 2`); PlanError when the
// device count is not a multiple of tp or nothing fits.
Plan plan_tp(const ModelShape& m, const Cluster& c, const PlanOptions& o, int tp);
// A grouping's name: "tp 2 x pp 2" (2 groups of 2), "tp 4" (one group), "tp 2+2+1" (mixed sizes).
std::string grouping_name(const std::vector<std::vector<int>>& groups);
// "tp 2 x pp 2: stages {a,b} {c,d}", "pp 3: stages {a} {b} {c}", "tp 2+1 (pp 2): stages {a,b} {c}".
std::string plan_shape(const Plan& p, const Cluster& c);

// Most devices the exact (subset) DP of `optimal` handles.
inline constexpr int kOptimalExactDevices = 8;

}  // namespace herd::partition
