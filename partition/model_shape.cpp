#include "partition/model_shape.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <stdexcept>

#include "kernels/dtype.h"
#include "model/gguf.h"
#include "model/synth.h"
#include "partition/shapes.h"

namespace herd::partition {
namespace {

std::string upper(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return s;
}

// Bytes of a [rows x cols] matrix in `t`. A row that is not a whole number of blocks is rounded
// up (llama.cpp would fall back to another type for such a tensor; the difference is small).
uint64_t matrix_bytes(DType t, int64_t rows, int64_t cols) {
  const int64_t blocks = (cols + block_size(t) - 1) / block_size(t);
  return static_cast<uint64_t>(rows) * static_cast<uint64_t>(blocks) * block_bytes(t);
}

void add_type_bytes(std::vector<ModelShape::TypeBytes>& v, DType t, uint64_t bytes) {
  for (auto& tb : v)
    if (tb.type == static_cast<uint32_t>(t)) return void(tb.bytes += bytes);
  v.push_back({static_cast<uint32_t>(t), bytes});
}

// The same quantization mixes `herd synth` writes (model/synth.h); the planner also accepts the bare
// K types (every matrix in that type, output in Q6_K) to size hypothetical files.
model::TypeMix parse_type(const std::string& type) {
  const std::string u = upper(type);
  if (u == "Q3_K" || u == "Q4_K" || u == "Q5_K") {
    const DType t = u == "Q3_K" ? DType::Q3_K : u == "Q4_K" ? DType::Q4_K : DType::Q5_K;
    return {u, t, t, t, DType::Q6_K, 0};
  }
  try {
    return model::parse_type_mix(type);
  } catch (const std::invalid_argument&) {
    throw std::invalid_argument("unknown type '" + type + "' (known: " + known_types() + ")");
  }
}

}  // namespace

std::string known_types() {
  std::string s;
  for (const auto& t : kDTypes) s += (s.empty() ? "" : ", ") + upper(std::string(t.name));
  return s + ", Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M";
}

void ModelShape::finish() {
  prefix_bytes.assign(layer_bytes.size() + 1, 0);
  for (size_t i = 0; i < layer_bytes.size(); ++i) prefix_bytes[i + 1] = prefix_bytes[i] + layer_bytes[i];
}

uint64_t ModelShape::stage_bytes(int64_t first, int64_t end) const {
  uint64_t b = prefix_bytes[static_cast<size_t>(end)] - prefix_bytes[static_cast<size_t>(first)];
  if (end > first) b += per_stage_bytes;
  if (first == 0) b += embd_bytes;
  if (end == n_layers()) {
    b += output_bytes;
    if (config.tied_embeddings && first != 0) b += embd_bytes;  // the output projection reuses token_embd
  }
  return b;
}

double ModelShape::attention_flops(double pos) const {
  return 4.0 * static_cast<double>(config.n_heads * config.head_dim) * pos;  // 2 for QK^T + 2 for AV
}

uint64_t ModelShape::kv_bytes_per_token_layer(double elem_bytes) const {
  return static_cast<uint64_t>(2.0 * elem_bytes * static_cast<double>(config.kv_dim()));
}

double ModelShape::expert_fraction(double n_tokens) const {
  if (config.n_expert <= 0) return 1.0;
  const double p = static_cast<double>(config.n_expert_used) / static_cast<double>(config.n_expert);
  // Each token leaves a given expert out with probability 1 - k/E; n tokens independently.
  return 1.0 - std::pow(1.0 - p, std::max(n_tokens, 1.0));
}

double ModelShape::layer_read_bytes(int64_t l, double n_tokens) const {
  const size_t i = static_cast<size_t>(l);
  const double all = static_cast<double>(layer_bytes[i]);
  const double exps = i < layer_expert_bytes.size() ? static_cast<double>(layer_expert_bytes[i]) : 0.0;
  return all - exps + exps * expert_fraction(n_tokens);
}

double ModelShape::decode_read_bytes() const {
  double b = static_cast<double>(output_bytes) + (config.tied_embeddings ? static_cast<double>(embd_bytes) : 0.0);
  for (int64_t l = 0; l < n_layers(); ++l) b += layer_read_bytes(l, 1);
  return b;
}

namespace {

// "blk.<n>.<rest>": n, or -1 for a tensor outside the layers.
int64_t layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  size_t i = 4;
  int64_t n = 0;
  if (i >= name.size() || !std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) n = n * 10 + (name[i++] - '0');
  return i < name.size() && name[i] == '.' ? n : -1;
}

}  // namespace

ModelShape shape_from_gguf(const model::GgufFile& f, const model::ModelConfig& c) {
  ModelShape s;
  s.config = c;
  s.name = c.name.empty() ? f.path() : c.name;
  s.type = "gguf";
  auto bytes_of = [&](const std::string& n) -> uint64_t {
    const auto* t = f.find_tensor(n);
    if (!t) throw std::runtime_error(f.path() + ": missing tensor " + n);
    return t->n_bytes;
  };
  s.per_stage_bytes = 0;
  if (f.find_tensor("rope_freqs.weight")) s.per_stage_bytes = bytes_of("rope_freqs.weight");
  const size_t L = static_cast<size_t>(c.n_layers);
  s.layer_bytes.assign(L, 0);
  s.layer_flops.assign(L, 0.0);
  s.layer_expert_bytes.assign(L, 0);
  s.layer_matrix_bytes.assign(L, {});
  s.layer_ffn_matrix_bytes.assign(L, {});
  // Every blk.<i>.* tensor is layer i's (what model::stage_tensor_names lists for the architecture,
  // whichever it is); a tensor of a layer past n_layers is nobody's and an error.
  for (const auto& t : f.tensors()) {
    const int64_t l = layer_of(t.name);
    if (l < 0) continue;
    if (l >= c.n_layers)
      throw std::runtime_error(f.path() + ": tensor " + t.name + " is beyond the model's " +
                               std::to_string(c.n_layers) + " layers");
    const size_t i = static_cast<size_t>(l);
    s.layer_bytes[i] += t.n_bytes;
    const double elems = static_cast<double>(t.n_elements());
    if (t.ne.size() == 2) {
      s.layer_flops[i] += 2.0 * elems;
      add_type_bytes(s.layer_matrix_bytes[i], t.type, t.n_bytes);
      const std::string rest = t.name.substr(t.name.find('.', 4) + 1);  // after "blk.<i>."
      if (rest.rfind("ffn_", 0) == 0) add_type_bytes(s.layer_ffn_matrix_bytes[i], t.type, t.n_bytes);
      if (rest == "attn_output.weight") s.wo_block = std::max(s.wo_block, block_size(t.type));
      if (rest == "ffn_down.weight") s.ffn_down_block = std::max(s.ffn_down_block, block_size(t.type));
    } else if (t.ne.size() == 3) {
      // An expert tensor: ne[2] experts of one [ne[0], ne[1]] matrix each; a token uses k of them.
      if (!c.is_moe() || t.ne[2] != c.n_expert)
        throw std::runtime_error(f.path() + ": tensor " + t.name + " has " + std::to_string(t.ne[2]) +
                                 " experts but the model has " + std::to_string(c.n_expert));
      const uint64_t k = static_cast<uint64_t>(c.n_expert_used), E = static_cast<uint64_t>(c.n_expert);
      s.layer_expert_bytes[i] += t.n_bytes;
      s.layer_flops[i] += 2.0 * elems * static_cast<double>(k) / static_cast<double>(E);
      add_type_bytes(s.layer_matrix_bytes[i], t.type, t.n_bytes / E * k);  // n_bytes is E whole experts
    } else if (t.ne.size() > 3) {
      throw std::runtime_error(f.path() + ": tensor " + t.name + " has " + std::to_string(t.ne.size()) + " dimensions");
    }
  }
  s.embd_bytes = bytes_of("token_embd.weight");
  s.output_bytes = bytes_of("output_norm.weight") + (c.tied_embeddings ? 0 : bytes_of("output.weight"));
  s.output_flops = 2.0 * static_cast<double>(c.n_embd) * static_cast<double>(c.n_vocab);
  const auto* out = f.find_tensor(c.tied_embeddings ? "token_embd.weight" : "output.weight");
  s.output_matrix = {static_cast<uint32_t>(out->type), out->n_bytes};
  s.finish();
  return s;
}

ModelShape shape_from_config(const model::ModelConfig& c, const std::string& type) {
  const model::TypeMix mix = parse_type(type);
  ModelShape s;
  s.config = c;
  s.type = upper(type);
  s.name = c.name + " " + s.type;
  const int64_t d = c.n_embd, q = c.q_dim(), kv = c.kv_dim(), ff = c.n_ff;
  const int64_t E = c.n_expert, k = c.n_expert_used, ffe = c.n_ff_exp;
  if (c.is_moe() && (k <= 0 || k > E || ffe <= 0))
    throw std::invalid_argument(c.name + ": a mixture of experts needs 0 < experts per token <= experts and an expert FFN size");
  const uint64_t norm = 4ull * static_cast<uint64_t>(d);
  const bool qk_norm = c.has_qk_norm || c.arch == "qwen3" || c.arch == "qwen3moe";  // as model::synth_tensors
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const int64_t gqa = c.n_heads / c.n_kv_heads;
    const DType k_t = model::layer_matrix_type(mix, model::MixRole::AttnK, l, c.n_layers, gqa, E);
    const DType v_t = model::layer_matrix_type(mix, model::MixRole::AttnV, l, c.n_layers, gqa, E);
    const DType o_t = model::layer_matrix_type(mix, model::MixRole::AttnOutput, l, c.n_layers, gqa, E);
    const DType down_t = model::layer_matrix_type(mix, model::MixRole::FfnDown, l, c.n_layers, gqa, E);
    std::vector<ModelShape::TypeBytes> mats;  // what one decode token reads
    std::vector<ModelShape::TypeBytes> ffn_mats;
    uint64_t b = 2 * norm;                       // attn_norm, ffn_norm (f32)
    if (qk_norm) b += 2ull * 4 * static_cast<uint64_t>(c.head_dim);  // attn_q_norm, attn_k_norm
    if (c.has_qkv_bias) b += 4ull * static_cast<uint64_t>(q + 2 * kv);
    auto matrix = [&](DType t, int64_t rows, int64_t cols) {
      const uint64_t mb = matrix_bytes(t, rows, cols);
      add_type_bytes(mats, t, mb);
      b += mb;
    };
    matrix(mix.base, q, d);   // attn_q   [q rows, d cols]
    matrix(k_t, kv, d);       // attn_k
    matrix(v_t, kv, d);       // attn_v
    matrix(o_t, d, q);        // attn_output
    double flops = 2.0 * static_cast<double>(2 * q * d + 2 * kv * d);
    uint64_t experts = 0;
    if (c.is_moe()) {
      matrix(DType::F32, E, d);  // ffn_gate_inp, the router (never quantized)
      flops += 2.0 * static_cast<double>(E * d) + 2.0 * static_cast<double>(k * 3 * ffe * d);
      // ffn_gate_exps, ffn_up_exps [d, ffe, E]; ffn_down_exps [ffe, d, E]: E matrices each.
      const uint64_t gate = matrix_bytes(mix.base, ffe, d), down = matrix_bytes(down_t, d, ffe);
      experts = static_cast<uint64_t>(E) * (2 * gate + down);
      b += experts;
      add_type_bytes(mats, mix.base, static_cast<uint64_t>(k) * 2 * gate);
      add_type_bytes(mats, down_t, static_cast<uint64_t>(k) * down);
    } else {
      matrix(mix.base, ff, d);  // ffn_gate
      matrix(mix.base, ff, d);  // ffn_up
      matrix(down_t, d, ff);    // ffn_down
      flops += 2.0 * static_cast<double>(3 * ff * d);
      add_type_bytes(ffn_mats, mix.base, 2 * matrix_bytes(mix.base, ff, d));
      add_type_bytes(ffn_mats, down_t, matrix_bytes(down_t, d, ff));
      s.ffn_down_block = std::max(s.ffn_down_block, block_size(down_t));
    }
    s.wo_block = std::max(s.wo_block, block_size(o_t));
    s.layer_ffn_matrix_bytes.push_back(std::move(ffn_mats));
    s.layer_matrix_bytes.push_back(std::move(mats));
    s.layer_bytes.push_back(b);
    s.layer_expert_bytes.push_back(experts);
    s.layer_flops.push_back(flops);
  }
  s.embd_bytes = matrix_bytes(mix.embd, c.n_vocab, d);
  s.output_bytes = norm + (c.tied_embeddings ? 0 : matrix_bytes(mix.output, c.n_vocab, d));
  s.output_flops = 2.0 * static_cast<double>(d) * static_cast<double>(c.n_vocab);
  const DType out_t = c.tied_embeddings ? mix.embd : mix.output;
  s.output_matrix = {static_cast<uint32_t>(out_t), matrix_bytes(out_t, c.n_vocab, d)};
  s.finish();
  return s;
}

ModelShape shape_from_name(const std::string& shape, const std::string& type) {
  auto s = find_shape(shape);
  if (!s) throw std::invalid_argument("unknown shape '" + shape + "' (known: " + known_shape_names() + ")");
  return shape_from_config(shape_config(*s), type);
}

}  // namespace herd::partition
