#include "tests/tools/tiny_models.h"

#include <cstring>
#include <stdexcept>

#include "kernels/quant.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "model/synth.h"

namespace herd::test {
namespace {

// splitmix64: tiny, portable, and fully specified (unlike std:: distributions).
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>(next() >> 40) / 16777216.0f; }
};

constexpr int64_t kEmbd = 64, kFf = 96, kHeads = 4, kKvHeads = 2, kCtx = 256;

void add_f32(model::GgufWriter& w, Rng& rng, const std::string& name, std::vector<int64_t> ne, float lo, float hi) {
  int64_t n = 1;
  for (auto d : ne) n *= d;
  std::vector<uint8_t> bytes(static_cast<size_t>(n) * 4);
  for (int64_t i = 0; i < n; ++i) {
    const float v = rng.uniform(lo, hi);
    std::memcpy(bytes.data() + i * 4, &v, 4);
  }
  w.add_tensor(name, std::move(ne), DType::F32, std::move(bytes));
}

// The donor's llama SentencePiece vocabulary (512 tokens); returns n_vocab.
int64_t copy_vocab(const model::GgufFile& donor, model::GgufWriter& w) {
  w.set_string("tokenizer.ggml.model", *donor.get_string("tokenizer.ggml.model"));
  w.set_string_array("tokenizer.ggml.tokens", *donor.get_string_array("tokenizer.ggml.tokens"));
  w.set_array("tokenizer.ggml.scores", *donor.get_float_array("tokenizer.ggml.scores"));
  const std::vector<int64_t> donor_types = donor.get_int_array("tokenizer.ggml.token_type").value();
  std::vector<int32_t> types(donor_types.begin(), donor_types.end());
  w.set_array("tokenizer.ggml.token_type", types);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
  return static_cast<int64_t>(types.size());
}

// A matrix of uniform values in [lo, hi), rows of ne[0], stored as t (herd's quantizer), or as F32
// of the dequantized values when deq.
void add_quantized(model::GgufWriter& w, Rng& rng, const std::string& name, std::vector<int64_t> ne, DType t, bool deq,
                   float lo, float hi) {
  int64_t rows = 1;  // every dimension past the first: rows of ne[0] values
  for (size_t i = 1; i < ne.size(); ++i) rows *= ne[i];
  const int64_t cols = ne[0];
  std::vector<float> x(static_cast<size_t>(cols));
  std::vector<uint8_t> q(row_bytes(t, cols));
  std::vector<uint8_t> bytes(deq ? static_cast<size_t>(rows * cols) * 4 : static_cast<size_t>(rows) * q.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : x) v = rng.uniform(lo, hi);
    if (deq) {
      quantize_row(t, x.data(), q.data(), cols);
      dequantize_row(t, q.data(), reinterpret_cast<float*>(bytes.data()) + r * cols, cols);
    } else {
      quantize_row(t, x.data(), bytes.data() + r * q.size(), cols);
    }
  }
  w.add_tensor(name, std::move(ne), deq ? DType::F32 : t, std::move(bytes));
}

}  // namespace

const std::vector<std::string>& lowbit_model_mixes() {
  static const std::vector<std::string> m = {"Q2_K", "Q3_K_M"};
  return m;
}

void write_lowbit_model(const std::string& mix_name, bool deq, const std::string& vocab_donor, const std::string& path) {
  constexpr int64_t kL = 2, kD = 256, kF = 512, kH = 4, kKvH = 2;
  const model::TypeMix mix = model::parse_type_mix(mix_name);
  auto donor = model::GgufFile::open(vocab_donor);
  model::GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", "herd-lowbit-" + mix_name + (deq ? "-deq" : ""));
  w.set_u32("general.file_type", deq ? 0 : mix.file_type);
  w.set_u32("llama.block_count", kL);
  w.set_u32("llama.context_length", kCtx);
  w.set_u32("llama.embedding_length", kD);
  w.set_u32("llama.feed_forward_length", kF);
  w.set_u32("llama.attention.head_count", kH);
  w.set_u32("llama.attention.head_count_kv", kKvH);
  w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
  w.set_f32("llama.rope.freq_base", 10000.0f);
  w.set_u32("llama.rope.dimension_count", kD / kH);
  const int64_t n_vocab = copy_vocab(*donor, w);
  Rng rng{0x10B17ull};
  const int64_t kv = kKvH * (kD / kH), gqa = kH / kKvH;
  add_quantized(w, rng, "token_embd.weight", {kD, n_vocab}, mix.embd, deq, -1.0f, 1.0f);
  for (int64_t l = 0; l < kL; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    using model::MixRole;
    add_f32(w, rng, b + "attn_norm.weight", {kD}, 0.8f, 1.2f);
    add_quantized(w, rng, b + "attn_q.weight", {kD, kD}, mix.base, deq, -0.15f, 0.15f);
    add_quantized(w, rng, b + "attn_k.weight", {kD, kv}, mix.base, deq, -0.15f, 0.15f);
    add_quantized(w, rng, b + "attn_v.weight", {kD, kv}, model::layer_matrix_type(mix, MixRole::AttnV, l, kL, gqa), deq,
                  -0.15f, 0.15f);
    add_quantized(w, rng, b + "attn_output.weight", {kD, kD},
                  model::layer_matrix_type(mix, MixRole::AttnOutput, l, kL, gqa), deq, -0.15f, 0.15f);
    add_f32(w, rng, b + "ffn_norm.weight", {kD}, 0.8f, 1.2f);
    add_quantized(w, rng, b + "ffn_gate.weight", {kD, kF}, mix.base, deq, -0.15f, 0.15f);
    add_quantized(w, rng, b + "ffn_up.weight", {kD, kF}, mix.base, deq, -0.15f, 0.15f);
    add_quantized(w, rng, b + "ffn_down.weight", {kF, kD}, model::layer_matrix_type(mix, MixRole::FfnDown, l, kL, gqa),
                  deq, -0.15f, 0.15f);
  }
  add_f32(w, rng, "output_norm.weight", {kD}, 0.8f, 1.2f);
  add_quantized(w, rng, "output.weight", {kD, n_vocab}, mix.output, deq, -0.15f, 0.15f);
  w.write(path);
}

const std::vector<TinyModelSpec>& tiny_model_specs() {
  static const std::vector<TinyModelSpec> specs = {
      {"qwen2", "qwen2", /*tied=*/false, /*qkv_bias=*/true, 0},
      {"llama-tied", "llama", /*tied=*/true, /*qkv_bias=*/false, 2.0f},
      // q_dim 4 x 32 = 128 != n_embd 64 (as Qwen3-32B: 5120 vs 64 x 128).
      {"qwen3", "qwen3", false, false, 0, /*head_dim=*/32, /*qk_norm=*/true},
      {"qwen3moe", "qwen3moe", false, false, 0, 32, true, /*n_expert=*/6, /*used=*/2, /*n_ff_exp=*/48, DType::F32, 3},
      {"mixtral", "llama", false, false, 0, 0, false, 4, 2, 0},
      // Q8_0 matrices (whole 32-value blocks: n_ff_exp 64): the 8-bit path, packed expert views.
      {"qwen3moe-q8", "qwen3moe", false, false, 0, 32, true, 8, 2, 64, DType::Q8_0, 3},
  };
  return specs;
}

const std::vector<int32_t>& tiny_model_tokens() {
  static const std::vector<int32_t> t = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426};
  return t;
}

void write_tiny_model(const TinyModelSpec& spec, const std::string& vocab_donor, const std::string& path) {
  auto donor = model::GgufFile::open(vocab_donor);
  model::GgufWriter w;
  const std::string a = spec.arch + ".";
  w.set_string("general.architecture", spec.arch);
  w.set_string("general.name", "herd-tiny-" + spec.name);
  w.set_u32(a + "block_count", static_cast<uint32_t>(spec.n_layers));
  w.set_u32(a + "context_length", kCtx);
  w.set_u32(a + "embedding_length", kEmbd);
  w.set_u32(a + "feed_forward_length", kFf);
  w.set_u32(a + "attention.head_count", kHeads);
  w.set_u32(a + "attention.head_count_kv", kKvHeads);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", 1e-6f);
  w.set_f32(a + "rope.freq_base", spec.arch == "llama" ? 10000.0f : 1000000.0f);
  if (spec.head_dim > 0) {
    w.set_u32(a + "attention.key_length", static_cast<uint32_t>(spec.head_dim));
    w.set_u32(a + "attention.value_length", static_cast<uint32_t>(spec.head_dim));
  }
  if (spec.n_expert > 0) {
    w.set_u32(a + "expert_count", static_cast<uint32_t>(spec.n_expert));
    w.set_u32(a + "expert_used_count", static_cast<uint32_t>(spec.n_expert_used));
    if (spec.n_ff_exp > 0) w.set_u32(a + "expert_feed_forward_length", static_cast<uint32_t>(spec.n_ff_exp));
  }
  if (spec.rope_scale_linear > 0) {
    w.set_string(a + "rope.scaling.type", "linear");
    w.set_f32(a + "rope.scaling.factor", spec.rope_scale_linear);
  }
  // The vocabulary: copied from the donor (llama SentencePiece, 512 tokens).
  const int64_t n_vocab = copy_vocab(*donor, w);

  Rng rng{0x5EEDull + spec.name.size()};
  const int64_t hd = spec.head_dim > 0 ? spec.head_dim : kEmbd / kHeads, qd = kHeads * hd, kv = kKvHeads * hd;
  // Matrices: F32 (add_f32's stream, which the older models' bytes depend on) or quantized.
  auto mat = [&](const std::string& name, std::vector<int64_t> ne, float lo, float hi) {
    if (spec.matrices == DType::F32) add_f32(w, rng, name, std::move(ne), lo, hi);
    else add_quantized(w, rng, name, std::move(ne), spec.matrices, false, lo, hi);
  };
  mat("token_embd.weight", {kEmbd, n_vocab}, -1.0f, 1.0f);
  for (int64_t l = 0; l < spec.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add_f32(w, rng, b + "attn_norm.weight", {kEmbd}, 0.8f, 1.2f);
    mat(b + "attn_q.weight", {kEmbd, qd}, -0.25f, 0.25f);
    mat(b + "attn_k.weight", {kEmbd, kv}, -0.25f, 0.25f);
    mat(b + "attn_v.weight", {kEmbd, kv}, -0.25f, 0.25f);
    if (spec.qkv_bias) {
      add_f32(w, rng, b + "attn_q.bias", {qd}, -0.5f, 0.5f);
      add_f32(w, rng, b + "attn_k.bias", {kv}, -0.5f, 0.5f);
      add_f32(w, rng, b + "attn_v.bias", {kv}, -0.5f, 0.5f);
    }
    if (spec.qk_norm) {
      add_f32(w, rng, b + "attn_q_norm.weight", {hd}, 0.5f, 1.5f);
      add_f32(w, rng, b + "attn_k_norm.weight", {hd}, 0.5f, 1.5f);
    }
    mat(b + "attn_output.weight", {qd, kEmbd}, -0.25f, 0.25f);
    add_f32(w, rng, b + "ffn_norm.weight", {kEmbd}, 0.8f, 1.2f);
    if (spec.n_expert > 0) {
      const int64_t ffe = spec.n_ff_exp > 0 ? spec.n_ff_exp : kFf, ne = spec.n_expert;
      // A wide router range keeps the top-k choices clear of near-ties (a tie within rounding
      // would let summation order pick a different expert than llama.cpp).
      mat(b + "ffn_gate_inp.weight", {kEmbd, ne}, -1.0f, 1.0f);
      mat(b + "ffn_gate_exps.weight", {kEmbd, ffe, ne}, -0.25f, 0.25f);
      mat(b + "ffn_up_exps.weight", {kEmbd, ffe, ne}, -0.25f, 0.25f);
      mat(b + "ffn_down_exps.weight", {ffe, kEmbd, ne}, -0.25f, 0.25f);
    } else {
      mat(b + "ffn_gate.weight", {kEmbd, kFf}, -0.25f, 0.25f);
      mat(b + "ffn_up.weight", {kEmbd, kFf}, -0.25f, 0.25f);
      mat(b + "ffn_down.weight", {kFf, kEmbd}, -0.25f, 0.25f);
    }
  }
  add_f32(w, rng, "output_norm.weight", {kEmbd}, 0.8f, 1.2f);
  if (!spec.tied) mat("output.weight", {kEmbd, n_vocab}, -0.25f, 0.25f);
  w.write(path);
}

}  // namespace herd::test
