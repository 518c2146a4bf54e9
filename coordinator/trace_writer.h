// --trace FILE: every batch a pipeline evaluates, as Chrome trace events (the JSON array format:
// open it in Perfetto, ui.perfetto.dev, or chrome://tracing). Tracks: "coordinator" (each batch,
// submit -> output), one per stage ("overhead": a worker's unpack/checks/conversion, then
// "compute": its layers, + sampling on the last stage) and, on a cluster, one per link ("transfer":
// the round trip less the stages' times, split over the links by their measured speeds, so it
// includes queueing behind another micro-batch). Stage and link slices are laid out one after
// another from the batch's submit time: the workers share no clock with the coordinator, so a
// slice's place is derived, its length measured (stages) or derived (links).
#pragma once

#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>

#include "engine/pipeline.h"

namespace herd {

class TraceWriter {
 public:
  // Opens `path` (throws std::runtime_error naming it) and observes `pipe`'s batches.
  TraceWriter(const std::string& path, Pipeline& pipe);
  ~TraceWriter();  // stops observing; closes the array
  TraceWriter(const TraceWriter&) = delete;
  TraceWriter& operator=(const TraceWriter&) = delete;

  uint64_t batches() const;

 private:
  void on_batch(const BatchTimes& t);
  void name_tracks(size_t n_stages, size_t n_hops);
  void event(const char* name, int tid, double ts_us, double dur_us, const std::string& args);

  Pipeline& pipe_;
  std::FILE* f_ = nullptr;
  mutable std::mutex mu_;
  std::chrono::steady_clock::time_point t0_;
  size_t named_stages_ = 0, named_hops_ = 0;
  uint64_t batches_ = 0;
  int observer_ = 0;
};

}  // namespace herd
