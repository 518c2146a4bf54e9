// Synthetic models: a valid llama / qwen3 / qwen3moe GGUF (dense, or Mixtral / Qwen3-MoE style
// mixture of experts) with seeded random weights for any shape, so
// speed and memory can be measured on a 70B or 405B layout nobody has downloaded. Weights are
// N(0, 0.02^2) like trained matrices, norm weights near 1; the generator is our own (splitmix64
// and a sum of uniforms), so a seed gives the same bytes on every platform and thread count.
// Writing streams: each tensor is generated and quantized row by row inside the GgufWriter fill
// callback, so memory peaks at one tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kernels/dtype.h"
#include "model/arch.h"

namespace herd::model {

// Which matrices of a layer get another type than the mix's base, and in which layers.
//   Plain: attn_v / ffn_down take more_bits in more_bits_layer() layers (the _M mixes; = base otherwise).
//   Q2K, Q3KM, Q3KL: llama.cpp's llama_tensor_get_type rules for its Q2_K, Q3_K_M, Q3_K_L files (dense
//     models): see layer_matrix_type.
enum class MixRule { Plain, Q2K, Q3KM, Q3KL };

// The storage types of one quantization "mix": a plain type stores every matrix in it; the
// llama.cpp-style _M mixes give attn_v and ffn_down more bits in some layers.
struct TypeMix {
  std::string name;   // "Q4_K_M", "Q4_0", ...
  DType base;         // most matrices
  DType more_bits;    // attn_v / ffn_down in more_bits_layer() layers (MixRule::Plain)
  DType embd;         // token_embd.weight
  DType output;       // output.weight
  uint32_t file_type; // general.file_type (llama.cpp's ftype id)
  MixRule rule = MixRule::Plain;
};

// The layer matrices whose type a mix may raise. FfnDown is also the type of ffn_down_exps.
enum class MixRole { AttnV, AttnOutput, FfnDown, AttnK };

// The type of `role` in layer `layer` of n_layers (n_gqa = n_heads / n_kv_heads) under the mix:
//   Plain: AttnV, FfnDown more_bits in more_bits_layer() layers, else base; AttnOutput base.
//   Q2K:   AttnV Q4_K when n_gqa >= 4 else Q3_K; AttnOutput, FfnDown Q3_K.
//   Q3KM:  AttnV Q5_K in layers 0, 1 else Q4_K; FfnDown Q5_K in layers < n_layers / 16 else Q4_K;
//          AttnOutput Q4_K.
//   Q3KL:  all three Q5_K.
//   AttnK is the base type in every rule.
// With n_expert == 8 (Mixtral) and a K mix (Q2_K ... Q6_K), llama.cpp's 8-expert rule wins: attn_k and
// attn_v Q8_0; attn_output Q5_K in Q2_K, Q3_K_S, Q3_K_M, Q4_K_S, Q4_K_M.
// Experts: ffn_gate_exps / ffn_up_exps take the base type and ffn_down_exps the FfnDown type, the way
// llama.cpp treats them (its ffn_down counter counts one ffn_down_exps per layer); ffn_gate_inp (the
// router) stays F32, as llama.cpp's quantizer leaves it. llama.cpp has further per-model exceptions
// (IQ types, Falcon, 70B attn_v) that herd's mixes do not need; sizes land within ~2% of published files.
DType layer_matrix_type(const TypeMix& mix, MixRole role, int64_t layer, int64_t n_layers, int64_t n_gqa,
                        int64_t n_expert = 0);

// F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S,
// Q5_K_M, Q6_K (case-insensitive). Throws std::invalid_argument naming the known ones.
TypeMix parse_type_mix(const std::string& name);
std::string known_type_mixes();  // "F32, F16, ..." for --help and errors

// The first and last eighth of the layers and every third one in between (llama.cpp's rule for
// which layers of an _M mix keep attn_v / ffn_down at higher precision: about half of them).
bool more_bits_layer(int64_t layer, int64_t n_layers);

// One tensor of a synthetic file. ne[0] is the row length (input dimension of a matrix).
struct SynthTensor {
  std::string name;
  std::vector<int64_t> ne;
  DType type;
  bool is_norm;         // 1-D norm weight: values near 1 instead of N(0, std)
  uint64_t n_bytes;     // exact data bytes
  int64_t n_elements() const;
};

// The tensors of a model of shape `c` in file order (token_embd, blk.0..., output_norm, output).
// Per layer: attn_norm, attn_q, attn_k, attn_v, attn_output (q is n_heads x head_dim wide), for
// qwen3/qwen3moe attn_q_norm and attn_k_norm ([head_dim], F32), ffn_norm, then either ffn_gate,
// ffn_up, ffn_down or, with c.n_expert > 0, ffn_gate_inp [n_embd, n_expert] (F32), ffn_gate_exps and
// ffn_up_exps [n_embd, n_ff_exp, n_expert], ffn_down_exps [n_ff_exp, n_embd, n_expert] (GGUF ne order). Matrices whose rows are not a whole number of blocks of the mix's type fall back the way
// llama.cpp does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; Q2_K, Q3_K -> Q4_0, what llama.cpp used before
// IQ4_NL, which herd does not read); throws std::invalid_argument when even
// that does not fit.
std::vector<SynthTensor> synth_tensors(const ModelConfig& c, const TypeMix& mix);

struct SynthOptions {
  ModelConfig config;         // arch "llama" (dense or MoE), "qwen3" or "qwen3moe"; head_dim as set
  TypeMix mix;
  uint64_t seed = 1;
  float weight_std = 0.02f;
  // Tokenizer metadata: a GGUF whose tokenizer.* keys are copied (its token count must equal
  // config.n_vocab), or empty for a synthetic SentencePiece vocabulary (see synthetic_vocab).
  std::string vocab_from;
  // Called after every tensor with (bytes written so far, total data bytes); may be empty.
  std::function<void(uint64_t done, uint64_t total)> progress;
  int n_threads = 0;  // generation threads (0: hardware concurrency); the bytes do not depend on it
};

struct SynthSummary {
  uint64_t n_params = 0;
  uint64_t data_bytes = 0;        // sum of the tensors' bytes (without alignment padding)
  uint64_t file_bytes = 0;        // the file written
  std::vector<SynthTensor> tensors;
};

// Bytes the file will take, within a few MiB (header estimate); for the free-space check.
uint64_t synth_size_estimate(const ModelConfig& c, const TypeMix& mix);

// Writes the model to `path` (through `path`.partial, renamed at the end, so an interrupted run never
// leaves a plausible-looking file behind). Throws std::runtime_error when the file system lacks room
// (checked with statvfs before writing) or on any I/O error.
SynthSummary write_synth_model(const SynthOptions& opts, const std::string& path);

// A minimal SentencePiece ("llama") vocabulary of n_vocab >= 259 tokens: <unk>, <s>, </s>, the 256
// byte tokens <0x00>..<0xFF>, then filler pieces (printable ASCII, "▁"-prefixed words over a-z) with
// decreasing scores. Any text tokenizes (byte fallback) and detokenizes.
struct SynthVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;  // llama.cpp token types: 1 normal, 2 unknown, 3 control, 6 byte
};
SynthVocab synthetic_vocab(int64_t n_vocab);

// The deterministic N(0, 1) stream for (seed, tensor index, row): exposed for tests.
void synth_normal_row(uint64_t seed, uint64_t tensor, uint64_t row, float* out, int64_t n);

}  // namespace herd::model
