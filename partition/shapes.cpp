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
  // name, arch, layers, n_embd, n_ff, heads, kv heads, vocab, training ctx, tied, rope base.
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
  c.head_dim = s.n_embd / s.n_heads;
  c.n_vocab = s.n_vocab;
  c.n_ctx_train = s.n_ctx_train;
  c.n_rot = c.head_dim;
  c.rope_freq_base = s.rope_freq_base;
  c.tied_embeddings = s.tied_embeddings;
  return c;
}

}  // namespace herd::partition
