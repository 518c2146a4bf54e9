#include "partition/model_shape.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "kernels/dtype.h"
#include "model/gguf.h"
#include "model/synth.h"
#include "model/weights.h"
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
  auto elems_of = [&](const std::string& n) -> double {
    const auto* t = f.find_tensor(n);
    return t ? static_cast<double>(t->n_elements()) : 0.0;
  };
  s.per_stage_bytes = 0;
  if (f.find_tensor("rope_freqs.weight")) s.per_stage_bytes = bytes_of("rope_freqs.weight");
  for (int64_t l = 0; l < c.n_layers; ++l) {
    // Every tensor of the one-layer stage, minus what every stage holds: exactly weights.cpp's list.
    const model::LayerRange r{l, l + 1, false, false};
    uint64_t b = 0;
    double flops = 0;
    std::vector<ModelShape::TypeBytes> mats;
    for (const auto& n : model::stage_tensor_names(f, c, r)) {
      if (n == "rope_freqs.weight") continue;
      b += bytes_of(n);
      const auto* t = f.find_tensor(n);
      if (t->ne.size() == 2) {
        flops += 2.0 * elems_of(n);
        add_type_bytes(mats, t->type, t->n_bytes);
      }
    }
    s.layer_matrix_bytes.push_back(std::move(mats));
    s.layer_bytes.push_back(b);
    s.layer_flops.push_back(flops);
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
  const uint64_t norm = 4ull * static_cast<uint64_t>(d);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const int64_t gqa = c.n_heads / c.n_kv_heads;
    const DType v_t = model::layer_matrix_type(mix, model::MixRole::AttnV, l, c.n_layers, gqa);
    const DType o_t = model::layer_matrix_type(mix, model::MixRole::AttnOutput, l, c.n_layers, gqa);
    const DType down_t = model::layer_matrix_type(mix, model::MixRole::FfnDown, l, c.n_layers, gqa);
    uint64_t b = 2 * norm;                       // attn_norm, ffn_norm (f32)
    b += matrix_bytes(mix.base, q, d);           // attn_q   [q rows, d cols]
    b += matrix_bytes(mix.base, kv, d);          // attn_k
    b += matrix_bytes(v_t, kv, d);               // attn_v
    b += matrix_bytes(o_t, d, q);                // attn_output
    b += 2 * matrix_bytes(mix.base, ff, d);      // ffn_gate, ffn_up
    b += matrix_bytes(down_t, d, ff);            // ffn_down
    if (c.has_qkv_bias) b += 4ull * static_cast<uint64_t>(q + 2 * kv);
    std::vector<ModelShape::TypeBytes> mats;
    add_type_bytes(mats, mix.base, matrix_bytes(mix.base, q, d) + matrix_bytes(mix.base, kv, d) +
                                       2 * matrix_bytes(mix.base, ff, d));
    add_type_bytes(mats, v_t, matrix_bytes(v_t, kv, d));
    add_type_bytes(mats, o_t, matrix_bytes(o_t, d, q));
    add_type_bytes(mats, down_t, matrix_bytes(down_t, d, ff));
    s.layer_matrix_bytes.push_back(std::move(mats));
    s.layer_bytes.push_back(b);
    s.layer_flops.push_back(2.0 * static_cast<double>(2 * q * d + 2 * kv * d + 3 * ff * d));
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
