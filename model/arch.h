// Hyper-parameters of a supported architecture, read from GGUF metadata, and the tensor
// names of its per-layer recipe. Supported: llama family (Llama 2/3, Mistral, TinyLlama,
// SmolLM/SmolLM2 — tied embeddings, GQA, rope base/scaling from metadata; with expert_count > 0 a
// Mixtral-style mixture of experts), qwen2 (QKV bias), qwen3 (per-head q/k RMS norms) and qwen3moe
// (qwen3's attention, every layer's feed-forward a mixture of routed experts).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace herd::model {

class GgufFile;

struct ModelConfig {
  std::string arch;         // general.architecture: "llama" | "qwen2" | "qwen3" | "qwen3moe"
  std::string name;         // general.name (may be empty)
  int64_t n_layers = 0;
  int64_t n_embd = 0;
  int64_t n_ff = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;     // n_embd / n_heads unless attention.key_length says otherwise
  int64_t n_vocab = 0;      // rows of token_embd.weight
  int64_t n_ctx_train = 0;
  float rms_eps = 1e-5f;
  RopeMode rope_mode = RopeMode::Normal;
  int64_t n_rot = 0;
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // 1 / rope.scaling.factor for linear scaling
  bool has_qkv_bias = false;     // qwen2
  bool has_qk_norm = false;      // qwen3, qwen3moe: RMS norm of each q and k head before rope
  // Mixture of experts (0 experts: a dense feed-forward of n_ff). Each layer's FFN is n_expert
  // SwiGLU experts of n_ff_exp rows; a router (ffn_gate_inp) picks n_expert_used per token, their
  // outputs weighted by the softmax of the router logits over all experts, renormalised over the
  // chosen ones (both Mixtral and Qwen3-MoE GGUFs ask for this).
  int64_t n_expert = 0;
  int64_t n_expert_used = 0;
  int64_t n_ff_exp = 0;          // expert_feed_forward_length (without it: as llama.cpp, arch.cpp)
  bool tied_embeddings = false;  // no output.weight: the output projection reuses token_embd

  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  bool is_moe() const { return n_expert > 0; }
};

// Throws std::runtime_error with a clear message: "unsupported architecture X (supported: llama, qwen2)",
// or the missing/invalid key.
ModelConfig load_config(const GgufFile& f);

const std::vector<std::string>& supported_architectures();

// GGUF tensor names.
std::string layer_tensor(int64_t layer, const char* what);  // "blk.<layer>.<what>"

}  // namespace herd::model
