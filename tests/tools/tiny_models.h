// Tiny seeded models of architecture variants that ../shared has no dump for (qwen2: QKV bias and
// NEOX rope; llama with tied embeddings, GQA and linear rope scaling). The same bytes are written
// on every platform (own RNG, F32 weights), so logits that llama.cpp computed once for these files
// (tests/data/tiny-*.log1, made by scripts/gen-arch-reference.py) stay valid references.
#pragma once

#include <string>
#include <vector>

namespace herd::test {

struct TinyModelSpec {
  std::string name;  // "qwen2", "llama-tied"
  std::string arch;
  bool tied = false;
  bool qkv_bias = false;
  float rope_scale_linear = 0;  // 0: none
};

const std::vector<TinyModelSpec>& tiny_model_specs();

// Writes the model to `path`, taking the 512-token vocabulary from `vocab_donor` (stories260K.gguf).
void write_tiny_model(const TinyModelSpec& spec, const std::string& vocab_donor, const std::string& path);

// The token sequence the reference logits were computed for (first kTinyPrompt as one batch).
const std::vector<int32_t>& tiny_model_tokens();
constexpr int kTinyPrompt = 6;

}  // namespace herd::test
