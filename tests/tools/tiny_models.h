// Tiny seeded models of architecture variants that ../shared has no dump for (qwen2: QKV bias and
// NEOX rope; llama with tied embeddings, GQA and linear rope scaling; qwen3: per-head q/k norms and
// a head_dim of its own; qwen3moe and a Mixtral-style llama: routed experts). The same bytes are written
// on every platform (own RNG, F32 weights), so logits that llama.cpp computed once for these files
// (tests/data/tiny-*.log1, made by scripts/gen-arch-reference.py) stay valid references.
#pragma once

#include <string>
#include <vector>

#include "kernels/dtype.h"

namespace herd::test {

struct TinyModelSpec {
  std::string name;  // "qwen2", "llama-tied", "qwen3", "qwen3moe", "mixtral", "qwen3moe-q8"
  std::string arch;
  bool tied = false;
  bool qkv_bias = false;
  float rope_scale_linear = 0;  // 0: none
  int64_t head_dim = 0;         // 0: n_embd / n_heads; else written as attention.key_length/value_length
  bool qk_norm = false;         // attn_q_norm / attn_k_norm (random, not all ones)
  int64_t n_expert = 0;         // 0: dense feed-forward; else expert_count (and the 3-D expert tensors)
  int64_t n_expert_used = 0;
  int64_t n_ff_exp = 0;         // 0: no expert_feed_forward_length key (experts of feed_forward_length)
  DType matrices = DType::F32;  // the 2-D/3-D weight type (Q8_0: herd's quantizer); norms stay F32
  int64_t n_layers = 2;         // 3 for the MoE models: a 3-stage split has a layer per stage
};

const std::vector<TinyModelSpec>& tiny_model_specs();

// Writes the model to `path`, taking the 512-token vocabulary from `vocab_donor` (stories260K.gguf).
void write_tiny_model(const TinyModelSpec& spec, const std::string& vocab_donor, const std::string& path);

// The token sequence the reference logits were computed for (first kTinyPrompt as one batch).
const std::vector<int32_t>& tiny_model_tokens();
constexpr int kTinyPrompt = 6;

// Randk-style models in llama.cpp's 2- and 3-bit K-quant mixes (lowbit_model_mixes(): "Q2_K", "Q3_K_M";
// the per-tensor types of model::parse_type_mix / layer_matrix_type): llama, 2 layers, n_embd 256,
// n_ff 512 (whole 256-value super-blocks), 4 heads, 2 KV heads, the donor's 512-token vocabulary;
// uniform weights from the same RNG, quantized by herd's quantizer. deq = true writes every matrix
// as F32 of its dequantized values instead: the exact math of the quantized file. Same bytes on
// every platform; tests/data/lowbit-*.log1 hold llama.cpp's logits for them (quantized and -deq).
const std::vector<std::string>& lowbit_model_mixes();
void write_lowbit_model(const std::string& mix, bool deq, const std::string& vocab_donor, const std::string& path);

}  // namespace herd::test
