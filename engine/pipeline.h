// A Pipeline evaluates token batches through all of a model's stages and returns logits.
// LocalPipeline runs its stages in this process, in order (one stage = a plain single-host run;
// several = the same split a cluster would use, for checking that splits change nothing).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/sampler.h"
#include "kernels/backend.h"
#include "model/arch.h"
#include "model/weights.h"
#include "engine/stage.h"

namespace herd {
namespace model {
class GgufFile;
}

class Pipeline {
 public:
  virtual ~Pipeline() = default;
  virtual const model::ModelConfig& config() const = 0;
  virtual int64_t n_ctx() const = 0;
  // Evaluates tokens[0..n) at positions pos0..pos0+n-1. logits: [n, n_vocab] when all_logits, else
  // the last token's [n_vocab]. Positions >= pos0 from earlier calls are overwritten (rewind).
  virtual void eval(const int32_t* tokens, int64_t n, int64_t pos0, bool all_logits, std::vector<float>& logits) = 0;
  // Evaluates like eval() and samples the last token's logits with `sampler` (advancing its RNG
  // exactly as sampler.sample() would; it does not accept() the result). The default samples here
  // from eval()'s logits; a RemotePipeline lets its last stage sample and moves one token id, not
  // a logits row. Same seed and history => same token either way.
  virtual int32_t eval_sample(const int32_t* tokens, int64_t n, int64_t pos0, Sampler& sampler) {
    eval(tokens, n, pos0, false, sample_logits_);
    return sampler.sample(sample_logits_.data());
  }

 private:
  std::vector<float> sample_logits_;  // [n_vocab] scratch of the default eval_sample
};

class LocalPipeline : public Pipeline {
 public:
  // ranges: contiguous stage ranges covering every layer once; empty = one stage with all layers.
  LocalPipeline(const model::GgufFile& f, const model::ModelConfig& c, Backend& backend, int64_t n_ctx,
                std::vector<model::LayerRange> ranges = {});

  const model::ModelConfig& config() const override { return config_; }
  int64_t n_ctx() const override { return n_ctx_; }
  void eval(const int32_t* tokens, int64_t n, int64_t pos0, bool all_logits, std::vector<float>& logits) override;

 private:
  model::ModelConfig config_;
  int64_t n_ctx_;
  std::vector<std::unique_ptr<Stage>> stages_;
  std::vector<float> hidden_a_, hidden_b_;
};

// Splits n_layers into contiguous ranges from a spec like "0-9,10-21" (inclusive bounds), checking
// that they cover every layer exactly once and in order. Throws std::invalid_argument with the reason.
std::vector<model::LayerRange> parse_split(const std::string& spec, int64_t n_layers);

}  // namespace herd
