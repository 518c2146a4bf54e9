#include "coordinator/run_report.h"

#include <cstdio>

#include "coordinator/remote_pipeline.h"

namespace herd {
namespace {

// Means, not medians: per step the stages and hops add up to the step's time, so the means of the
// rows add up to the mean of the token row (a median of each would not).
double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

std::string ms(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%9.3f ms", x);
  return b;
}

std::string row(const std::string& what, double measured, const std::optional<double>& predicted) {
  char b[256];
  std::snprintf(b, sizeof b, "  %-44s %s  %s\n", what.c_str(), ms(measured).c_str(),
                predicted ? ms(*predicted).c_str() : "        -   ");
  return b;
}

}  // namespace

std::optional<PredictedTimes> predicted_times(const Pipeline& p) {
  const auto* r = dynamic_cast<const RemotePipeline*>(&p);
  if (!r) return std::nullopt;
  PredictedTimes t;
  if (const partition::PlanFile* f = r->fixed_plan()) {
    t.source = f->source + " (" + f->strategy + ")";
    for (const auto& s : f->stages) t.stage_ms.push_back(s.decode_s * 1e3);
    t.hop_ms.push_back(f->coord_in_s * 1e3);
    for (double h : f->hop_s) t.hop_ms.push_back(h * 1e3);
    t.hop_ms.push_back(f->coord_out_s * 1e3);
    return t;
  }
  if (!r->plan()) return std::nullopt;
  const partition::Plan& pl = *r->plan();
  t.source = "the planner (" + pl.strategy + ", from the workers' measured profiles)";
  for (const auto& s : pl.stages) t.stage_ms.push_back(s.decode_s * 1e3);
  t.hop_ms.push_back(pl.pred.coord_in_s * 1e3);
  for (const auto& h : pl.pred.hops) t.hop_ms.push_back(h.decode_s * 1e3);
  t.hop_ms.push_back(pl.pred.coord_out_s * 1e3);
  return t;
}

RunReport::RunReport(Pipeline& p) : pipe_(p) {
  observer_ = pipe_.add_observer([this](const BatchTimes& t) { on_batch(t); });
}

RunReport::~RunReport() { pipe_.remove_observer(observer_); }

void RunReport::on_batch(const BatchTimes& t) {
  if (t.rows != 1) return;  // a decode step: one row (prompt chunks are priced differently)
  std::lock_guard lk(mu_);
  if (stage_ms_.size() != t.compute_ms.size() || hop_ms_.size() != t.hop_ms.size()) {
    // The first step, or a new layout after a recovery: only the steps of the layout now running.
    stage_ms_.assign(t.compute_ms.size(), {});
    hop_ms_.assign(t.hop_ms.size(), {});
    batch_ms_.clear();
  }
  for (size_t i = 0; i < t.compute_ms.size(); ++i)
    stage_ms_[i].push_back(t.compute_ms[i] + (i < t.overhead_ms.size() ? t.overhead_ms[i] : 0.0));
  for (size_t h = 0; h < t.hop_ms.size(); ++h) hop_ms_[h].push_back(t.hop_ms[h]);
  batch_ms_.push_back(t.batch_ms);
}

size_t RunReport::decode_steps() const {
  std::lock_guard lk(mu_);
  return batch_ms_.size();
}

std::string RunReport::format() const {
  const auto pred = predicted_times(pipe_);
  const PipelineStatus st = pipe_.status();
  std::lock_guard lk(mu_);
  const size_t n_st = stage_ms_.size();
  if (batch_ms_.empty() || (n_st <= 1 && hop_ms_.empty() && !pred)) return "";
  const bool pred_fits = pred && pred->stage_ms.size() == n_st && pred->hop_ms.size() == hop_ms_.size();
  std::string out = "per decode token: mean of " + std::to_string(batch_ms_.size()) + " steps (measured)";
  out += pred ? ", beside " + pred->source + (pred_fits ? "" : " (its stages differ from the run's: not compared)")
              : ", no prediction (--split)";
  out += "\n";
  if (!hop_ms_.empty()) out += "  (a hop's time is derived: the round trip less the stages' own times)\n";
  char head[160];
  std::snprintf(head, sizeof head, "  %-44s %12s  %12s\n", "", "measured", "predicted");
  out += head;
  auto p_stage = [&](size_t i) { return pred_fits ? std::optional<double>(pred->stage_ms[i]) : std::nullopt; };
  auto p_hop = [&](size_t h) { return pred_fits ? std::optional<double>(pred->hop_ms[h]) : std::nullopt; };
  auto stage_name = [&](size_t i) {
    std::string n = "stage " + std::to_string(i + 1);
    if (i < st.stages.size()) {
      const auto& s = st.stages[i];
      n += " " + s.name + " layers " + std::to_string(s.first_layer) + "-" + std::to_string(s.end_layer - 1);
    }
    return n;
  };
  double pred_total = 0;
  const bool hops = hop_ms_.size() == n_st + 1;
  if (hops) out += row("coordinator -> stage 1", mean(hop_ms_[0]), p_hop(0));
  for (size_t i = 0; i < n_st; ++i) {
    out += row(stage_name(i), mean(stage_ms_[i]), p_stage(i));
    if (hops)
      out += row(i + 1 < n_st ? "stage " + std::to_string(i + 1) + " -> stage " + std::to_string(i + 2)
                              : "stage " + std::to_string(i + 1) + " -> coordinator",
                 mean(hop_ms_[i + 1]), p_hop(i + 1));
  }
  if (pred_fits) {
    for (double x : pred->stage_ms) pred_total += x;
    for (double x : pred->hop_ms) pred_total += x;
  }
  out += row("token (submit -> result)", mean(batch_ms_), pred_fits ? std::optional<double>(pred_total) : std::nullopt);
  return out;
}

}  // namespace herd
