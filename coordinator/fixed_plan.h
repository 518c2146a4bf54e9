// --plan FILE: a run that executes a plan made by `herd plan --json` exactly (its stages, their
// layers, its tensor-parallel groups and their shares) instead of planning one itself. The plan's
// devices are matched to --workers by address (a cluster file's worker lines), or by position when
// the plan came from device lines; anything that does not match is refused, naming it.
#pragma once

#include <string>
#include <vector>

#include "model/arch.h"
#include "model/weights.h"
#include "partition/plan_file.h"

namespace herd {

struct FixedSplit {
  std::vector<size_t> stage_workers;            // positions in the worker list, a group's ranks consecutive
  std::vector<model::LayerRange> ranges;        // per entry of stage_workers (a group repeats its range)
  size_t group = 1;                             // tensor-parallel group size (1: a pipeline)
  std::vector<std::vector<double>> tp_weights;  // per stage, with group > 1: the plan's shares
  std::string summary;                          // "plan: plan.json (optimal): worker 1 (HOST:PORT) layers 0-13, ..."
};

// Throws std::runtime_error naming the difference when the plan was made for another model
// (layers, n_embd, heads, vocabulary, architecture).
void check_plan_model(const partition::PlanFile& p, const model::ModelConfig& c);

// The plan over `workers` (addresses as given to --workers, in that order). Throws
// std::runtime_error for a count that differs, a plan device whose address is not among the
// workers (or a worker the plan does not name).
FixedSplit fixed_split(const partition::PlanFile& p, const std::vector<std::string>& workers);

}  // namespace herd
