// The weights one stage needs: a contiguous layer range, plus the embedding on the first
// stage and the final norm + output projection on the last. Big matrices point into the
// GGUF mapping (no copy); small 1-D tensors (norms, biases) are converted to f32 and owned.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/arch.h"

namespace herd::model {

class GgufFile;

struct LayerRange {
  int64_t first = 0;  // first layer (inclusive)
  int64_t end = 0;    // one past the last layer
  bool embedding = true;  // this stage owns token_embd (the first stage)
  bool output = true;     // this stage owns output_norm + output (the last stage)
  int64_t size() const { return end - first; }
};

struct LayerWeights {
  std::vector<float> attn_norm;  // [n_embd]
  WeightMatrix wq;               // [q_dim rows, n_embd cols]
  WeightMatrix wk;               // [kv_dim, n_embd]
  WeightMatrix wv;               // [kv_dim, n_embd]
  WeightMatrix wo;               // [n_embd, q_dim]
  std::vector<float> bq, bk, bv; // has_qkv_bias only: [q_dim], [kv_dim], [kv_dim]
  std::vector<float> q_norm, k_norm;  // has_qk_norm only: [head_dim] each, shared by every head
  std::vector<float> ffn_norm;   // [n_embd]
  // Dense feed-forward (config.is_moe() false):
  WeightMatrix w_gate;           // [n_ff, n_embd]
  WeightMatrix w_up;             // [n_ff, n_embd]
  WeightMatrix w_down;           // [n_embd, n_ff]
  // Mixture of experts (config.is_moe()): the router and, per expert, a view of its contiguous
  // 2-D slice of the file's 3-D tensor (GGUF ne [cols, rows, n_expert]), so a backend prepares and
  // multiplies each expert like any other matrix.
  WeightMatrix w_router;             // ffn_gate_inp: [n_expert, n_embd]
  std::vector<WeightMatrix> e_gate;  // ffn_gate_exps: n_expert x [n_ff_exp, n_embd]
  std::vector<WeightMatrix> e_up;    // ffn_up_exps:   n_expert x [n_ff_exp, n_embd]
  std::vector<WeightMatrix> e_down;  // ffn_down_exps: n_expert x [n_embd, n_ff_exp]
};

struct StageWeights {
  LayerRange range;
  WeightMatrix tok_embd;             // [n_vocab, n_embd] (first stage, or last when tied)
  std::vector<float> output_norm;    // [n_embd] (last stage)
  WeightMatrix output;               // [n_vocab, n_embd] (last stage; == tok_embd when tied)
  std::vector<float> rope_freqs;     // [n_rot/2] when the model has rope_freqs.weight
  std::vector<LayerWeights> layers;  // layers[i] is model layer range.first + i
  // True when the matrices point into read-only MAP_PRIVATE file mappings (load_stage_weights):
  // their pages can be dropped (release_pages) and are read again from the file if touched.
  bool file_mapped = false;
  // Copies that some matrices point into instead of the mapping (a tensor-parallel rank's column
  // slices, engine/tp_shard.cpp): kept alive here, and never released (on anonymous memory
  // release_pages would zero them).
  struct OwnedBytes {
    std::shared_ptr<const uint8_t> data;
    size_t size = 0;
  };
  std::vector<OwnedBytes> owned;
  // Whether w's bytes lie in one of `owned` (then they are not the file's pages).
  bool owns(const WeightMatrix& w) const;
};

// Drops the resident pages wholly inside w's bytes (madvise MADV_DONTNEED), for a matrix a backend
// copied into its own layout (Backend::prepare_matmul), so the copy does not double the RSS. Only
// for matrices of a StageWeights with file_mapped (on anonymous memory it would zero the data).
void release_pages(const WeightMatrix& w);

// Names of every tensor the stage reads (for GgufFile::map_tensors and for weight transfer).
std::vector<std::string> stage_tensor_names(const GgufFile& f, const ModelConfig& c, const LayerRange& r);

// Validates every tensor's presence, type and shape against the config; throws std::runtime_error
// naming the tensor. The file must have the tensors mapped.
StageWeights load_stage_weights(const GgufFile& f, const ModelConfig& c, const LayerRange& r);

// Exact bytes of the stage's tensors (what a worker maps and holds).
uint64_t stage_weight_bytes(const GgufFile& f, const ModelConfig& c, const LayerRange& r);

}  // namespace herd::model
