#include "model/synth.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "kernels/quant.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"

namespace herd::model {
namespace {

std::string upper(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return s;
}

// splitmix64 finaliser: also used to derive independent per-row seeds.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

// Types the fallback rule uses when a row is not a whole number of 256-value super-blocks.
DType fallback(DType t) {
  switch (t) {
    case DType::Q2_K: return DType::Q4_0;
    case DType::Q3_K: return DType::Q4_0;
    case DType::Q4_K: return DType::Q5_0;
    case DType::Q5_K: return DType::Q5_1;
    case DType::Q6_K: return DType::Q8_0;
    default: return t;
  }
}

SynthTensor make_tensor(std::string name, std::vector<int64_t> ne, DType t, bool is_norm) {
  if (ne[0] % block_size(t) != 0) t = fallback(t);
  if (ne[0] % block_size(t) != 0)
    throw std::invalid_argument(name + ": rows of " + std::to_string(ne[0]) + " values are not a multiple of the " +
                                std::string(dtype_name(t)) + " block size " + std::to_string(block_size(t)));
  SynthTensor s{std::move(name), std::move(ne), t, is_norm, 0};
  s.n_bytes = GgufWriter::tensor_n_bytes(s.ne, s.type);
  return s;
}

// A vocabulary's "llama" (SentencePiece) metadata copied key by key from a donor GGUF, keeping
// each value's GGUF type (so token_type stays an i32 array, ids stay u32...).
void copy_tokenizer_keys(const GgufFile& donor, GgufWriter& w) {
  for (const std::string& key : donor.keys()) {
    if (key.rfind("tokenizer.", 0) != 0) continue;
    const GgufType t = *donor.type_of(key);
    switch (t) {
      case GgufType::STRING: w.set_string(key, *donor.get_string(key)); break;
      case GgufType::BOOL: w.set_bool(key, *donor.get_bool(key)); break;
      case GgufType::FLOAT32: w.set_f32(key, static_cast<float>(*donor.get_float(key))); break;
      case GgufType::FLOAT64: w.set_f64(key, *donor.get_float(key)); break;
      case GgufType::UINT8: w.set_u8(key, static_cast<uint8_t>(*donor.get_int(key))); break;
      case GgufType::INT8: w.set_i8(key, static_cast<int8_t>(*donor.get_int(key))); break;
      case GgufType::UINT16: w.set_u16(key, static_cast<uint16_t>(*donor.get_int(key))); break;
      case GgufType::INT16: w.set_i16(key, static_cast<int16_t>(*donor.get_int(key))); break;
      case GgufType::UINT32: w.set_u32(key, static_cast<uint32_t>(*donor.get_int(key))); break;
      case GgufType::INT32: w.set_i32(key, static_cast<int32_t>(*donor.get_int(key))); break;
      case GgufType::UINT64: w.set_u64(key, static_cast<uint64_t>(*donor.get_int(key))); break;
      case GgufType::INT64: w.set_i64(key, *donor.get_int(key)); break;
      case GgufType::ARRAY: {
        const GgufType et = *donor.array_type_of(key);
        if (et == GgufType::STRING) {
          w.set_string_array(key, *donor.get_string_array(key));
        } else if (et == GgufType::FLOAT32 || et == GgufType::FLOAT64) {
          w.set_array(key, *donor.get_float_array(key));
        } else if (et == GgufType::INT32) {
          const auto v = *donor.get_int_array(key);
          w.set_array(key, std::vector<int32_t>(v.begin(), v.end()));
        } else if (et == GgufType::BOOL) {
          const auto v = *donor.get_int_array(key);
          std::vector<bool> b(v.begin(), v.end());
          w.set_bool_array(key, b);
        } else {
          const auto v = *donor.get_int_array(key);
          w.set_array(key, v);  // other integer arrays: widened to i64 (none in llama vocabularies)
        }
        break;
      }
    }
  }
}

void check_free_space(const std::string& path, uint64_t need) {
  std::filesystem::path dir = std::filesystem::absolute(path).parent_path();
  struct statvfs st {};
  if (statvfs(dir.c_str(), &st) != 0) return;  // cannot tell: let the write report any failure
  const uint64_t avail = static_cast<uint64_t>(st.f_bavail) * static_cast<uint64_t>(st.f_frsize);
  if (avail < need) {
    char msg[256];
    std::snprintf(msg, sizeof msg, "not enough disk space in %s: the model needs %.2f GiB, %.2f GiB are free",
                  dir.c_str(), need / 1073741824.0, avail / 1073741824.0);
    throw std::runtime_error(msg);
  }
}

}  // namespace

int64_t SynthTensor::n_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

TypeMix parse_type_mix(const std::string& name) {
  const std::string u = upper(name);
  // llama.cpp ftype ids (general.file_type): 10 Q2_K, 11 Q3_K_S, 12 Q3_K_M, 13 Q3_K_L, 14 Q4_K_S,
  // 15 Q4_K_M, 16 Q5_K_S, 17 Q5_K_M, 18 Q6_K. Output stays Q6_K in all of them.
  if (u == "Q2_K") return {u, DType::Q2_K, DType::Q3_K, DType::Q2_K, DType::Q6_K, 10, MixRule::Q2K};
  if (u == "Q3_K_S") return {u, DType::Q3_K, DType::Q3_K, DType::Q3_K, DType::Q6_K, 11};
  if (u == "Q3_K_M") return {u, DType::Q3_K, DType::Q4_K, DType::Q3_K, DType::Q6_K, 12, MixRule::Q3KM};
  if (u == "Q3_K_L") return {u, DType::Q3_K, DType::Q5_K, DType::Q3_K, DType::Q6_K, 13, MixRule::Q3KL};
  if (u == "Q4_K_M") return {u, DType::Q4_K, DType::Q6_K, DType::Q4_K, DType::Q6_K, 15};
  if (u == "Q4_K_S") return {u, DType::Q4_K, DType::Q4_K, DType::Q4_K, DType::Q6_K, 14};
  if (u == "Q5_K_M") return {u, DType::Q5_K, DType::Q6_K, DType::Q5_K, DType::Q6_K, 17};
  if (u == "Q5_K_S") return {u, DType::Q5_K, DType::Q5_K, DType::Q5_K, DType::Q6_K, 16};
  const auto t = parse_dtype(name);
  if (!t || u == "Q3_K" || u == "Q4_K" || u == "Q5_K")  // the bare K types only exist as _S/_M mixes
    throw std::invalid_argument("unknown type '" + name + "' (known: " + known_type_mixes() + ")");
  uint32_t ftype = 0;
  switch (*t) {
    case DType::F32: ftype = 0; break;
    case DType::F16: ftype = 1; break;
    case DType::Q4_0: ftype = 2; break;
    case DType::Q4_1: ftype = 3; break;
    case DType::Q8_0: ftype = 7; break;
    case DType::Q5_0: ftype = 8; break;
    case DType::Q5_1: ftype = 9; break;
    case DType::Q6_K: ftype = 18; break;
    case DType::BF16: ftype = 32; break;
    default: break;
  }
  // Like llama.cpp, output.weight stays at Q6_K for the small quants; the wide types keep their own.
  const bool wide = *t == DType::F32 || *t == DType::F16 || *t == DType::BF16 || *t == DType::Q8_0;
  return {u, *t, *t, *t, wide ? *t : DType::Q6_K, ftype};
}

std::string known_type_mixes() {
  return "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, "
         "Q6_K";
}

bool more_bits_layer(int64_t i, int64_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

namespace {

DType base_layer_matrix_type(const TypeMix& mix, MixRole role, int64_t layer, int64_t n_layers, int64_t n_gqa) {
  if (role == MixRole::AttnK) return mix.base;
  switch (mix.rule) {
    case MixRule::Plain:
      if (role == MixRole::AttnOutput) return mix.base;
      return more_bits_layer(layer, n_layers) ? mix.more_bits : mix.base;
    case MixRule::Q2K:
      return role == MixRole::AttnV && n_gqa >= 4 ? DType::Q4_K : DType::Q3_K;
    case MixRule::Q3KM:
      if (role == MixRole::AttnV) return layer < 2 ? DType::Q5_K : DType::Q4_K;
      if (role == MixRole::FfnDown) return layer < n_layers / 16 ? DType::Q5_K : DType::Q4_K;
      return DType::Q4_K;
    case MixRule::Q3KL: return DType::Q5_K;
  }
  return mix.base;
}

}  // namespace

DType layer_matrix_type(const TypeMix& mix, MixRole role, int64_t layer, int64_t n_layers, int64_t n_gqa,
                        int64_t n_expert) {
  // llama.cpp ftypes 10..18 are the K mixes (Q2_K ... Q6_K).
  const bool k_mix = mix.file_type >= 10 && mix.file_type <= 18;
  if (n_expert == 8 && k_mix) {
    if (role == MixRole::AttnK || role == MixRole::AttnV) return DType::Q8_0;
    // Q2_K, Q3_K_S, Q3_K_M, Q4_K_S, Q4_K_M (not Q3_K_L, Q5_K_*, Q6_K).
    if (role == MixRole::AttnOutput && (mix.file_type <= 12 || mix.file_type == 14 || mix.file_type == 15))
      return DType::Q5_K;
  }
  return base_layer_matrix_type(mix, role, layer, n_layers, n_gqa);
}

std::vector<SynthTensor> synth_tensors(const ModelConfig& c, const TypeMix& mix) {
  if (c.n_layers <= 0 || c.n_embd <= 0 || c.n_ff <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.n_vocab <= 0)
    throw std::invalid_argument("synth: every dimension of the shape must be positive");
  if (c.n_heads % c.n_kv_heads != 0) throw std::invalid_argument("synth: n_heads must be a multiple of n_kv_heads");
  if (c.head_dim <= 0 && c.n_embd % c.n_heads != 0)
    throw std::invalid_argument("synth: n_embd must be a multiple of n_heads (or head_dim given)");
  const bool moe = c.n_expert > 0;
  if (moe && (c.n_expert_used <= 0 || c.n_expert_used > c.n_expert || c.n_ff_exp <= 0))
    throw std::invalid_argument("synth: a mixture of experts needs 0 < experts per token <= experts and an expert FFN size");
  const int64_t hd = c.head_dim > 0 ? c.head_dim : c.n_embd / c.n_heads;
  const int64_t d = c.n_embd, ff = c.n_ff, q = c.n_heads * hd, kv = c.n_kv_heads * hd;
  const int64_t E = c.n_expert, ffe = c.n_ff_exp;
  const bool qk_norm = c.has_qk_norm || c.arch == "qwen3" || c.arch == "qwen3moe";  // as load_config decides
  std::vector<SynthTensor> out;
  out.push_back(make_tensor("token_embd.weight", {d, c.n_vocab}, mix.embd, false));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const int64_t gqa = c.n_heads / c.n_kv_heads;
    const DType k_t = layer_matrix_type(mix, MixRole::AttnK, l, c.n_layers, gqa, E);
    const DType v_t = layer_matrix_type(mix, MixRole::AttnV, l, c.n_layers, gqa, E);
    const DType o_t = layer_matrix_type(mix, MixRole::AttnOutput, l, c.n_layers, gqa, E);
    const DType down_t = layer_matrix_type(mix, MixRole::FfnDown, l, c.n_layers, gqa, E);
    out.push_back(make_tensor(layer_tensor(l, "attn_norm.weight"), {d}, DType::F32, true));
    out.push_back(make_tensor(layer_tensor(l, "attn_q.weight"), {d, q}, mix.base, false));
    out.push_back(make_tensor(layer_tensor(l, "attn_k.weight"), {d, kv}, k_t, false));
    out.push_back(make_tensor(layer_tensor(l, "attn_v.weight"), {d, kv}, v_t, false));
    out.push_back(make_tensor(layer_tensor(l, "attn_output.weight"), {q, d}, o_t, false));
    if (qk_norm) {
      out.push_back(make_tensor(layer_tensor(l, "attn_q_norm.weight"), {hd}, DType::F32, true));
      out.push_back(make_tensor(layer_tensor(l, "attn_k_norm.weight"), {hd}, DType::F32, true));
    }
    out.push_back(make_tensor(layer_tensor(l, "ffn_norm.weight"), {d}, DType::F32, true));
    if (moe) {
      out.push_back(make_tensor(layer_tensor(l, "ffn_gate_inp.weight"), {d, E}, DType::F32, false));
      out.push_back(make_tensor(layer_tensor(l, "ffn_gate_exps.weight"), {d, ffe, E}, mix.base, false));
      out.push_back(make_tensor(layer_tensor(l, "ffn_up_exps.weight"), {d, ffe, E}, mix.base, false));
      out.push_back(make_tensor(layer_tensor(l, "ffn_down_exps.weight"), {ffe, d, E}, down_t, false));
    } else {
      out.push_back(make_tensor(layer_tensor(l, "ffn_gate.weight"), {d, ff}, mix.base, false));
      out.push_back(make_tensor(layer_tensor(l, "ffn_up.weight"), {d, ff}, mix.base, false));
      out.push_back(make_tensor(layer_tensor(l, "ffn_down.weight"), {ff, d}, down_t, false));
    }
  }
  out.push_back(make_tensor("output_norm.weight", {d}, DType::F32, true));
  if (!c.tied_embeddings) out.push_back(make_tensor("output.weight", {d, c.n_vocab}, mix.output, false));
  return out;
}

uint64_t synth_size_estimate(const ModelConfig& c, const TypeMix& mix) {
  uint64_t bytes = 0;
  for (const auto& t : synth_tensors(c, mix)) bytes += (t.n_bytes + 31) / 32 * 32 + 512;  // + directory entry
  // Metadata: the vocabulary dominates (a 128k-token vocabulary is ~3 MiB); 8 MiB is generous.
  return bytes + (8ull << 20);
}

void synth_normal_row(uint64_t seed, uint64_t tensor, uint64_t row, float* out, int64_t n) {
  // Irwin-Hall: the sum of 4 uniforms on [0,1) has mean 2 and variance 1/3; pure integer and IEEE
  // arithmetic, so no libm difference can change a byte.
  uint64_t s = mix64(seed * kGolden ^ mix64(tensor + 0x51ED2701ull) ^ mix64(row * 0xD1342543DE82EF95ull + 1));
  constexpr double kScale = 1.7320508075688772;  // sqrt(3)
  constexpr double k2_32 = 1.0 / 4294967296.0;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t a = mix64(s += kGolden), b = mix64(s += kGolden);
    const double sum = static_cast<double>(a & 0xffffffffu) + static_cast<double>(a >> 32) +
                       static_cast<double>(b & 0xffffffffu) + static_cast<double>(b >> 32);
    out[i] = static_cast<float>((sum * k2_32 - 2.0) * kScale);
  }
}

SynthVocab synthetic_vocab(int64_t n_vocab) {
  if (n_vocab < 259) throw std::invalid_argument("synth: a synthetic vocabulary needs at least 259 tokens");
  SynthVocab v;
  auto add = [&](std::string s, int32_t type) {
    v.scores.push_back(type == 1 ? -static_cast<float>(v.tokens.size()) : 0.0f);
    v.tokens.push_back(std::move(s));
    v.types.push_back(type);
  };
  add("<unk>", 2);
  add("<s>", 3);
  add("</s>", 3);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    add(buf, 6);
  }
  const std::string sp = "\xE2\x96\x81";  // U+2581, SentencePiece's word-start mark
  if (static_cast<int64_t>(v.tokens.size()) < n_vocab) add(sp, 1);
  for (int ch = 0x21; ch < 0x7F && static_cast<int64_t>(v.tokens.size()) < n_vocab; ++ch) add(std::string(1, char(ch)), 1);
  // Then "▁w" for every word w over a-z in order of length (a, b, ..., z, aa, ab, ...); long enough
  // for any vocabulary size.
  for (int len = 1; static_cast<int64_t>(v.tokens.size()) < n_vocab; ++len) {
    std::string w(static_cast<size_t>(len), 'a');
    while (static_cast<int64_t>(v.tokens.size()) < n_vocab) {
      add(sp + w, 1);
      int i = len - 1;
      while (i >= 0 && w[static_cast<size_t>(i)] == 'z') w[static_cast<size_t>(i--)] = 'a';
      if (i < 0) break;
      ++w[static_cast<size_t>(i)];
    }
  }
  return v;
}

SynthSummary write_synth_model(const SynthOptions& o, const std::string& path) {
  const ModelConfig& c = o.config;
  if (c.arch != "llama" && c.arch != "qwen3" && c.arch != "qwen3moe")
    throw std::invalid_argument("synth: architecture " + c.arch + " is not supported (llama, qwen3, qwen3moe)");
  if (c.arch == "qwen3moe" && c.n_expert == 0) throw std::invalid_argument("synth: qwen3moe needs experts");
  if (c.arch == "qwen3" && c.n_expert != 0) throw std::invalid_argument("synth: qwen3 is dense (use qwen3moe)");
  SynthSummary sum;
  sum.tensors = synth_tensors(c, o.mix);
  for (const auto& t : sum.tensors) {
    sum.n_params += static_cast<uint64_t>(t.n_elements());
    sum.data_bytes += t.n_bytes;
  }

  const std::string p = c.arch + ".";
  const int64_t hd = c.head_dim > 0 ? c.head_dim : c.n_embd / c.n_heads;
  GgufWriter w;
  w.set_string("general.architecture", c.arch);
  w.set_string("general.name", c.name.empty() ? "herd-synth" : c.name);
  w.set_u32("general.file_type", o.mix.file_type);
  w.set_u32("general.quantization_version", 2);
  w.set_u32(p + "block_count", static_cast<uint32_t>(c.n_layers));
  w.set_u32(p + "context_length", static_cast<uint32_t>(c.n_ctx_train > 0 ? c.n_ctx_train : 2048));
  w.set_u32(p + "embedding_length", static_cast<uint32_t>(c.n_embd));
  w.set_u32(p + "feed_forward_length", static_cast<uint32_t>(c.n_ff));
  w.set_u32(p + "attention.head_count", static_cast<uint32_t>(c.n_heads));
  w.set_u32(p + "attention.head_count_kv", static_cast<uint32_t>(c.n_kv_heads));
  // Written wherever head_dim is not n_embd / n_heads, and always for qwen3 (as llama.cpp's converter does).
  if (c.arch != "llama" || hd * c.n_heads != c.n_embd) {
    w.set_u32(p + "attention.key_length", static_cast<uint32_t>(hd));
    w.set_u32(p + "attention.value_length", static_cast<uint32_t>(hd));
  }
  w.set_f32(p + "attention.layer_norm_rms_epsilon", c.rms_eps);
  w.set_f32(p + "rope.freq_base", c.rope_freq_base);
  w.set_u32(p + "rope.dimension_count", static_cast<uint32_t>(hd));
  w.set_u32(p + "vocab_size", static_cast<uint32_t>(c.n_vocab));
  if (c.n_expert > 0) {
    w.set_u32(p + "expert_count", static_cast<uint32_t>(c.n_expert));
    w.set_u32(p + "expert_used_count", static_cast<uint32_t>(c.n_expert_used));
    // Mixtral GGUFs have none (the experts are n_ff wide); qwen3moe files always do.
    if (c.arch != "llama" || c.n_ff_exp != c.n_ff)
      w.set_u32(p + "expert_feed_forward_length", static_cast<uint32_t>(c.n_ff_exp));
  }
  w.set_string("herd.synth.type", o.mix.name);
  w.set_u64("herd.synth.seed", o.seed);

  if (!o.vocab_from.empty()) {
    auto donor = GgufFile::open(o.vocab_from);
    const auto n = donor->array_size("tokenizer.ggml.tokens");
    if (!n) throw std::runtime_error(o.vocab_from + ": has no tokenizer.ggml.tokens to copy");
    if (static_cast<int64_t>(*n) != c.n_vocab)
      throw std::runtime_error(o.vocab_from + " has " + std::to_string(*n) + " tokens but the shape's vocabulary has " +
                               std::to_string(c.n_vocab));
    copy_tokenizer_keys(*donor, w);
  } else {
    SynthVocab v = synthetic_vocab(c.n_vocab);
    w.set_string("tokenizer.ggml.model", "llama");
    w.set_string("tokenizer.ggml.pre", "default");
    w.set_string_array("tokenizer.ggml.tokens", v.tokens);
    w.set_array("tokenizer.ggml.scores", v.scores);
    w.set_array("tokenizer.ggml.token_type", v.types);
    w.set_u32("tokenizer.ggml.bos_token_id", 1);
    w.set_u32("tokenizer.ggml.eos_token_id", 2);
    w.set_u32("tokenizer.ggml.unknown_token_id", 0);
    w.set_bool("tokenizer.ggml.add_bos_token", true);
    w.set_bool("tokenizer.ggml.add_eos_token", false);
  }

  const int n_threads = o.n_threads > 0 ? o.n_threads : std::max(1u, std::thread::hardware_concurrency());
  uint64_t done = 0;
  for (size_t ti = 0; ti < sum.tensors.size(); ++ti) {
    const SynthTensor& t = sum.tensors[ti];
    w.add_tensor_filled(t.name, t.ne, t.type, [&, ti](uint8_t* dst, size_t n_bytes) {
      const int64_t cols = t.ne[0];
      const int64_t rows = t.n_elements() / cols;
      const size_t rb = row_bytes(t.type, cols);
      if (rb * static_cast<size_t>(rows) != n_bytes) throw std::logic_error("synth: tensor size mismatch");
      auto work = [&](int64_t r0, int64_t r1) {
        std::vector<float> row(static_cast<size_t>(cols));
        for (int64_t r = r0; r < r1; ++r) {
          synth_normal_row(o.seed, ti, static_cast<uint64_t>(r), row.data(), cols);
          if (t.is_norm) {
            for (float& x : row) x = 1.0f + 0.05f * x;  // trained norm weights sit around 1
          } else {
            for (float& x : row) x *= o.weight_std;
          }
          quantize_row(t.type, row.data(), dst + static_cast<size_t>(r) * rb, cols);
        }
      };
      const int64_t nt = std::min<int64_t>(n_threads, rows);
      if (nt <= 1) {
        work(0, rows);
      } else {
        std::vector<std::thread> pool;
        std::exception_ptr err;
        std::atomic<bool> failed{false};
        for (int64_t k = 0; k < nt; ++k) {
          pool.emplace_back([&, k] {
            try {
              work(rows * k / nt, rows * (k + 1) / nt);
            } catch (...) {
              if (!failed.exchange(true)) err = std::current_exception();
            }
          });
        }
        for (auto& th : pool) th.join();
        if (err) std::rethrow_exception(err);
      }
      done += n_bytes;
      if (o.progress) o.progress(done, sum.data_bytes);
    });
  }

  check_free_space(path, synth_size_estimate(c, o.mix));
  const std::string partial = path + ".partial";
  try {
    sum.file_bytes = w.write(partial).file_size;
    std::filesystem::rename(partial, path);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(partial, ec);
    throw;
  }
  return sum;
}

}  // namespace herd::model
