// An architecture's layer recipe: which of a Stage's blocks one transformer layer runs, in what
// order and with which options. Adding an architecture is a recipe here (engine/recipes.cpp) plus
// its hyper-parameters and tensor names in model/arch.cpp and model/weights.cpp; shared code
// never tests the architecture's name.
#pragma once

#include <cstdint>
#include <string>

namespace herd {

class Stage;

struct AttentionOptions {
  bool qkv_bias = false;  // add bq/bk/bv after the projections (qwen2)
  bool qk_norm = false;   // RMS-norm every q and k head (weights q_norm/k_norm) before rope (qwen3)
};

// One layer (stage-local index il) over the stage's current batch.
using LayerRecipe = void (*)(Stage& stage, int64_t il);

// The recipe of `arch`; throws std::invalid_argument naming the supported architectures.
LayerRecipe recipe_for(const std::string& arch);

}  // namespace herd
