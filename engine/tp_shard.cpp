#include "engine/tp_shard.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>

#include "kernels/dtype.h"

namespace herd {
namespace {

WeightMatrix row_slice(const WeightMatrix& w, int64_t r0, int64_t r1) {
  WeightMatrix s = w;
  s.data = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r0) * w.row_stride;
  s.rows = r1 - r0;
  s.packed = {};
  return s;
}

// Columns [c0, c1) of every row, as a view with the matrix's own row stride: within a row the
// quant blocks are consecutive, so the slice is the bytes of blocks [c0 / bs, c1 / bs) of each
// row, and every kernel reads rows at `row_stride` (>= the slice's row bytes). No copy: the
// backend's packed copy (prepare_matmul) is then the only one the rank holds, and the file pages
// it was packed from are released as for any other matrix (whole pages inside the rows: other
// ranks' columns on them are read back from the file if they still need them).
WeightMatrix column_slice(const WeightMatrix& w, int64_t c0, int64_t c1, const std::string& what) {
  const int64_t bs = block_size(w.type);
  if (c0 % bs != 0 || c1 % bs != 0)
    throw std::invalid_argument("tensor parallelism: " + what + " is " + std::string(dtype_name(w.type)) +
                                " (blocks of " + std::to_string(bs) + " columns) and a rank's columns " +
                                std::to_string(c0) + ".." + std::to_string(c1) +
                                " cut a block: try another --tp (planned: repacking such slices)");
  WeightMatrix s = w;
  s.data = static_cast<const uint8_t*>(w.data) + row_bytes(w.type, c0);
  s.cols = c1 - c0;
  s.packed = {};
  return s;
}

std::vector<float> slice(const std::vector<float>& v, int64_t b, int64_t e) {
  return {v.begin() + b, v.begin() + e};
}

}  // namespace

ShardShape shard_shape(const model::ModelConfig& c, const model::StageWeights& full) {
  if (c.is_moe())
    throw std::invalid_argument("tensor parallelism does not split mixture-of-experts models yet (" + c.arch + ", " +
                                std::to_string(c.n_expert) + " experts): run without --tp");
  if (full.layers.empty()) throw std::invalid_argument("tensor parallelism: the model has no layers");
  // Every layer is cut at the same columns: the largest block (a multiple of the others: 1, 32, 256).
  int64_t ffn_block = 1, wo_block = 1;
  for (const auto& l : full.layers) {
    ffn_block = std::max(ffn_block, block_size(l.w_down.type));
    wo_block = std::max(wo_block, block_size(l.wo.type));
  }
  // The fewest KV-head groups whose attn_output columns are whole blocks: block / gcd(block, group).
  const int64_t group_cols = c.n_heads / c.n_kv_heads * c.head_dim;
  const int64_t kv_unit = wo_block / std::gcd(wo_block, group_cols);
  if (c.n_kv_heads % kv_unit != 0)
    throw std::invalid_argument("tensor parallelism: attn_output's blocks of " + std::to_string(wo_block) +
                                " columns do not fall on KV-head groups of " + std::to_string(group_cols) + " columns");
  return ShardShape{c.n_heads, c.n_kv_heads, kv_unit, c.n_ff, ffn_block, c.n_vocab};
}

model::ModelConfig shard_config(const model::ModelConfig& c, const ShardPlan& p, int rank) {
  model::ModelConfig s = c;
  const int64_t gqa = c.n_heads / c.n_kv_heads;
  s.n_kv_heads = p.kv_heads.at(static_cast<size_t>(rank)).size();
  s.n_heads = s.n_kv_heads * gqa;
  s.n_ff = p.ffn_rows.at(static_cast<size_t>(rank)).size();
  return s;
}

model::StageWeights shard_weights(const model::ModelConfig& c, const model::StageWeights& full, const ShardPlan& p,
                                  int rank) {
  if (full.layers.size() != static_cast<size_t>(full.range.end - full.range.first) || full.range.end > c.n_layers)
    throw std::invalid_argument("tensor parallelism: the stage's weights do not match its layer range");
  const size_t r = static_cast<size_t>(rank);
  const int64_t hd = c.head_dim, gqa = c.n_heads / c.n_kv_heads;
  const ShardRange kv = p.kv_heads.at(r), ff = p.ffn_rows.at(r), voc = p.vocab.at(r);
  const int64_t q0 = kv.begin * gqa * hd, q1 = kv.end * gqa * hd, k0 = kv.begin * hd, k1 = kv.end * hd;
  model::StageWeights s;
  s.range = full.range;
  s.file_mapped = full.file_mapped;
  s.tok_embd = full.tok_embd;
  s.output_norm = full.output_norm;
  if (full.range.output) s.output = row_slice(full.output, voc.begin, voc.end);  // the last stage only
  s.rope_freqs = full.rope_freqs;
  for (size_t il = 0; il < full.layers.size(); ++il) {
    const model::LayerWeights& f = full.layers[il];
    const std::string layer = "blk." + std::to_string(full.range.first + static_cast<int64_t>(il)) + ".";
    model::LayerWeights w;
    w.attn_norm = f.attn_norm;
    w.wq = row_slice(f.wq, q0, q1);
    w.wk = row_slice(f.wk, k0, k1);
    w.wv = row_slice(f.wv, k0, k1);
    w.wo = column_slice(f.wo, q0, q1, layer + "attn_output.weight");
    if (!f.bq.empty()) {
      w.bq = slice(f.bq, q0, q1);
      w.bk = slice(f.bk, k0, k1);
      w.bv = slice(f.bv, k0, k1);
    }
    w.q_norm = f.q_norm;
    w.k_norm = f.k_norm;
    w.ffn_norm = f.ffn_norm;
    w.w_gate = row_slice(f.w_gate, ff.begin, ff.end);
    w.w_up = row_slice(f.w_up, ff.begin, ff.end);
    w.w_down = column_slice(f.w_down, ff.begin, ff.end, layer + "ffn_down.weight");
    s.layers.push_back(std::move(w));
  }
  return s;
}

}  // namespace herd
