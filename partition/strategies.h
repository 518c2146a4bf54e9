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

// Most devices the exact (subset) DP of `optimal` handles.
inline constexpr int kOptimalExactDevices = 8;

}  // namespace herd::partition
