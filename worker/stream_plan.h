// How a worker over its memory budget splits its stage ([offload] item 1; worker/shard_budget.cpp):
// the leading layers that fit stay resident, the rest stream from the packed cache file
// (worker/streamed_weights.h). The planner (partition/memory_model.cpp stage_fit) prices a stage
// by the same rule.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "model/arch.h"
#include "model/weights.h"

namespace herd {

// The least a streamed window may hold (unless what streams is smaller): with less, the reads are
// too small to keep the disk busy.
constexpr uint64_t kStreamWindowFloor = uint64_t{4} << 20;

// Whole-matrix bytes of each of the stage's layers (stage_unit_bytes(w, c, be, 0) summed per
// layer) and of its output matrix (0 on a stage without one).
struct StageLayerBytes {
  std::vector<uint64_t> layers;
  uint64_t output = 0;
};
StageLayerBytes stage_layer_bytes(model::StageWeights& w, const model::ModelConfig& c, const Backend& be);

// R, the leading layers kept resident: for r = 0..n-1 (n layers), streamed(r) = the bytes of
// layers [r, n) (+ the output), widest(r) = the largest of those layers (or the output, if larger),
// resident(r) = the bytes of layers [0, r); R = the largest r with
//   fixed + resident(r) + min(2 * widest(r), streamed(r), kStreamWindowFloor) <= budget.
// -1 when no r fits (not even r = 0: the stage cannot stream in this budget).
int64_t resident_prefix_layers(const StageLayerBytes& s, uint64_t fixed, uint64_t budget);

// The most consecutive units (cyclically: the last ones prefetch the first for the next token)
// whose bytes always fit in `avail`; at least 1.
int64_t streaming_window(const std::vector<uint64_t>& units, uint64_t avail);

}  // namespace herd
