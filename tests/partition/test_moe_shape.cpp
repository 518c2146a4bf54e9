// Qwen3 and mixture-of-experts shapes: the named shapes' hyper-parameters, `herd synth`'s tensors
// against the planner's sizes (exact), a synth'd MoE GGUF read back by shape_from_gguf (exact), and
// the cost model's active bytes (decode: k of E experts; prefill: the expected distinct experts).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "kernels/dtype.h"
#include "model/gguf.h"
#include "model/synth.h"
#include "partition/cost_model.h"
#include "partition/memory_model.h"
#include "partition/model_shape.h"
#include "partition/shapes.h"

namespace herd::partition {
namespace {

const char* kNewShapes[] = {"qwen3-8b", "qwen3-32b", "qwen3-30b-a3b", "qwen3-235b-a22b", "mixtral-8x7b", "mixtral-8x22b"};

// "blk.<n>." -> n; -1 outside the layers.
int64_t layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  return std::stoll(name.substr(4));
}

// Per-layer sums of the tensors synth writes: all bytes, expert bytes, and the bytes and FLOPs one
// decode token uses (3-D expert tensors count k of their E experts), computed from the tensor list
// alone (not from the planner's formulas).
struct LayerSums {
  uint64_t all = 0, experts = 0;
  double active = 0, flops = 0;
};
std::vector<LayerSums> synth_layer_sums(const model::ModelConfig& c, const std::vector<model::SynthTensor>& ts) {
  std::vector<LayerSums> v(static_cast<size_t>(c.n_layers));
  for (const auto& t : ts) {
    const int64_t l = layer_of(t.name);
    if (l < 0) continue;
    auto& s = v[static_cast<size_t>(l)];
    s.all += t.n_bytes;
    const double use = t.ne.size() == 3 ? static_cast<double>(c.n_expert_used) / static_cast<double>(t.ne[2]) : 1.0;
    if (t.ne.size() == 3) s.experts += t.n_bytes;
    s.active += use * static_cast<double>(t.n_bytes);
    if (t.ne.size() >= 2) s.flops += 2.0 * use * static_cast<double>(t.n_elements());
  }
  return v;
}

TEST(MoeShapes, HyperParametersFromConfigJson) {
  const auto q235 = find_shape("Qwen3-235B-A22B");
  ASSERT_TRUE(q235);
  EXPECT_EQ(q235->arch, "qwen3moe");
  const model::ModelConfig c = shape_config(*q235);
  EXPECT_EQ(c.n_layers, 94);
  EXPECT_EQ(c.head_dim, 128);        // not 4096 / 64 = 64
  EXPECT_EQ(c.q_dim(), 64 * 128);
  EXPECT_EQ(c.kv_dim(), 4 * 128);
  EXPECT_EQ(c.n_expert, 128);
  EXPECT_EQ(c.n_expert_used, 8);
  EXPECT_EQ(c.n_ff_exp, 1536);
  EXPECT_TRUE(c.has_qk_norm);
  EXPECT_TRUE(c.is_moe());
  const model::ModelConfig q32 = shape_config(*find_shape("qwen3-32b"));
  EXPECT_EQ(q32.q_dim(), 8192);      // 64 heads x 128, wider than hidden 5120
  EXPECT_FALSE(q32.is_moe());
  EXPECT_FALSE(q32.tied_embeddings);
  const model::ModelConfig mx = shape_config(*find_shape("mixtral-8x7b"));
  EXPECT_EQ(mx.arch, "llama");
  EXPECT_FALSE(mx.has_qk_norm);
  EXPECT_EQ(mx.n_expert, 8);
  EXPECT_EQ(mx.n_expert_used, 2);
  EXPECT_EQ(mx.n_ff_exp, 14336);
}

// The planner's sizes of every new shape equal the bytes `herd synth` would write, layer by layer
// (all their dimensions are whole K super-blocks, so neither side falls back to another type).
TEST(MoeShapes, ShapeFromConfigEqualsSynthTensors) {
  for (const char* name : kNewShapes) {
    for (const char* type : {"Q4_K_M", "Q2_K", "Q3_K_M", "Q3_K_L", "Q5_K_M", "Q8_0", "F16"}) {
      model::ModelConfig c = shape_config(*find_shape(name));
      const auto ts = model::synth_tensors(c, model::parse_type_mix(type));
      const ModelShape m = shape_from_config(c, type);
      const auto sums = synth_layer_sums(c, ts);
      const std::string what = std::string(name) + " " + type;
      uint64_t total = 0;
      for (const auto& t : ts) total += t.n_bytes;
      ASSERT_EQ(m.total_bytes(), total) << what;
      for (int64_t l = 0; l < c.n_layers; ++l) {
        const auto& s = sums[static_cast<size_t>(l)];
        ASSERT_EQ(m.layer_bytes[static_cast<size_t>(l)], s.all) << what << " layer " << l;
        ASSERT_EQ(m.layer_expert_bytes[static_cast<size_t>(l)], s.experts) << what << " layer " << l;
        // Active bytes are whole experts: exact in double (< 2^53).
        ASSERT_EQ(m.layer_read_bytes(l, 1), s.active) << what << " layer " << l;
        ASSERT_NEAR(m.layer_flops[static_cast<size_t>(l)], s.flops, 1e-9 * s.flops) << what << " layer " << l;
        uint64_t mats = 0;
        for (const auto& tb : m.layer_matrix_bytes[static_cast<size_t>(l)]) mats += tb.bytes;
        const uint64_t norms = 4ull * (2 * static_cast<uint64_t>(c.n_embd) + (c.has_qk_norm ? 2 * c.head_dim : 0));
        ASSERT_EQ(static_cast<double>(mats + norms), s.active) << what << " layer " << l;
      }
    }
  }
}

// llama.cpp's 8-expert rule (Mixtral): attn_k, attn_v Q8_0, attn_output Q5_K in Q4_K_M; experts
// as ffn_*; the router F32. Qwen3-MoE (128 experts) keeps the dense rules.
TEST(MoeShapes, SynthTensorNamesShapesAndTypes) {
  model::ModelConfig c = shape_config(*find_shape("mixtral-8x7b"));
  c.n_layers = 2;
  std::map<std::string, model::SynthTensor> by;
  for (const auto& t : model::synth_tensors(c, model::parse_type_mix("Q4_K_M"))) by.emplace(t.name, t);
  EXPECT_FALSE(by.count("blk.0.ffn_gate.weight"));
  EXPECT_FALSE(by.count("blk.0.attn_q_norm.weight"));
  EXPECT_EQ(by.at("blk.0.ffn_gate_inp.weight").ne, (std::vector<int64_t>{4096, 8}));
  EXPECT_EQ(by.at("blk.0.ffn_gate_inp.weight").type, DType::F32);
  EXPECT_EQ(by.at("blk.1.ffn_gate_exps.weight").ne, (std::vector<int64_t>{4096, 14336, 8}));
  EXPECT_EQ(by.at("blk.1.ffn_up_exps.weight").type, DType::Q4_K);
  EXPECT_EQ(by.at("blk.1.ffn_down_exps.weight").ne, (std::vector<int64_t>{14336, 4096, 8}));
  EXPECT_EQ(by.at("blk.1.ffn_down_exps.weight").type, DType::Q6_K);  // more-bits layer, as ffn_down
  EXPECT_EQ(by.at("blk.0.attn_k.weight").type, DType::Q8_0);
  EXPECT_EQ(by.at("blk.0.attn_v.weight").type, DType::Q8_0);
  EXPECT_EQ(by.at("blk.0.attn_output.weight").type, DType::Q5_K);

  model::ModelConfig q = shape_config(*find_shape("qwen3-30b-a3b"));
  q.n_layers = 1;
  by.clear();
  for (const auto& t : model::synth_tensors(q, model::parse_type_mix("Q2_K"))) by.emplace(t.name, t);
  EXPECT_EQ(by.at("blk.0.attn_q.weight").ne, (std::vector<int64_t>{2048, 4096}));
  EXPECT_EQ(by.at("blk.0.attn_output.weight").ne, (std::vector<int64_t>{4096, 2048}));
  EXPECT_EQ(by.at("blk.0.attn_q_norm.weight").ne, (std::vector<int64_t>{128}));
  EXPECT_EQ(by.at("blk.0.attn_k_norm.weight").type, DType::F32);
  EXPECT_EQ(by.at("blk.0.ffn_gate_exps.weight").ne, (std::vector<int64_t>{2048, 768, 128}));
  EXPECT_EQ(by.at("blk.0.ffn_gate_exps.weight").type, DType::Q2_K);
  EXPECT_EQ(by.at("blk.0.ffn_down_exps.weight").type, DType::Q3_K);
  EXPECT_EQ(by.at("blk.0.attn_v.weight").type, DType::Q4_K);  // n_gqa 8 >= 4
  EXPECT_EQ(by.at("blk.0.attn_k.weight").type, DType::Q2_K);
}

// Published GGUF sizes (decimal GB): bartowski's Mixtral-8x22B-v0.1 (llama.cpp b2636, experts merged
// into ffn_*_exps as today), TheBloke's Mixtral-8x7B Q8_0, Qwen's own Qwen3 GGUFs. The mix
// approximation must land within 2%. (TheBloke's older Mixtral-8x7B K-quants, 26.44 GB for Q4_K_M,
// stored one tensor per expert, which llama.cpp's ffn_down rule then missed: no Q6_K ffn_down; a
// file quantized today is ~28.4 GB, what herd predicts.)
TEST(MoeShapes, NamedShapesMatchPublishedSizes) {
  struct Case {
    const char* shape;
    const char* type;
    double gb;
  } cases[] = {
      {"mixtral-8x22b", "Q2_K", 52.10},   {"mixtral-8x22b", "Q3_K_S", 61.49}, {"mixtral-8x22b", "Q3_K_M", 67.78},
      {"mixtral-8x22b", "Q3_K_L", 72.57}, {"mixtral-8x22b", "Q4_K_S", 80.47}, {"mixtral-8x22b", "Q4_K_M", 85.58},
      {"mixtral-8x22b", "Q5_K_M", 99.96}, {"mixtral-8x7b", "Q8_0", 49.62},    {"qwen3-8b", "Q4_K_M", 5.03},
      {"qwen3-8b", "Q8_0", 8.71},         {"qwen3-32b", "Q4_K_M", 19.76},     {"qwen3-30b-a3b", "Q4_K_M", 18.6},
      {"qwen3-30b-a3b", "Q8_0", 32.5},
  };
  for (const auto& k : cases) {
    const ModelShape m = shape_from_name(k.shape, k.type);
    EXPECT_NEAR(static_cast<double>(m.total_bytes()) / 1e9, k.gb, 0.02 * k.gb) << k.shape << " " << k.type;
  }
}

// A small MoE model written by write_synth_model and read back: shape_from_gguf's numbers are
// the file's tensors and equal shape_from_config's for the same config.
void expect_file_matches_config(model::ModelConfig c, const char* type) {
  model::SynthOptions o;
  o.config = c;
  o.mix = model::parse_type_mix(type);
  o.n_threads = 2;
  const std::string path = ::testing::TempDir() + "moe-" + c.arch + "-" + type + ".gguf";
  const model::SynthSummary sum = model::write_synth_model(o, path);
  auto f = model::GgufFile::open(path, {.map_all = false});
  const model::ModelConfig fc = model::load_config(*f);
  EXPECT_EQ(fc.arch, c.arch);
  EXPECT_EQ(fc.n_expert, c.n_expert);
  EXPECT_EQ(fc.n_expert_used, c.n_expert_used);
  EXPECT_EQ(fc.n_ff_exp, c.n_ff_exp);
  EXPECT_EQ(fc.head_dim, c.head_dim);
  EXPECT_EQ(fc.has_qk_norm, c.has_qk_norm);
  const ModelShape g = shape_from_gguf(*f, fc);
  const ModelShape s = shape_from_config(c, type);
  uint64_t all = 0;
  for (const auto& t : f->tensors()) all += t.n_bytes;
  EXPECT_EQ(all, sum.data_bytes);
  EXPECT_EQ(g.total_bytes(), all);
  EXPECT_EQ(s.total_bytes(), all);
  const auto sums = synth_layer_sums(c, sum.tensors);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const size_t i = static_cast<size_t>(l);
    EXPECT_EQ(g.layer_bytes[i], s.layer_bytes[i]) << l;
    EXPECT_EQ(g.layer_expert_bytes[i], sums[i].experts) << l;
    EXPECT_EQ(g.layer_read_bytes(l, 1), sums[i].active) << l;
    EXPECT_EQ(g.layer_read_bytes(l, 1), s.layer_read_bytes(l, 1)) << l;
    EXPECT_NEAR(g.layer_flops[i], s.layer_flops[i], 1e-12 * s.layer_flops[i]) << l;
    std::map<uint32_t, uint64_t> gt, st;
    for (const auto& tb : g.layer_matrix_bytes[i]) gt[tb.type] += tb.bytes;
    for (const auto& tb : s.layer_matrix_bytes[i]) st[tb.type] += tb.bytes;
    EXPECT_EQ(gt, st) << l;
  }
  for (int64_t a = 0; a < c.n_layers; ++a)
    for (int64_t b = a + 1; b <= c.n_layers; ++b) EXPECT_EQ(g.stage_bytes(a, b), s.stage_bytes(a, b)) << a << ".." << b;
  std::filesystem::remove(path);
}

model::ModelConfig small_moe(const char* arch) {
  model::ModelConfig c;
  c.arch = arch;
  c.name = std::string("tiny-") + arch;
  c.n_layers = 3;
  c.n_embd = 256;
  c.n_ff = 512;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = c.arch == "llama" ? 64 : 128;  // qwen3: q wider than n_embd, as in Qwen3-235B
  c.n_rot = c.head_dim;
  c.n_vocab = 512;
  c.n_ctx_train = 256;
  c.has_qk_norm = c.arch != "llama";
  c.rms_eps = 1e-6f;
  if (c.arch != "qwen3") {
    c.n_expert = c.arch == "llama" ? 8 : 16;
    c.n_expert_used = c.arch == "llama" ? 2 : 4;
    c.n_ff_exp = c.arch == "llama" ? c.n_ff : 256;
  }
  return c;
}

TEST(MoeShapes, SynthFileReadBackExactly) {
  expect_file_matches_config(small_moe("qwen3moe"), "Q4_K_M");
  expect_file_matches_config(small_moe("qwen3moe"), "Q2_K");
  expect_file_matches_config(small_moe("llama"), "Q3_K_M");  // Mixtral-style, 8-expert rule
  expect_file_matches_config(small_moe("qwen3"), "Q8_0");     // dense qwen3 with q/k norms
}

DeviceProfile bw_device(double bw) {
  DeviceProfile d;
  d.name = "cpu";
  d.total_bytes = d.free_bytes = 1ull << 40;
  d.bandwidth_Bps = bw;
  d.flops = 1e18;  // never FLOP-bound here: the byte terms are what is tested
  return d;
}

// Decode reads the shared weights and k of E experts: uncalibrated, the layer time is those bytes
// plus the KV at bw, far below reading the whole layer.
TEST(MoeCost, DecodeReadsTheActiveExperts) {
  const ModelShape m = shape_from_name("qwen3-235b-a22b", "Q2_K");
  const DeviceProfile d = bw_device(50e9);
  PlanOptions o;
  o.n_ctx = 2;
  const auto ts = model::synth_tensors(m.config, model::parse_type_mix("Q2_K"));
  const auto sums = synth_layer_sums(m.config, ts);
  for (int64_t l : {int64_t{0}, int64_t{50}, m.n_layers() - 1}) {
    const double kv = 1.0 * static_cast<double>(m.kv_bytes_per_token_layer(o.kv_elem_bytes));  // pos = n_ctx / 2
    EXPECT_NEAR(layer_decode_s(m, d, l, o), (sums[static_cast<size_t>(l)].active + kv) / d.bandwidth_Bps, 1e-12);
    EXPECT_LT(sums[static_cast<size_t>(l)].active, 0.12 * static_cast<double>(m.layer_bytes[static_cast<size_t>(l)]));
  }
  // k/E of the experts: one token reads 8/128 of them.
  EXPECT_DOUBLE_EQ(m.expert_fraction(1), 8.0 / 128.0);
  double total_active = static_cast<double>(m.output_bytes);
  for (const auto& s : sums) total_active += s.active;
  EXPECT_DOUBLE_EQ(m.decode_read_bytes(), total_active);
}

// Prefill of n tokens reads the expected number of distinct experts, E (1 - (1 - k/E)^n) of E,
// per chunk of n_batch tokens.
TEST(MoeCost, PrefillReadsTheExpectedDistinctExperts) {
  const ModelShape m = shape_from_name("qwen3-30b-a3b", "Q4_K_M");
  const DeviceProfile d = bw_device(20e9);
  PlanOptions o;
  o.n_ctx = 4096;
  const int64_t L = m.n_layers();
  auto bytes_of = [&](double n_chunk, double chunks) {  // layers 0 .. L/2 - 1
    double b = 0;
    for (int64_t l = 0; l < L / 2; ++l) {
      const double exps = static_cast<double>(m.layer_expert_bytes[static_cast<size_t>(l)]);
      b += static_cast<double>(m.layer_bytes[static_cast<size_t>(l)]) - exps +
           exps * (1.0 - std::pow(1.0 - 8.0 / 128.0, n_chunk));
    }
    return b * chunks;
  };
  o.n_prompt = 4;  // 4 tokens: 1 - (15/16)^4 = 22.8% of the experts
  EXPECT_NEAR(stage_prefill_s(m, d, 0, L / 2, o), bytes_of(4, 1) / d.bandwidth_Bps, 1e-9);
  o.n_prompt = 1024;
  o.n_batch = 256;  // 4 chunks, each touching all but (15/16)^256 ~ 7e-8 of the experts
  EXPECT_NEAR(stage_prefill_s(m, d, 0, L / 2, o), bytes_of(256, 4) / d.bandwidth_Bps, 1e-9);
  o.n_batch = 1000;  // one chunk of 1000 and one of 24
  const double want = (bytes_of(1000, 1) + bytes_of(24, 1)) / d.bandwidth_Bps;
  EXPECT_NEAR(stage_prefill_s(m, d, 0, L / 2, o), want, 1e-9);
}

// Kernel calls: the router and k experts replace the dense FFN's four; qwen3 adds its q/k norms.
TEST(MoeCost, OpCounts) {
  const ModelShape q = shape_from_name("qwen3-235b-a22b", "Q2_K");
  EXPECT_DOUBLE_EQ(layer_ops(q, 1), kOpsPerLayer + kOpsQkNorm - kOpsDenseFfn + kOpsMoeRouter + 8 * kOpsPerExpert);
  EXPECT_DOUBLE_EQ(layer_ops(q, 1), 55);  // the figure docs/planner.md quotes
  const ModelShape mx = shape_from_name("mixtral-8x7b", "Q4_K_M");
  EXPECT_DOUBLE_EQ(layer_ops(mx, 1), kOpsPerLayer - kOpsDenseFfn + kOpsMoeRouter + 2 * kOpsPerExpert);
  EXPECT_NEAR(layer_ops(mx, 512), kOpsPerLayer - kOpsDenseFfn + kOpsMoeRouter + 8 * kOpsPerExpert, 1e-9);
  EXPECT_DOUBLE_EQ(layer_ops(shape_from_name("llama3-8b", "Q4_0"), 1), kOpsPerLayer);
}

// Memory counts every expert: the whole model must fit somewhere even though a token reads 1/16.
TEST(MoeCost, MemoryCountsAllExperts) {
  const ModelShape m = shape_from_name("qwen3-30b-a3b", "Q4_K_M");
  const DeviceProfile d = bw_device(20e9);
  PlanOptions o;
  o.n_ctx = 1024;
  const StageMemory s = stage_memory(m, d, 0, m.n_layers(), o);
  EXPECT_EQ(s.weights, m.total_bytes());
  EXPECT_GT(static_cast<double>(s.weights), 5.0 * m.decode_read_bytes());
}

}  // namespace
}  // namespace herd::partition
