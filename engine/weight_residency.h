// The seam through which a Stage tells whoever keeps its weights resident where a forward pass is:
// a worker whose shard exceeds its memory budget keeps the weights file-backed and streams them
// (worker/streamed_weights.h: prefetch the next layers, release the finished one). The Stage calls
// it around every layer and around the output projection; the weights' bytes never move, so what
// the kernels compute does not depend on it (only how many page faults and disk reads it costs).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"

namespace herd {

class WeightResidency {
 public:
  virtual ~WeightResidency() = default;
  // Units are the stage-local layers 0..n_layers-1, then the output projection: one unit
  // n_layers, or when output_chunks() is not empty, chunk c is unit n_layers + c.
  // before(u): the unit's weights are about to be read (a residency may wait for them here).
  virtual void before(int64_t unit) = 0;
  // after(u): the unit's weights will not be read again in this pass.
  virtual void after(int64_t unit) = 0;
  // The output matrix as views of consecutive row ranges (packed copies included), multiplied one
  // after the other into the logits' columns: the same bits (every output row is its own dot
  // product), in pieces that fit the budget where the whole would not. Empty: one unit.
  virtual const std::vector<WeightMatrix>& output_chunks() const {
    static const std::vector<WeightMatrix> none;
    return none;
  }
  // The pass ended (normally or by an exception): e.g. drop the embedding rows get_rows touched.
  virtual void end_forward() {}
};

}  // namespace herd
