// Plans rendered for people (text table), for scripts (JSON) and for docs (SVG: the layer map
// and a per-token timeline of the pipeline).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "partition/plan.h"

namespace herd::partition {

// One strategy's outcome for --compare: a plan, or the reason it does not fit.
struct StrategyOutcome {
  std::string strategy;
  std::optional<Plan> plan;
  std::string error;
};

std::string format_plan(const Plan& p, const ModelShape& m, const Cluster& c, const PlanOptions& o);
std::string format_compare(const std::vector<StrategyOutcome>& r, const ModelShape& m, const Cluster& c, const PlanOptions& o);
std::string plan_json(const std::vector<StrategyOutcome>& r, const ModelShape& m, const Cluster& c, const PlanOptions& o);
// One plan's layer map and timeline; with several outcomes, every plan's layer map stacked
// (and the timeline of `optimal`, or else of the first that fits).
std::string plan_svg(const std::vector<StrategyOutcome>& r, const ModelShape& m, const Cluster& c, const PlanOptions& o);

// Simulated per-token schedule (what the SVG timeline draws): k sequences, `rounds` tokens each,
// FIFO at every stage and link. A box is one stage (row < n_stages) or hop (row >= n_stages).
struct TimelineBox {
  int row = 0;
  int seq = 0;
  double start = 0, end = 0;
};
std::vector<TimelineBox> simulate_timeline(const Plan& p, const Cluster& c, const PlanOptions& o, int rounds);

}  // namespace herd::partition
