#include "partition/shapes.h"

#include <cctype>

namespace herd::partition {
namespace {

// Lower-case, drop '-', '_' and '.' so "Llama-3.1-405B" == "llama3.1-405b" == "llama31405b".
std::string key(std::string_view s) {
  std::string k;
  for (char ch : s) {
    if (ch == '-' || ch == '_' || ch == '.') continue;
    k += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  }
  return k;
}

}  // namespace

const std::vector<NamedShape>& known_shapes() {
  // name, arch, layers, n_embd, n_ff, heads, kv heads, vocab, training ctx, tied, rope base
  // [, head_dim, experts, experts per token, expert FFN size].
  // Sources: the models' config.json on Hugging Face.
  static const std::vector<NamedShape> shapes = {
      {"stories110m", "llama", 12, 768, 2048, 12, 12, 32000, 1024, false, 10000.0f},
      {"smollm2-135m", "llama", 30, 576, 1536, 9, 3, 49152, 8192, true, 100000.0f},
      {"smollm2-1.7b", "llama", 24, 2048, 8192, 32, 32, 49152, 8192, true, 130000.0f},
      {"tinyllama-1.1b", "llama", 22, 2048, 5632, 32, 4, 32000, 2048, false, 10000.0f},
      {"llama2-7b", "llama", 32, 4096, 11008, 32, 32, 32000, 4096, false, 10000.0f},
      {"llama2-13b", "llama", 40, 5120, 13824, 40, 40, 32000, 4096, false, 10000.0f},
      {"llama2-70b", "llama", 80, 8192, 28672, 64, 8, 32000, 4096, false, 10000.0f},
      {"mistral-7b", "llama", 32, 4096, 14336, 32, 8, 32000, 32768, false, 1000000.0f},
      {"llama3-8b", "llama", 32, 4096, 14336, 32, 8, 128256, 8192, false, 500000.0f},
      {"llama3-70b", "llama", 80, 8192, 28672, 64, 8, 128256, 8192, false, 500000.0f},
      {"llama3.1-8b", "llama", 32, 4096, 14336, 32, 8, 128256, 131072, false, 500000.0f},
      {"llama3.1-70b", "llama", 80, 8192, 28672, 64, 8, 128256, 131072, false, 500000.0f},
      {"llama3.1-405b", "llama", 126, 16384, 53248, 128, 8, 128256, 131072, false, 500000.0f},
      // Qwen3 (Qwen/Qwen3-*/config.json): head_dim 128 whatever hidden_size / num_attention_heads is
      // (32B: 5120 / 64 = 80, yet q is 64 x 128 = 8192 wide); vocab_size 151936; max_position_embeddings
      // 40960; rope_theta 1e6; the 8B and larger are untied (tie_word_embeddings false; the 0.6B-4B are
      // tied); rms_norm_eps 1e-6; per-head q_norm / k_norm.
      //   Qwen3-8B:  36 layers, hidden 4096, intermediate 12288, 32 heads, 8 kv heads.
      //   Qwen3-32B: 64 layers, hidden 5120, intermediate 25600, 64 heads, 8 kv heads.
      {"qwen3-8b", "qwen3", 36, 4096, 12288, 32, 8, 151936, 40960, false, 1000000.0f, 128},
      {"qwen3-32b", "qwen3", 64, 5120, 25600, 64, 8, 151936, 40960, false, 1000000.0f, 128},
      // Qwen3-MoE (model_type qwen3_moe, decoder_sparse_step 1, mlp_only_layers []: every layer is
      // MoE; norm_topk_prob true; no shared expert), same head_dim / vocab / ctx / rope / untied:
      //   Qwen3-30B-A3B:   48 layers, hidden 2048, intermediate 6144, 32 heads, 4 kv heads,
      //                    num_experts 128, num_experts_per_tok 8, moe_intermediate_size 768.
      //   Qwen3-235B-A22B: 94 layers, hidden 4096, intermediate 12288, 64 heads, 4 kv heads,
      //                    num_experts 128, num_experts_per_tok 8, moe_intermediate_size 1536.
      {"qwen3-30b-a3b", "qwen3moe", 48, 2048, 6144, 32, 4, 151936, 40960, false, 1000000.0f, 128, 128, 8, 768},
      {"qwen3-235b-a22b", "qwen3moe", 94, 4096, 12288, 64, 4, 151936, 40960, false, 1000000.0f, 128, 128, 8, 1536},
      // Mixtral (mistralai/Mixtral-8x{7,22}B-v0.1/config.json; a "llama" GGUF with llama.expert_count):
      // num_local_experts 8, num_experts_per_tok 2, each expert intermediate_size wide; vocab 32000,
      // rope_theta 1e6, untied, head_dim 128.
      //   8x7B:  32 layers, hidden 4096, intermediate 14336, 32 heads, 8 kv heads, 32768 positions.
      //   8x22B: 56 layers, hidden 6144, intermediate 16384, 48 heads, 8 kv heads, 65536 positions.
      {"mixtral-8x7b", "llama", 32, 4096, 14336, 32, 8, 32000, 32768, false, 1000000.0f, 128, 8, 2, 14336},
      {"mixtral-8x22b", "llama", 56, 6144, 16384, 48, 8, 32000, 65536, false, 1000000.0f, 128, 8, 2, 16384},
  };
  return shapes;
}

std::optional<NamedShape> find_shape(std::string_view name) {
  const std::string k = key(name);
  for (const auto& s : known_shapes())
    if (key(s.name) == k) return s;
  return std::nullopt;
}

std::string known_shape_names() {
  std::string out;
  for (const auto& s : known_shapes()) out += (out.empty() ? "" : ", ") + s.name;
  return out;
}

model::ModelConfig shape_config(const NamedShape& s) {
  model::ModelConfig c;
  c.arch = s.arch;
  c.name = s.name;
  c.n_layers = s.n_layers;
  c.n_embd = s.n_embd;
  c.n_ff = s.n_ff;
  c.n_heads = s.n_heads;
  c.n_kv_heads = s.n_kv_heads;
  c.head_dim = s.head_dim > 0 ? s.head_dim : s.n_embd / s.n_heads;
  c.n_vocab = s.n_vocab;
  c.n_ctx_train = s.n_ctx_train;
  c.n_rot = c.head_dim;
  c.rope_freq_base = s.rope_freq_base;
  c.tied_embeddings = s.tied_embeddings;
  c.has_qk_norm = s.arch == "qwen3" || s.arch == "qwen3moe";
  if (c.has_qk_norm) c.rms_eps = 1e-6f;
  c.n_expert = s.n_expert;
  c.n_expert_used = s.n_expert_used;
  c.n_ff_exp = s.n_expert > 0 ? (s.n_ff_exp > 0 ? s.n_ff_exp : s.n_ff) : 0;
  c.rope_mode = s.arch == "llama" ? RopeMode::Normal : RopeMode::Neox;
  return c;
}

}  // namespace herd::partition
