// The seam through which a Stage tells whoever keeps its weights resident where a forward pass is:
// a worker whose shard exceeds its memory budget keeps the weights file-backed and streams them
// (worker/streamed_weights.h: prefetch the next layers, release the finished one). The Stage calls
// it around every layer and around the output projection; the weights' bytes never move, so what
// the kernels compute does not depend on it (only how many page faults and disk reads it costs).
#pragma once

#include <cstdint>

namespace herd {

class WeightResidency {
 public:
  virtual ~WeightResidency() = default;
  // Units are the stage-local layers 0..n_layers-1 and the output projection (unit n_layers).
  // before(u): the unit's weights are about to be read (a residency may wait for them here).
  virtual void before(int64_t unit) = 0;
  // after(u): the unit's weights will not be read again in this pass.
  virtual void after(int64_t unit) = 0;
  // The pass ended (normally or by an exception): e.g. drop the embedding rows get_rows touched.
  virtual void end_forward() {}
};

}  // namespace herd
