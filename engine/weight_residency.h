// The seam through which a Stage tells whoever keeps its weights resident where a forward pass is:
// a worker whose shard exceeds its memory budget keeps the weights file-backed and streams them
// (worker/streamed_weights.h: prefetch what comes next, release what is done). The weights' bytes
// never move and every output row of a matmul is its own dot product, so multiplying a matrix in
// row pieces gives the same bits: only the page faults and disk reads differ.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"

namespace herd {

class WeightResidency {
 public:
  virtual ~WeightResidency() = default;
  // A matrix the residency streams is multiplied as consecutive row pieces, each a unit (units are
  // numbered in the order a pass uses them: the streamed layers' matrices, then the output's
  // pieces; a matrix kept resident is no unit, and before()/after() are never called for it).
  struct Piece {
    WeightMatrix w;    // rows [row0, row0 + w.rows) of the matrix, its packed copy included
    int64_t row0 = 0;
    int64_t unit = 0;
  };
  // The pieces of `w` (matched by its data pointer), or null: multiplied whole, not streamed.
  virtual const std::vector<Piece>* pieces(const WeightMatrix& w) const = 0;
  // before(u): the unit's weights are about to be read (a residency may wait for them here).
  virtual void before(int64_t unit) = 0;
  // after(u): the unit's weights will not be read again in this pass.
  virtual void after(int64_t unit) = 0;
  // The pass ended (normally or by an exception): e.g. drop the embedding rows get_rows touched.
  virtual void end_forward() {}
};

}  // namespace herd
