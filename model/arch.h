// Hyper-parameters of a supported architecture, read from GGUF metadata, and the tensor
// names of its per-layer recipe. Supported: llama family (Llama 2/3, Mistral, TinyLlama,
// SmolLM/SmolLM2 — tied embeddings, GQA, rope base/scaling from metadata) and qwen2 (QKV bias).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace herd::model {

class GgufFile;

struct ModelConfig {
  std::string arch;         // general.architecture: "llama" | "qwen2"
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
  bool tied_embeddings = false;  // no output.weight: the output projection reuses token_embd

  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
};

// Throws std::runtime_error with a clear message: "unsupported architecture X (supported: llama, qwen2)",
// or the missing/invalid key.
ModelConfig load_config(const GgufFile& f);

const std::vector<std::string>& supported_architectures();

// GGUF tensor names.
std::string layer_tensor(int64_t layer, const char* what);  // "blk.<layer>.<what>"

}  // namespace herd::model
