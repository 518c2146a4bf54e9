// What the planner needs to know about a model: per-layer weight bytes and FLOPs, and the
// extra tensors the first stage (embedding) and the last stage (final norm + output) hold.
// Built either from a real GGUF (exact tensor sizes) or from a named shape + quant type.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/arch.h"

namespace herd::model {
class GgufFile;
}

namespace herd::partition {

struct ModelShape {
  std::string name;     // "SmolLM2-135M-Instruct (Q4_1)" or "llama3-70b Q4_K_M"
  std::string type;     // quant description: "Q4_K_M", or "mixed" for a GGUF
  model::ModelConfig config;
  std::vector<uint64_t> layer_bytes;  // [n_layers] weight bytes of layer i (all its tensors, every expert)
  std::vector<double> layer_flops;    // [n_layers] matmul FLOPs per token of layer i (2 per weight a token
                                      // uses: with experts, the router and n_expert_used of n_expert)
  // Mixture of experts: [n_layers] bytes of layer i's routed experts (ffn_*_exps, all n_expert of them);
  // empty or 0 for a dense layer. Memory counts them all; a token reads n_expert_used / n_expert of them.
  std::vector<uint64_t> layer_expert_bytes;
  uint64_t embd_bytes = 0;       // token_embd.weight
  uint64_t output_bytes = 0;     // output_norm.weight + output.weight (untied) or just the norm (tied)
  uint64_t per_stage_bytes = 0;  // tensors every stage with layers holds (rope_freqs.weight)
  double output_flops = 0;       // output projection FLOPs per token (2 * n_embd * n_vocab)
  // The matrices decode multiplies, by storage type (GGUF type id), for per-type matvec rates.
  struct TypeBytes {
    uint32_t type = 0;
    uint64_t bytes = 0;
  };
  // [n_layers] the matrices one decode token reads in layer i, summed per type: every 2-D weight, and
  // n_expert_used / n_expert of each expert tensor (the active bytes).
  std::vector<std::vector<TypeBytes>> layer_matrix_bytes;
  TypeBytes output_matrix;  // output.weight, or token_embd.weight when tied (the output projection)
  // Tensor parallelism (partition/tp_model.h): [n_layers] the FFN's part of layer_matrix_bytes
  // (ffn_gate, ffn_up, ffn_down by type; the rest of layer_matrix_bytes is attention), and the
  // largest quant block (values) of any layer's attn_output and ffn_down, where a rank's columns
  // must be cut (engine/tp_shard.cpp's shard_shape takes the same maxima from the weights).
  std::vector<std::vector<TypeBytes>> layer_ffn_matrix_bytes;
  int64_t wo_block = 1, ffn_down_block = 1;

  int64_t n_layers() const { return static_cast<int64_t>(layer_bytes.size()); }
  // Exact bytes of the stage that holds layers [first, end): the same tensors as
  // model::stage_weight_bytes with embedding = (first == 0), output = (end == n_layers).
  uint64_t stage_bytes(int64_t first, int64_t end) const;
  uint64_t total_bytes() const { return stage_bytes(0, n_layers()); }
  // Attention FLOPs per token per layer at context position `pos` (QK^T and AV over pos keys).
  double attention_flops(double pos) const;
  // The expected fraction of a layer's experts that n_tokens tokens route to, each token picking
  // n_expert_used of n_expert uniformly: 1 - (1 - k/E)^n (k/E for one token; 1 for a dense model).
  double expert_fraction(double n_tokens) const;
  // Weight bytes of layer l that a batch of n_tokens reads: everything but the experts, plus
  // expert_fraction(n_tokens) of them (= layer_bytes for a dense layer).
  double layer_read_bytes(int64_t l, double n_tokens) const;
  // Weight bytes one decode token reads in the whole model (layers + output projection).
  double decode_read_bytes() const;
  // KV cache bytes per token per layer for a cache element of `elem_bytes` (K and V).
  uint64_t kv_bytes_per_token_layer(double elem_bytes) const;

  std::vector<uint64_t> prefix_bytes;  // [n_layers + 1] prefix sums of layer_bytes
  void finish();                       // fills prefix_bytes; call after filling layer_bytes
};

// Exact sizes from the file's tensors: layer i is every tensor named blk.<i>.*; a 3-D tensor is
// an expert tensor ([.., .., n_expert]) of which a decode token reads n_expert_used / n_expert.
ModelShape shape_from_gguf(const model::GgufFile& f, const model::ModelConfig& c);

// Sizes computed from the hyper-parameters and a quant type: a plain DType name ("Q4_0", "Q8_0",
// "F16", ...) stores every matrix in that type, or a llama.cpp mix "Q4_K_M" / "Q5_K_M" / "Q4_K_S"
// (see docs/planner.md for the approximation). Norms are F32. With c.n_expert > 0 the layers hold
// the tensors model::synth_tensors writes (router F32, n_expert experts of n_ff_exp, types per
// model::layer_matrix_type). Throws std::invalid_argument for an unknown type.
ModelShape shape_from_config(const model::ModelConfig& c, const std::string& type);

// The named shape (see shapes.h) at `type`; throws std::invalid_argument naming the known shapes.
ModelShape shape_from_name(const std::string& shape, const std::string& type);

// "Q4_0, Q4_1, ..., Q4_K_M, Q5_K_M" for --help and errors.
std::string known_types();

}  // namespace herd::partition
