#include "model/arch.h"

#include <algorithm>
#include <stdexcept>

#include "model/gguf.h"

namespace herd::model {
namespace {

int64_t require_int(const GgufFile& f, const std::string& key) {
  auto v = f.get_int(key);
  if (!v) throw std::runtime_error(f.path() + ": missing metadata key " + key);
  return *v;
}

void check_positive(const GgufFile& f, const std::string& key, int64_t v, int64_t max = (int64_t{1} << 31)) {
  if (v <= 0 || v > max)
    throw std::runtime_error(f.path() + ": metadata " + key + " = " + std::to_string(v) + " is out of range");
}

}  // namespace

const std::vector<std::string>& supported_architectures() {
  static const std::vector<std::string> archs = {"llama", "qwen2", "qwen3", "qwen3moe"};
  return archs;
}

std::string layer_tensor(int64_t layer, const char* what) {
  return "blk." + std::to_string(layer) + "." + what;
}

ModelConfig load_config(const GgufFile& f) {
  ModelConfig c;
  auto arch = f.get_string("general.architecture");
  if (!arch) throw std::runtime_error(f.path() + ": missing metadata key general.architecture");
  const auto& archs = supported_architectures();
  if (std::find(archs.begin(), archs.end(), *arch) == archs.end()) {
    std::string list;
    for (const auto& a : archs) list += (list.empty() ? "" : ", ") + a;
    throw std::runtime_error(f.path() + ": unsupported architecture " + *arch + " (supported: " + list + ")");
  }
  c.arch = *arch;
  c.name = f.get_string("general.name").value_or("");
  const std::string p = c.arch + ".";

  c.n_layers = require_int(f, p + "block_count");
  check_positive(f, p + "block_count", c.n_layers, 10000);
  c.n_embd = require_int(f, p + "embedding_length");
  check_positive(f, p + "embedding_length", c.n_embd, 1 << 20);
  c.n_ff = require_int(f, p + "feed_forward_length");
  check_positive(f, p + "feed_forward_length", c.n_ff, 1 << 22);
  c.n_heads = require_int(f, p + "attention.head_count");
  check_positive(f, p + "attention.head_count", c.n_heads, 1 << 16);
  c.n_kv_heads = f.get_int(p + "attention.head_count_kv").value_or(c.n_heads);
  check_positive(f, p + "attention.head_count_kv", c.n_kv_heads, c.n_heads);
  if (c.n_heads % c.n_kv_heads != 0)
    throw std::runtime_error(f.path() + ": attention.head_count " + std::to_string(c.n_heads) +
                             " is not a multiple of head_count_kv " + std::to_string(c.n_kv_heads));
  if (c.n_embd % c.n_heads != 0 && !f.has(p + "attention.key_length"))
    throw std::runtime_error(f.path() + ": embedding_length is not a multiple of attention.head_count");
  c.head_dim = f.get_int(p + "attention.key_length").value_or(c.n_embd / c.n_heads);
  check_positive(f, p + "attention.key_length", c.head_dim, 1 << 12);
  if (auto vl = f.get_int(p + "attention.value_length"); vl && *vl != c.head_dim)
    throw std::runtime_error(f.path() + ": attention.value_length != key_length is not supported");
  c.n_ctx_train = f.get_int(p + "context_length").value_or(2048);
  check_positive(f, p + "context_length", c.n_ctx_train, int64_t{1} << 30);
  c.rms_eps = static_cast<float>(f.get_float(p + "attention.layer_norm_rms_epsilon").value_or(1e-5));
  if (!(c.rms_eps > 0.0f && c.rms_eps < 1.0f))
    throw std::runtime_error(f.path() + ": attention.layer_norm_rms_epsilon out of range");

  c.rope_mode = c.arch == "llama" ? RopeMode::Normal : RopeMode::Neox;
  c.n_rot = f.get_int(p + "rope.dimension_count").value_or(c.head_dim);
  if (c.n_rot <= 0 || c.n_rot > c.head_dim || c.n_rot % 2 != 0)
    throw std::runtime_error(f.path() + ": rope.dimension_count " + std::to_string(c.n_rot) + " is invalid");
  c.rope_freq_base = static_cast<float>(f.get_float(p + "rope.freq_base").value_or(10000.0));
  if (!(c.rope_freq_base > 0.0f)) throw std::runtime_error(f.path() + ": rope.freq_base must be positive");
  const std::string scaling = f.get_string(p + "rope.scaling.type").value_or("none");
  if (scaling == "linear") {
    double factor = f.get_float(p + "rope.scaling.factor").value_or(1.0);
    if (!(factor > 0.0)) throw std::runtime_error(f.path() + ": rope.scaling.factor must be positive");
    c.rope_freq_scale = static_cast<float>(1.0 / factor);
  } else if (scaling != "none") {
    throw std::runtime_error(f.path() + ": rope.scaling.type " + scaling + " is not supported (supported: none, linear)");
  }

  c.has_qkv_bias = c.arch == "qwen2";
  c.has_qk_norm = c.arch == "qwen3" || c.arch == "qwen3moe";

  c.n_expert = f.get_int(p + "expert_count").value_or(0);
  if (c.arch == "qwen3moe" && c.n_expert == 0)
    throw std::runtime_error(f.path() + ": missing metadata key " + p + "expert_count");
  if (c.n_expert != 0) {
    check_positive(f, p + "expert_count", c.n_expert, 4096);
    c.n_expert_used = require_int(f, p + "expert_used_count");
    check_positive(f, p + "expert_used_count", c.n_expert_used, c.n_expert);
    // Without the key, llama.cpp's experts are feed_forward_length wide for llama (Mixtral) and
    // feed_forward_length / expert_used_count for qwen3moe; the tensors' shapes are then checked.
    c.n_ff_exp = f.get_int(p + "expert_feed_forward_length")
                     .value_or(c.arch == "qwen3moe" ? c.n_ff / c.n_expert_used : c.n_ff);
    check_positive(f, p + "expert_feed_forward_length", c.n_ff_exp, 1 << 22);
    if (auto g = f.get_int(p + "expert_gating_func"); g && *g != 1)  // llama.cpp: 1 softmax, 2 sigmoid
      throw std::runtime_error(f.path() + ": " + p + "expert_gating_func " + std::to_string(*g) +
                               " is not supported (supported: 1, softmax)");
    if (auto s = f.get_int(p + "expert_shared_count"); s && *s != 0)
      throw std::runtime_error(f.path() + ": shared experts (" + p + "expert_shared_count) are not supported");
  }

  const GgufTensorInfo* embd = f.find_tensor("token_embd.weight");
  if (!embd) throw std::runtime_error(f.path() + ": missing tensor token_embd.weight");
  if (embd->ne.size() != 2 || embd->ne[0] != c.n_embd)
    throw std::runtime_error(f.path() + ": token_embd.weight has the wrong shape for embedding_length " +
                             std::to_string(c.n_embd));
  c.n_vocab = embd->ne[1];
  c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
  return c;
}

}  // namespace herd::model
