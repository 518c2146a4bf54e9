// The end of a run: per pipeline stage and per hop the measured time of a decode step beside the
// plan's prediction (`herd run`, `herd bench` print it to stderr), so every run says what it ran
// and how close the planner was. Measured: the mean over the batches of one row (decode steps)
// of each stage's compute + overhead (timed by the worker itself) and each hop's derived time (the
// round trip less the stages' times, spread by the links' measured speeds: RemotePipeline).
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/pipeline.h"

namespace herd {

struct PredictedTimes {
  std::string source;            // "plan.json (optimal)", "the planner (optimal)"
  std::vector<double> stage_ms;  // per pipeline stage
  std::vector<double> hop_ms;    // coordinator -> stage 0, stage i -> i+1, last stage -> coordinator
};

// What the plan a RemotePipeline runs predicts per decode token: its --plan file, else the
// planner's plan; no value with --split or for another pipeline.
std::optional<PredictedTimes> predicted_times(const Pipeline& p);

class RunReport {
 public:
  explicit RunReport(Pipeline& p);  // observes p's batches from now on
  ~RunReport();
  RunReport(const RunReport&) = delete;
  RunReport& operator=(const RunReport&) = delete;

  size_t decode_steps() const;
  // The table ("" when there is one stage, no hop and no prediction: nothing to compare).
  std::string format() const;

 private:
  void on_batch(const BatchTimes& t);
  Pipeline& pipe_;
  int observer_ = 0;
  mutable std::mutex mu_;
  std::vector<std::vector<double>> stage_ms_, hop_ms_;  // [stage][step], [hop][step]
  std::vector<double> batch_ms_;
};

}  // namespace herd
