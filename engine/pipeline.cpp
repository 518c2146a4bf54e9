#include "engine/pipeline.h"

#include <sstream>
#include <stdexcept>
#include <string>

#include "model/gguf.h"

namespace herd {

LocalPipeline::LocalPipeline(const model::GgufFile& f, const model::ModelConfig& c, Backend& backend, int64_t n_ctx,
                             std::vector<model::LayerRange> ranges)
    : config_(c), n_ctx_(n_ctx) {
  if (n_ctx <= 0) throw std::invalid_argument("context size must be positive");
  if (ranges.empty()) ranges.push_back({0, c.n_layers, true, true});
  for (size_t i = 0; i < ranges.size(); ++i) {
    ranges[i].embedding = i == 0;
    ranges[i].output = i + 1 == ranges.size();
    stages_.push_back(
        std::make_unique<Stage>(c, model::load_stage_weights(f, c, ranges[i]), backend, n_ctx));
  }
}

void LocalPipeline::eval(const int32_t* tokens, int64_t n, int64_t pos0, bool all_logits,
                         std::vector<float>& logits) {
  const float* in = nullptr;
  for (size_t i = 0; i < stages_.size(); ++i) {
    const bool last = i + 1 == stages_.size();
    std::vector<float>& out = last ? logits : (i % 2 ? hidden_b_ : hidden_a_);
    stages_[i]->forward(i == 0 ? tokens : nullptr, in, n, pos0, all_logits, out);
    in = out.data();
  }
}

std::vector<model::LayerRange> parse_split(const std::string& spec, int64_t n_layers) {
  std::vector<model::LayerRange> out;
  std::stringstream ss(spec);
  std::string part;
  int64_t next = 0;
  while (std::getline(ss, part, ',')) {
    int64_t a = 0, b = 0;
    char dash = 0, extra = 0;
    std::istringstream ps(part);
    if (!(ps >> a >> dash >> b) || dash != '-' || (ps >> extra))
      throw std::invalid_argument("bad --split part '" + part + "' (expected FIRST-LAST, e.g. 0-9)");
    if (a != next)
      throw std::invalid_argument("--split part '" + part + "' must start at layer " + std::to_string(next) +
                                  " (ranges are contiguous and in order)");
    if (b < a) throw std::invalid_argument("--split part '" + part + "' is empty or reversed");
    if (b >= n_layers)
      throw std::invalid_argument("--split part '" + part + "' goes past the model's last layer " +
                                  std::to_string(n_layers - 1));
    out.push_back({a, b + 1, false, false});
    next = b + 1;
  }
  if (next != n_layers)
    throw std::invalid_argument("--split '" + spec + "' covers layers 0-" + std::to_string(next - 1) + " of 0-" +
                                std::to_string(n_layers - 1));
  out.front().embedding = true;
  out.back().output = true;
  return out;
}

}  // namespace herd
