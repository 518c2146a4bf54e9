// Named model shapes: the published hyper-parameters of well-known models, so the planner (and
// `herd synth`) can reason about a model nobody has downloaded. Only the numbers that decide
// tensor sizes and FLOPs are here; rope/eps details are irrelevant for planning. Mixture-of-experts
// shapes carry the expert count, experts per token and the expert FFN size.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/arch.h"

namespace herd::partition {

struct NamedShape {
  std::string name;      // "llama3-70b"
  std::string arch;      // "llama"
  int64_t n_layers = 0;
  int64_t n_embd = 0;
  int64_t n_ff = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t n_vocab = 0;
  int64_t n_ctx_train = 0;
  bool tied_embeddings = false;  // no output.weight
  float rope_freq_base = 10000.0f;
  int64_t head_dim = 0;       // 0: n_embd / n_heads (Qwen3 uses 128 even where that differs)
  // Mixture of experts (0 experts: dense). Every layer's FFN is n_expert experts of n_ff_exp rows,
  // n_expert_used of them per token; n_ff is then the dense FFN size config.json also lists
  // (Qwen3-MoE's intermediate_size, unused by its layers) or, for Mixtral, the experts' size.
  int64_t n_expert = 0;
  int64_t n_expert_used = 0;
  int64_t n_ff_exp = 0;       // 0: n_ff
};

// Every known shape, in the order `herd plan --help` lists them.
const std::vector<NamedShape>& known_shapes();

// The shape called `name` (case-insensitive; "llama-3-70b" and "llama3-70b" both match);
// nullopt when unknown.
std::optional<NamedShape> find_shape(std::string_view name);

// "llama3-8b, llama3-70b, ..." for error messages.
std::string known_shape_names();

// A ModelConfig with the shape's hyper-parameters (head_dim as above, n_rot = head_dim; qwen3 and
// qwen3moe get their q/k norms and rms_eps 1e-6).
model::ModelConfig shape_config(const NamedShape& s);

}  // namespace herd::partition
