// The layer recipes of the supported architectures (engine/recipe.h).
#include <stdexcept>

#include "engine/recipe.h"
#include "engine/stage.h"

namespace herd {
namespace {

// Llama family (Llama 2/3, Mistral, SmolLM): pre-norm attention with rotary embeddings, then a
// SwiGLU feed-forward, each added to the residual stream.
void llama_layer(Stage& s, int64_t il) {
  s.self_attention(il, {});
  s.swiglu_ffn(il);
}

// Qwen2: llama's layer with biases on the q, k and v projections (its NeoX rope is a
// hyper-parameter, model/arch.cpp).
void qwen2_layer(Stage& s, int64_t il) {
  s.self_attention(il, {.qkv_bias = true});
  s.swiglu_ffn(il);
}

struct Entry {
  const char* arch;
  LayerRecipe layer;
};
constexpr Entry kRecipes[] = {{"llama", llama_layer}, {"qwen2", qwen2_layer}};

}  // namespace

LayerRecipe recipe_for(const std::string& arch) {
  std::string names;
  for (const Entry& e : kRecipes) {
    if (arch == e.arch) return e.layer;
    names += (names.empty() ? "" : ", ") + std::string(e.arch);
  }
  throw std::invalid_argument("no layer recipe for architecture '" + arch + "' (have: " + names + ")");
}

}  // namespace herd
