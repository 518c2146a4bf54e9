#include "worker/stream_plan.h"

#include <algorithm>
#include <numeric>

#include "engine/stage.h"
#include "worker/streamed_weights.h"

namespace herd {

StageLayerBytes stage_layer_bytes(model::StageWeights& w, const model::ModelConfig& c, const Backend& be) {
  const auto whole = stage_unit_bytes(w, c, be, 0);  // one unit per matrix, in pass order
  StageLayerBytes s;
  size_t at = 0;
  for (auto& l : w.layers) {
    uint64_t sum = 0;
    for (size_t i = 0, n = layer_matmuls(l, c.is_moe()).size(); i < n; ++i) sum += whole.at(at++);
    s.layers.push_back(sum);
  }
  if (w.range.output) s.output = whole.at(at++);
  return s;
}

int64_t resident_prefix_layers(const StageLayerBytes& s, uint64_t fixed, uint64_t budget) {
  const int64_t n = static_cast<int64_t>(s.layers.size());
  int64_t best = -1;
  uint64_t resident = 0;
  for (int64_t r = 0; r < std::max<int64_t>(n, 1); ++r) {
    if (r > 0) resident += s.layers[static_cast<size_t>(r - 1)];
    uint64_t streamed = s.output, widest = s.output;
    for (int64_t l = r; l < n; ++l) {
      streamed += s.layers[static_cast<size_t>(l)];
      widest = std::max(widest, s.layers[static_cast<size_t>(l)]);
    }
    const uint64_t window = std::min({2 * widest, streamed, kStreamWindowFloor});
    if (fixed + resident + window <= budget) best = r;
  }
  return best;
}

int64_t streaming_window(const std::vector<uint64_t>& units, uint64_t avail) {
  const int64_t n = static_cast<int64_t>(units.size());
  int64_t window = 1;
  for (int64_t k = 2; k < n; ++k) {
    uint64_t sum = 0, worst = 0;  // the heaviest run of k consecutive units, cyclically (a sliding sum)
    for (int64_t j = 0; j < k; ++j) sum += units[static_cast<size_t>(j)];
    for (int64_t u = 0; u < n; ++u) {
      worst = std::max(worst, sum);
      sum += units[static_cast<size_t>((u + k) % n)];
      sum -= units[static_cast<size_t>(u)];
    }
    if (worst > avail) break;
    window = k;
  }
  return window;
}

}  // namespace herd
