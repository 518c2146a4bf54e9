// The layer recipes of the supported architectures (engine/recipe.h).
#include <stdexcept>

#include "engine/recipe.h"
#include "engine/stage.h"

namespace herd {
namespace {

// The feed-forward the file holds: a mixture of SwiGLU experts when its metadata has an
// expert_count (Mixtral is arch "llama" with llama.expert_count), else one dense SwiGLU.
void feed_forward(Stage& s, int64_t il) {
  if (s.config().is_moe()) s.moe_ffn(il);
  else s.swiglu_ffn(il);
}

// Llama family (Llama 2/3, Mistral, SmolLM, Mixtral): pre-norm attention with rotary embeddings,
// then a SwiGLU feed-forward (or Mixtral's experts), each added to the residual stream.
void llama_layer(Stage& s, int64_t il) {
  s.self_attention(il, {});
  feed_forward(s, il);
}

// Qwen2: llama's layer with biases on the q, k and v projections (its NeoX rope is a
// hyper-parameter, model/arch.cpp).
void qwen2_layer(Stage& s, int64_t il) {
  s.self_attention(il, {.qkv_bias = true});
  feed_forward(s, il);
}

// Qwen3: llama's layer with an RMS norm of every q and k head before rope, no biases (NeoX rope
// and a head_dim of its own, attention.key_length, are hyper-parameters).
void qwen3_layer(Stage& s, int64_t il) {
  s.self_attention(il, {.qk_norm = true});
  feed_forward(s, il);
}

// Qwen3-MoE: qwen3's attention; every layer's feed-forward is routed experts (model/arch.cpp
// requires qwen3moe.expert_count).
void qwen3moe_layer(Stage& s, int64_t il) {
  s.self_attention(il, {.qk_norm = true});
  s.moe_ffn(il);
}

struct Entry {
  const char* arch;
  LayerRecipe layer;
};
constexpr Entry kRecipes[] = {
    {"llama", llama_layer}, {"qwen2", qwen2_layer}, {"qwen3", qwen3_layer}, {"qwen3moe", qwen3moe_layer}};

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
