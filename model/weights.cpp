#include "model/weights.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <stdexcept>

#include "kernels/quant.h"
#include "model/gguf.h"

namespace herd::model {
namespace {

std::string shape_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

const GgufTensorInfo& require(const GgufFile& f, const std::string& name) {
  const GgufTensorInfo* t = f.find_tensor(name);
  if (!t) throw std::runtime_error(f.path() + ": missing tensor " + name);
  return *t;
}

// A matrix with `cols` values per row (GGUF ne[0]) and `rows` rows (ne[1]).
WeightMatrix matrix(const GgufFile& f, const std::string& name, int64_t cols, int64_t rows) {
  const GgufTensorInfo& t = require(f, name);
  if (t.ne.size() != 2 || t.ne[0] != cols || t.ne[1] != rows)
    throw std::runtime_error(f.path() + ": tensor " + name + " has shape " + shape_str(t.ne) + ", expected [" +
                             std::to_string(cols) + ", " + std::to_string(rows) + "]");
  WeightMatrix w;
  w.type = t.type;
  w.data = f.tensor_data(t);
  w.rows = rows;
  w.cols = cols;
  w.row_stride = row_bytes(t.type, cols);
  return w;
}

// The n_expert matrices of a 3-D expert tensor (GGUF ne [cols, rows, n_expert]): expert e's rows
// are the contiguous bytes [e * rows * row_bytes, (e + 1) * rows * row_bytes) of the tensor.
std::vector<WeightMatrix> expert_matrices(const GgufFile& f, const std::string& name, int64_t cols, int64_t rows,
                                          int64_t n_expert) {
  const GgufTensorInfo& t = require(f, name);
  if (t.ne.size() != 3 || t.ne[0] != cols || t.ne[1] != rows || t.ne[2] != n_expert)
    throw std::runtime_error(f.path() + ": tensor " + name + " has shape " + shape_str(t.ne) + ", expected [" +
                             std::to_string(cols) + ", " + std::to_string(rows) + ", " + std::to_string(n_expert) + "]");
  const size_t stride = row_bytes(t.type, cols), expert_bytes = stride * static_cast<size_t>(rows);
  if (t.n_bytes != expert_bytes * static_cast<size_t>(n_expert))
    throw std::runtime_error(f.path() + ": tensor " + name + " holds " + std::to_string(t.n_bytes) + " bytes, expected " +
                             std::to_string(expert_bytes * static_cast<size_t>(n_expert)));
  const auto* base = static_cast<const uint8_t*>(f.tensor_data(t));
  std::vector<WeightMatrix> out(static_cast<size_t>(n_expert));
  for (int64_t e = 0; e < n_expert; ++e) {
    WeightMatrix& w = out[static_cast<size_t>(e)];
    w.type = t.type;
    w.data = base + static_cast<size_t>(e) * expert_bytes;
    w.rows = rows;
    w.cols = cols;
    w.row_stride = stride;
  }
  return out;
}

// A 1-D tensor of n values, converted to f32 (norm weights and biases are tiny).
std::vector<float> vector_f32(const GgufFile& f, const std::string& name, int64_t n) {
  const GgufTensorInfo& t = require(f, name);
  if (t.ne.size() != 1 || t.ne[0] != n)
    throw std::runtime_error(f.path() + ": tensor " + name + " has shape " + shape_str(t.ne) + ", expected [" +
                             std::to_string(n) + "]");
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row(t.type, f.tensor_data(t), out.data(), n);
  return out;
}

void for_each_stage_tensor(const GgufFile& f, const ModelConfig& c, const LayerRange& r,
                           const std::function<void(const std::string&)>& fn) {
  if (r.embedding || (r.output && c.tied_embeddings)) fn("token_embd.weight");
  if (r.output) {
    fn("output_norm.weight");
    if (!c.tied_embeddings) fn("output.weight");
  }
  if (r.size() > 0 && f.find_tensor("rope_freqs.weight")) fn("rope_freqs.weight");
  static const char* kLayer[] = {"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                                 "attn_output.weight", "ffn_norm.weight"};
  static const char* kBias[] = {"attn_q.bias", "attn_k.bias", "attn_v.bias"};
  static const char* kQkNorm[] = {"attn_q_norm.weight", "attn_k_norm.weight"};
  static const char* kDense[] = {"ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"};
  // Each 3-D expert tensor is one name: a stage maps (and a worker is sent) all experts of its layers.
  static const char* kMoe[] = {"ffn_gate_inp.weight", "ffn_gate_exps.weight", "ffn_up_exps.weight",
                               "ffn_down_exps.weight"};
  for (int64_t l = r.first; l < r.end; ++l) {
    for (const char* w : kLayer) fn(layer_tensor(l, w));
    if (c.has_qkv_bias)
      for (const char* b : kBias) fn(layer_tensor(l, b));
    if (c.has_qk_norm)
      for (const char* n : kQkNorm) fn(layer_tensor(l, n));
    if (c.is_moe())
      for (const char* m : kMoe) fn(layer_tensor(l, m));
    else
      for (const char* m : kDense) fn(layer_tensor(l, m));
  }
}

void check_range(const ModelConfig& c, const LayerRange& r) {
  if (r.first < 0 || r.end > c.n_layers || r.first > r.end)
    throw std::runtime_error("layer range " + std::to_string(r.first) + "-" + std::to_string(r.end - 1) +
                             " is outside the model's " + std::to_string(c.n_layers) + " layers");
}

}  // namespace

std::vector<std::string> stage_tensor_names(const GgufFile& f, const ModelConfig& c, const LayerRange& r) {
  check_range(c, r);
  std::vector<std::string> names;
  for_each_stage_tensor(f, c, r, [&](const std::string& n) { names.push_back(n); });
  return names;
}

uint64_t stage_weight_bytes(const GgufFile& f, const ModelConfig& c, const LayerRange& r) {
  uint64_t total = 0;
  for (const auto& n : stage_tensor_names(f, c, r)) total += require(f, n).n_bytes;
  return total;
}

StageWeights load_stage_weights(const GgufFile& f, const ModelConfig& c, const LayerRange& r) {
  check_range(c, r);
  StageWeights s;
  s.range = r;
  s.file_mapped = true;  // every matrix below is GgufFile::tensor_data: a PROT_READ, MAP_PRIVATE mapping
  if (r.embedding || (r.output && c.tied_embeddings)) s.tok_embd = matrix(f, "token_embd.weight", c.n_embd, c.n_vocab);
  if (r.output) {
    s.output_norm = vector_f32(f, "output_norm.weight", c.n_embd);
    s.output = c.tied_embeddings ? s.tok_embd : matrix(f, "output.weight", c.n_embd, c.n_vocab);
  }
  if (r.size() > 0 && f.find_tensor("rope_freqs.weight")) s.rope_freqs = vector_f32(f, "rope_freqs.weight", c.n_rot / 2);
  for (int64_t l = r.first; l < r.end; ++l) {
    LayerWeights w;
    w.attn_norm = vector_f32(f, layer_tensor(l, "attn_norm.weight"), c.n_embd);
    w.wq = matrix(f, layer_tensor(l, "attn_q.weight"), c.n_embd, c.q_dim());
    w.wk = matrix(f, layer_tensor(l, "attn_k.weight"), c.n_embd, c.kv_dim());
    w.wv = matrix(f, layer_tensor(l, "attn_v.weight"), c.n_embd, c.kv_dim());
    w.wo = matrix(f, layer_tensor(l, "attn_output.weight"), c.q_dim(), c.n_embd);
    if (c.has_qkv_bias) {
      w.bq = vector_f32(f, layer_tensor(l, "attn_q.bias"), c.q_dim());
      w.bk = vector_f32(f, layer_tensor(l, "attn_k.bias"), c.kv_dim());
      w.bv = vector_f32(f, layer_tensor(l, "attn_v.bias"), c.kv_dim());
    }
    if (c.has_qk_norm) {
      w.q_norm = vector_f32(f, layer_tensor(l, "attn_q_norm.weight"), c.head_dim);
      w.k_norm = vector_f32(f, layer_tensor(l, "attn_k_norm.weight"), c.head_dim);
    }
    w.ffn_norm = vector_f32(f, layer_tensor(l, "ffn_norm.weight"), c.n_embd);
    if (c.is_moe()) {
      w.w_router = matrix(f, layer_tensor(l, "ffn_gate_inp.weight"), c.n_embd, c.n_expert);
      w.e_gate = expert_matrices(f, layer_tensor(l, "ffn_gate_exps.weight"), c.n_embd, c.n_ff_exp, c.n_expert);
      w.e_up = expert_matrices(f, layer_tensor(l, "ffn_up_exps.weight"), c.n_embd, c.n_ff_exp, c.n_expert);
      w.e_down = expert_matrices(f, layer_tensor(l, "ffn_down_exps.weight"), c.n_ff_exp, c.n_embd, c.n_expert);
    } else {
      w.w_gate = matrix(f, layer_tensor(l, "ffn_gate.weight"), c.n_embd, c.n_ff);
      w.w_up = matrix(f, layer_tensor(l, "ffn_up.weight"), c.n_embd, c.n_ff);
      w.w_down = matrix(f, layer_tensor(l, "ffn_down.weight"), c.n_ff, c.n_embd);
    }
    s.layers.push_back(std::move(w));
  }
  return s;
}

bool StageWeights::owns(const WeightMatrix& w) const {
  const auto* p = static_cast<const uint8_t*>(w.data);
  for (const OwnedBytes& o : owned)
    if (p >= o.data.get() && p < o.data.get() + o.size) return true;
  return false;
}

void release_pages(const WeightMatrix& w) {
  if (!w.data || w.rows <= 0) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(w.data);
  const uintptr_t end = begin + static_cast<uintptr_t>(w.rows - 1) * w.row_stride + row_bytes(w.type, w.cols);
  const uintptr_t lo = (begin + page - 1) / page * page, hi = end / page * page;  // whole pages only
  // Advisory: a failure leaves the pages resident, which costs memory but not correctness.
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

}  // namespace herd::model
