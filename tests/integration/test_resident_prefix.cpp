// [offload] A streaming worker keeps a resident prefix of its layers (worker/stream_plan.h,
// worker/streamed_weights.h), in process, on a synthetic 6-layer Q8_0 model (the type the x86
// kernels repack; its output matrix is larger than a layer):
//   - the resident count the worker's rule gives equals the rule computed here from
//     stage_unit_bytes(w, c, be, 0) alone, and is between 1 and n - 1 for a budget chosen so;
//   - the logits of a prompt and decode steps are bit-identical (memcmp) to an unconstrained stage's;
//   - each pass populates exactly the bytes of the non-resident matrices (Stats::bytes_populated,
//     prefetch 0; with the planned prefetch, at most the window's first units more), the prefix is
//     populated once, and only the streamed matrices are multiplied in pieces;
//   - a budget that leaves no room for a resident layer streams every layer as before, and one
//     below the smallest window is refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "engine/stage.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/gguf.h"
#include "model/synth.h"
#include "model/weights.h"
#include "worker/stream_plan.h"
#include "worker/streamed_weights.h"

namespace herd {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kCtx = 32;
constexpr uint64_t kFixed = uint64_t{3} << 20;  // what a worker counts besides the weights: any value will do here

struct Model {
  std::string dir, path;
  std::unique_ptr<model::GgufFile> file;
  model::ModelConfig config;
  Model() {
    dir = (fs::temp_directory_path() / ("herd-resident-" + std::to_string(getpid()))).string();
    fs::create_directories(dir);
    path = dir + "/m.gguf";
    model::SynthOptions o;
    o.config.arch = "llama";
    o.config.name = "resident-test";
    o.config.n_layers = 6;
    o.config.n_embd = 256;
    o.config.n_ff = 768;
    o.config.n_heads = 4;
    o.config.n_kv_heads = 4;
    o.config.head_dim = 64;
    o.config.n_vocab = 4096;  // output 4096 x 256 Q8_0 (1.1 MB) > a layer (0.9 MB)
    o.config.n_ctx_train = 64;
    o.mix = model::parse_type_mix("Q8_0");
    model::write_synth_model(o, path);
    file = model::GgufFile::open(path);
    config = model::load_config(*file);
  }
  ~Model() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  model::LayerRange all() const { return {0, config.n_layers, true, true}; }
};

Model& the_model() {
  static Model m;
  return m;
}

std::vector<int32_t> tokens() {
  std::vector<int32_t> t;
  for (int32_t i = 0; i < 12; ++i) t.push_back((37 * i + 5) % 4096);
  return t;
}

// A prompt of 8 tokens (all logits), then 4 decode steps: 5 passes, their logits appended.
std::vector<float> run(Stage& s, const std::function<void(int pass)>& after_pass = {}) {
  const auto t = tokens();
  std::vector<float> all, out;
  s.forward(t.data(), nullptr, 8, 0, true, out);
  all.insert(all.end(), out.begin(), out.end());
  if (after_pass) after_pass(1);
  for (int64_t p = 8; p < 12; ++p) {
    s.forward(t.data() + p, nullptr, 1, p, false, out);
    all.insert(all.end(), out.begin(), out.end());
    if (after_pass) after_pass(static_cast<int>(p - 6));
  }
  return all;
}

const std::vector<float>& unconstrained() {
  static const std::vector<float> logits = [] {
    auto& m = the_model();
    auto be = make_cpu_backend();
    be->set_threads(2);
    Stage s(m.config, model::load_stage_weights(*m.file, m.config, m.all()), *be, KvOptions{kCtx});
    return run(s);
  }();
  return logits;
}

// The rule, from the whole-matrix unit bytes alone: per layer (its matmuls' count of units), the output last.
struct Split {
  std::vector<uint64_t> layers;
  uint64_t output = 0;
};
Split split_of(model::StageWeights& w, const model::ModelConfig& c, const Backend& be) {
  const auto whole = stage_unit_bytes(w, c, be, 0);
  Split s;
  size_t at = 0;
  for (auto& l : w.layers) {
    const size_t n = layer_matmuls(l, c.is_moe()).size();
    s.layers.push_back(std::accumulate(whole.begin() + at, whole.begin() + at + n, uint64_t{0}));
    at += n;
  }
  s.output = whole.at(at);
  EXPECT_EQ(at + 1, whole.size());
  return s;
}
uint64_t sum_from(const Split& s, int64_t r) {  // layers [r, n) + output
  return std::accumulate(s.layers.begin() + r, s.layers.end(), s.output);
}
uint64_t window_floor(const Split& s, int64_t r) {  // min(2 * widest(r), streamed(r), 4 MiB)
  const uint64_t widest = std::max(s.output, *std::max_element(s.layers.begin() + r, s.layers.end()));
  return std::min({2 * widest, sum_from(s, r), uint64_t{4} << 20});
}
int64_t rule(const Split& s, uint64_t fixed, uint64_t budget) {
  int64_t best = -1;
  for (int64_t r = 0; r < static_cast<int64_t>(s.layers.size()); ++r) {
    const uint64_t resident = std::accumulate(s.layers.begin(), s.layers.begin() + r, uint64_t{0});
    if (fixed + resident + window_floor(s, r) <= budget) best = r;
  }
  return best;
}

// Streams the model in `budget` (fixed = kFixed) as a worker would plan it; checks the bits and the bytes.
void stream_and_check(uint64_t budget, int64_t want_resident, bool planned_prefetch) {
  auto& m = the_model();
  auto be = make_cpu_backend();
  be->set_threads(2);
  model::StageWeights w = model::load_stage_weights(*m.file, m.config, m.all());
  const Split split = split_of(w, m.config, *be);
  const int64_t n = m.config.n_layers;
  const int64_t r = resident_prefix_layers(stage_layer_bytes(w, m.config, *be), kFixed, budget);
  ASSERT_EQ(r, rule(split, kFixed, budget)) << "the worker's resident count is not the rule's";
  ASSERT_EQ(r, want_resident);
  const uint64_t resident = std::accumulate(split.layers.begin(), split.layers.begin() + r, uint64_t{0});
  const uint64_t streamed = sum_from(split, r);
  const uint64_t avail = budget - kFixed - resident;
  ASSERT_GE(avail, window_floor(split, r));
  const auto units = stage_unit_bytes(w, m.config, *be, avail / 4, r);
  EXPECT_EQ(std::accumulate(units.begin(), units.end(), uint64_t{0}), streamed);
  const int64_t window = streaming_window(units, avail);
  std::printf("budget %llu: %lld resident layers (%llu bytes), %llu bytes streamed per pass in %zu units, window %lld\n",
              static_cast<unsigned long long>(budget), static_cast<long long>(r), static_cast<unsigned long long>(resident),
              static_cast<unsigned long long>(streamed), units.size(), static_cast<long long>(window));

  StreamOptions o;
  o.path = m.dir + "/cache/packed.bin";
  o.key = "resident-test";
  o.prefetch = planned_prefetch ? static_cast<int>(window - 1) : 0;
  o.piece_bytes = avail / 4;
  o.resident_layers = r;
  const WeightMatrix first_wq = w.layers[0].wq, last_wq = w.layers[static_cast<size_t>(n - 1)].wq;
  auto sw = StreamedWeights::open(w, m.config, *be, o);
  EXPECT_EQ(sw->resident_layers(), r);
  EXPECT_EQ(sw->units(), static_cast<int64_t>(units.size()));
  EXPECT_EQ(sw->stats().resident_bytes, resident) << "the prefix is populated once, whole";
  EXPECT_EQ(sw->stats().bytes_populated, 0u);
  EXPECT_EQ(sw->pieces(first_wq) == nullptr, r > 0) << "layer 0 is multiplied whole iff it is resident";
  EXPECT_NE(sw->pieces(last_wq), nullptr) << "the last layer streams";
  Stage s(m.config, std::move(w), *be, KvOptions{kCtx});
  s.set_residency(sw);
  // With prefetch k, a pass ends having asked for the next pass's first k units (at most their bytes more).
  const uint64_t ahead = std::accumulate(units.begin(), units.begin() + std::min<int64_t>(o.prefetch, window), uint64_t{0});
  const auto logits = run(s, [&](int pass) {
    const uint64_t got = sw->stats().bytes_populated;
    if (o.prefetch == 0) {
      EXPECT_EQ(got, static_cast<uint64_t>(pass) * streamed) << "pass " << pass;
    } else {
      EXPECT_GE(got, static_cast<uint64_t>(pass) * streamed) << "pass " << pass;
      EXPECT_LE(got, static_cast<uint64_t>(pass) * streamed + ahead) << "pass " << pass;
    }
  });
  EXPECT_EQ(sw->stats().resident_bytes, resident);
  const auto& plain = unconstrained();
  ASSERT_EQ(logits.size(), plain.size());
  EXPECT_EQ(0, std::memcmp(logits.data(), plain.data(), plain.size() * sizeof(float))) << "logits differ";
}

// A budget for exactly 2 resident layers: their bytes and the smallest window for the rest.
uint64_t budget_for_two(const Split& s) {
  return kFixed + s.layers[0] + s.layers[1] + window_floor(s, 2);
}

Split the_split() {
  auto& m = the_model();
  auto be = make_cpu_backend();
  model::StageWeights w = model::load_stage_weights(*m.file, m.config, m.all());
  return split_of(w, m.config, *be);
}

TEST(ResidentPrefix, LeadingLayersStayResidentTheRestStreamBitIdentical) {
  const Split s = the_split();
  // All layers are the same shape and the output is the widest, so the window does not shrink with
  // r: the budget holds exactly 2 layers besides it (a third would need its bytes more).
  ASSERT_GT(s.output, s.layers[0]);
  const uint64_t budget = budget_for_two(s) + s.layers[2] - 1;
  stream_and_check(budget, 2, false);
}

TEST(ResidentPrefix, ThePlannedPrefetchWindowKeepsTheBits) {
  stream_and_check(budget_for_two(the_split()), 2, true);
}

TEST(ResidentPrefix, NoRoomForALayerStreamsEveryLayerAsBefore) {
  const Split s = the_split();
  const uint64_t budget = kFixed + window_floor(s, 0) + s.layers[0] - 1;
  stream_and_check(budget, 0, false);
  stream_and_check(budget, 0, true);
}

TEST(ResidentPrefix, ABudgetBelowTheSmallestWindowIsRefused) {
  const Split s = the_split();
  auto& m = the_model();
  auto be = make_cpu_backend();
  model::StageWeights w = model::load_stage_weights(*m.file, m.config, m.all());
  const auto lb = stage_layer_bytes(w, m.config, *be);
  EXPECT_EQ(resident_prefix_layers(lb, kFixed, kFixed + window_floor(s, 0) - 1), -1);
  EXPECT_EQ(resident_prefix_layers(lb, kFixed, kFixed + window_floor(s, 0)), 0);
  // However large the budget, the last layer streams (a stage that fits is never streamed).
  EXPECT_EQ(resident_prefix_layers(lb, kFixed, uint64_t{1} << 40), m.config.n_layers - 1);
}

}  // namespace
}  // namespace herd
