#include "partition/strategies.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace herd::partition {
namespace {

// Largest-remainder split of n layers by weight (all weights zero: even).
std::vector<int64_t> proportional(int64_t n, const std::vector<double>& w) {
  const double sum = std::accumulate(w.begin(), w.end(), 0.0);
  std::vector<int64_t> counts(w.size(), 0);
  std::vector<std::pair<double, size_t>> rem;
  int64_t given = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const double share = sum > 0 ? static_cast<double>(n) * w[i] / sum : static_cast<double>(n) / static_cast<double>(w.size());
    counts[i] = static_cast<int64_t>(std::floor(share));
    given += counts[i];
    rem.push_back({share - static_cast<double>(counts[i]), i});
  }
  std::stable_sort(rem.begin(), rem.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; given < n; ++i, ++given) counts[rem[i % rem.size()].second]++;
  return counts;
}

// Stages from per-device layer counts in cluster order; throws PlanError when a stage does not fit.
Plan from_counts(const std::string& name, const std::vector<int64_t>& counts, const ModelShape& m, const Cluster& c,
                 const PlanOptions& o) {
  Plan p;
  p.strategy = name;
  int64_t pos = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] == 0) continue;
    p.stages.push_back(make_stage(static_cast<int>(i), pos, pos + counts[i]));
    pos += counts[i];
  }
  finish_plan(p, m, c, o, "no layers assigned (its share rounds to 0)");
  const auto errs = validate_plan(p, m, c, o);
  if (!errs.empty()) {
    if (!model_fits(m, c, o)) throw PlanError(shortfall_report(m, c, o, name));
    std::string msg = name + " split does not fit:";
    for (const auto& e : errs) msg += "\n  " + e;
    msg += "\nthe model does fit the cluster: try --strategy optimal";
    throw PlanError(msg);
  }
  return p;
}

}  // namespace

Plan plan_even(const ModelShape& m, const Cluster& c, const PlanOptions& o) {
  return from_counts("even", proportional(m.n_layers(), std::vector<double>(c.devices.size(), 1.0)), m, c, o);
}

Plan plan_memory(const ModelShape& m, const Cluster& c, const PlanOptions& o) {
  std::vector<double> w;
  for (const auto& d : c.devices)
    w.push_back(d.free_bytes > d.overhead_bytes ? static_cast<double>(d.free_bytes - d.overhead_bytes) : 0.0);
  return from_counts("memory", proportional(m.n_layers(), w), m, c, o);
}

Plan plan_speed(const ModelShape& m, const Cluster& c, const PlanOptions& o) {
  std::vector<double> w;
  for (const auto& d : c.devices) w.push_back(d.bandwidth_Bps);
  return from_counts("speed", proportional(m.n_layers(), w), m, c, o);
}

Plan plan_gpu_first(const ModelShape& m, const Cluster& c, const PlanOptions& o) {
  std::vector<int> order;
  for (int i = 0; i < static_cast<int>(c.devices.size()); ++i)
    if (c.devices[static_cast<size_t>(i)].kind != DeviceKind::Cpu) order.push_back(i);
  for (int i = 0; i < static_cast<int>(c.devices.size()); ++i)
    if (c.devices[static_cast<size_t>(i)].kind == DeviceKind::Cpu) order.push_back(i);
  Plan p;
  p.strategy = "gpu-first";
  int64_t pos = 0;
  for (int d : order) {
    if (pos >= m.n_layers()) break;
    const int64_t n = max_layers_from(m, c.devices[static_cast<size_t>(d)], pos, o);
    if (n == 0) {
      p.excluded.push_back({d, "cannot hold a single layer from layer " + std::to_string(pos)});
      continue;
    }
    p.stages.push_back(make_stage(d, pos, pos + n));
    pos += n;
  }
  if (pos < m.n_layers()) throw PlanError(shortfall_report(m, c, o, "gpu-first"));
  finish_plan(p, m, c, o, "not needed: the devices before it hold every layer");
  return p;
}

const std::vector<NamedStrategy>& strategies() {
  static const std::vector<NamedStrategy> s = {
      {"even", plan_even, "same number of layers per device"},
      {"memory", plan_memory, "layers proportional to free memory (llama.cpp, exo)"},
      {"speed", plan_speed, "layers proportional to memory bandwidth"},
      {"gpu-first", plan_gpu_first, "fill GPUs in order, spill the rest to CPUs (like -ngl)"},
      {"optimal", plan_optimal, "minimise predicted time per token under the memory limits"},
  };
  return s;
}

Strategy find_strategy(const std::string& name) {
  std::string names;
  for (const auto& s : strategies()) {
    if (name == s.name) return s.fn;
    names += (names.empty() ? "" : ", ") + std::string(s.name);
  }
  throw std::invalid_argument("unknown strategy '" + name + "' (" + names + ")");
}

}  // namespace herd::partition
