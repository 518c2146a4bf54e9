// One pipeline stage: a contiguous range of a model's layers with their KV cache, run on one
// backend. The first stage turns token ids into hidden states (embedding lookup); the last
// turns hidden states into logits (final norm + output projection). A single-process run is
// one stage that is both.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "model/arch.h"
#include "model/weights.h"
#include "engine/kv_cache.h"

namespace herd {

class Stage {
 public:
  // `weights` point into a mapping that must outlive the Stage.
  Stage(const model::ModelConfig& config, model::StageWeights weights, Backend& backend, int64_t n_ctx);

  const model::ModelConfig& config() const { return config_; }
  const model::LayerRange& range() const { return w_.range; }
  int64_t n_ctx() const { return cache_.n_ctx(); }
  const KvCache& cache() const { return cache_; }

  // Runs n tokens at positions pos0 .. pos0+n-1 (the cache must hold positions < pos0).
  // First stage: input is token ids (tokens, n); others: hidden [n, n_embd] in `hidden`.
  // Output: if this stage owns the output, logits [n_out, n_vocab] where n_out = all_logits ? n : 1
  // (the last token's row); otherwise the hidden state [n, n_embd], written to `out`.
  void forward(const int32_t* tokens, const float* hidden, int64_t n, int64_t pos0, bool all_logits,
               std::vector<float>& out);

 private:
  void layer(int64_t il, int64_t n, int64_t pos0);

  model::ModelConfig config_;
  model::StageWeights w_;
  Backend& be_;
  KvCache cache_;
  // Scratch, resized per call: [n, dim] row-major.
  std::vector<float> x_, cur_, q_, k_, v_, attn_, gate_, up_;
  std::vector<int32_t> pos_;
};

}  // namespace herd
