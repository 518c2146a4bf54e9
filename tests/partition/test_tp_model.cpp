// The planner's tensor-parallel model (partition/tp_model.h) and `optimal` with TP groups:
//   - the chain all-reduce's closed form against a discrete-event simulation of the chain;
//   - a group's compute against the same sums done by hand (halves of the layer, replicated norms);
//   - per-rank memory adds up to the stage plus what every rank replicates;
//   - the shard shape equals engine/tp_shard.cpp's, and the shares are engine/shard_plan.h's;
//   - `optimal` (max_tp >= 2) equals brute force over the pipeline and over every grouping's
//     stage subsets and layer splits, on random instances.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "engine/ring_comm.h"
#include "engine/tp_shard.h"
#include "model/gguf.h"
#include "model/synth.h"
#include "model/weights.h"
#include "partition/shapes.h"
#include "partition/strategies.h"
#include "partition/tp_model.h"
#include "tests/test_paths.h"

namespace herd::partition {
namespace {

// The chain of engine/ring_comm.h, chunk by chunk: chunk k goes 0 -> 1 -> ... -> n-1 (partial sums)
// then n-1 -> 0 -> ... -> n-2 (the result). A link sends one chunk at a time (bytes / bw), FIFO in
// the order chunks become ready, and each chunk arrives `latency` after it is sent. Returns when the
// last chunk reaches its last rank.
double simulate_chain(int n, double values, double bytes_per_value, const LinkProfile& l) {
  const double K = std::max(1.0, std::ceil(values / static_cast<double>(kRingChunkFloats)));
  const double chunk_s = values * bytes_per_value / K / l.bandwidth_Bps;
  std::vector<int> route;  // link index r: r -> (r + 1) % n
  for (int r = 0; r + 1 < n; ++r) route.push_back(r);
  route.push_back(n - 1);
  for (int r = 0; r + 2 < n; ++r) route.push_back(r);
  std::vector<double> link_free(static_cast<size_t>(n), 0.0);
  std::vector<double> ready(static_cast<size_t>(K), 0.0);  // when chunk k is at the sender of its next hop
  // Hop by hop across all chunks: hop j of chunk k is ready after hop j-1; on a shared link the
  // earlier-ready transmission goes first (chunks in order; a result hop after the partials before it).
  struct Tx {
    double ready;
    size_t k;
    size_t j;
  };
  std::vector<size_t> next_hop(static_cast<size_t>(K), 0);
  double done = 0;
  for (size_t left = static_cast<size_t>(K) * route.size(); left > 0; --left) {
    // The transmission that can start first.
    size_t bk = SIZE_MAX;
    double best_start = INFINITY;
    for (size_t k = 0; k < static_cast<size_t>(K); ++k) {
      if (next_hop[k] >= route.size()) continue;
      const double start = std::max(ready[k], link_free[static_cast<size_t>(route[next_hop[k]])]);
      if (start < best_start) best_start = start, bk = k;
    }
    const size_t link = static_cast<size_t>(route[next_hop[bk]]);
    link_free[link] = best_start + chunk_s;
    ready[bk] = best_start + chunk_s + l.latency_s;
    ++next_hop[bk];
    done = std::max(done, ready[bk]);
  }
  return done;
}

static_assert(kChainChunkValues == static_cast<int64_t>(kRingChunkFloats), "the planner's chunk is the ring's");

TEST(TpModel, ChainAllReduceMatchesASimulatedChain) {
  const LinkProfile link{200e-6, 1.25e9};
  for (int n = 2; n <= 6; ++n)
    for (double values : {1024.0, 4096.0, 8192.0, 16384.0})  // decode: one chunk (n_embd <= 16384)
      for (TpSync s : {TpSync::F32, TpSync::F16, TpSync::Q8}) {
        const CollectiveCost c = chain_all_reduce(n, values, sync_value_bytes(s), link);
        const double sim = simulate_chain(n, values, sync_value_bytes(s), link);
        EXPECT_EQ(c.hops, 2 * (n - 1));
        // One chunk: the closed form is the simulation's sum of 2(n-1) hops, exact up to rounding.
        EXPECT_NEAR(c.s, sim, 1e-12 * sim) << n << " ranks, " << values;
        EXPECT_DOUBLE_EQ(c.busiest_rank_bytes, (n == 2 ? 1 : 2) * values * sync_value_bytes(s));
      }
  // Several chunks: exact for 2 ranks (each link carries each chunk once); with n >= 3 the link
  // 0 -> 1 carries partials and results, so the closed form (pipelined, or that link's bytes) is a
  // lower bound the simulation stays within one chunk per hop of.
  for (int n = 2; n <= 5; ++n)
    for (double chunks : {2.0, 3.0, 8.0, 40.0}) {
      const double values = chunks * kRingChunkFloats;
      const CollectiveCost c = chain_all_reduce(n, values, 4.0, link);
      const double sim = simulate_chain(n, values, 4.0, link);
      const double chunk_s = kRingChunkFloats * 4.0 / link.bandwidth_Bps;
      if (n == 2) {
        EXPECT_NEAR(c.s, sim, 1e-12 * sim) << chunks;
      } else {
        EXPECT_LE(c.s, sim * (1 + 1e-12)) << n << " " << chunks;
        EXPECT_LE(sim, c.s + c.hops * (chunk_s + link.latency_s)) << n << " " << chunks;
      }
    }
  EXPECT_EQ(chain_all_reduce(1, 4096, 4, link).s, 0.0);
}

TEST(TpModel, F16AndQ8SyncIsAnAllGatherOfTheRoundedBytes) {
  // engine/tp_sync.cpp: f16 / q8 all-gather each rank's encoded partial (n-1 hops, each rank
  // forwarding n-1 partials) and sum locally; f32 does the same while latency-bound
  // (f32_sync_gathers), else runs the chain.
  const LinkProfile link{200e-6, 1.25e9};
  for (int n = 2; n <= 5; ++n)
    for (double values : {1024.0, 4096.0, 8192.0}) {
      const CollectiveCost f32 = sync_all_reduce(n, values, TpSync::F32, link);
      ASSERT_TRUE(f32_sync_gathers(n, static_cast<size_t>(values))) << n << " ranks, " << values;
      const CollectiveCost gather = ring_all_gather(n, values, link, 4.0);
      EXPECT_EQ(f32.s, gather.s);
      EXPECT_EQ(f32.busiest_rank_bytes, gather.busiest_rank_bytes);
      EXPECT_LT(f32.s, chain_all_reduce(n, values, 4.0, link).s) << "half the hops";
      for (TpSync s : {TpSync::F16, TpSync::Q8}) {
        const CollectiveCost c = sync_all_reduce(n, values, s, link);
        const double bytes = values * sync_value_bytes(s);
        EXPECT_EQ(c.hops, n - 1);  // one chunk: these messages are under 64 KiB
        EXPECT_DOUBLE_EQ(c.busiest_rank_bytes, (n - 1) * bytes);
        EXPECT_NEAR(c.s, (n - 1) * (link.latency_s + bytes / link.bandwidth_Bps), 1e-15);
        EXPECT_LT(c.s, f32.s) << n << " ranks: fewer hops and fewer bytes than the f32 chain";
      }
    }
  // A prompt batch's partials over 3+ ranks: bandwidth-bound, the chain.
  for (int n = 3; n <= 5; ++n) {
    const double values = 4096.0 * 128;  // 128 rows of n_embd 4096: 2 MiB per rank
    ASSERT_FALSE(f32_sync_gathers(n, static_cast<size_t>(values)));
    EXPECT_EQ(sync_all_reduce(n, values, TpSync::F32, link).s, chain_all_reduce(n, values, 4.0, link).s);
  }
  EXPECT_TRUE(f32_sync_gathers(2, 4096 * 128));  // 2 ranks: one exchange, whatever the size
  EXPECT_TRUE(f32_sync_gathers(3, kF32GatherBytes / 8));
  EXPECT_FALSE(f32_sync_gathers(3, kF32GatherBytes / 8 + 1));
  // A message over one chunk of f32 words is split like any ring message.
  const double big = 3.0 * kChainChunkValues;  // f16: 1.5 chunks of words -> 2 chunks
  EXPECT_EQ(sync_all_reduce(2, big, TpSync::F16, link).hops, 2);
}

TEST(TpModel, SyncBytesPerValue) {
  EXPECT_EQ(sync_value_bytes(TpSync::F32), 4.0);
  EXPECT_EQ(sync_value_bytes(TpSync::F16), 2.0);
  // Q8_0: 32 int8 values and one f16 scale.
  EXPECT_EQ(sync_value_bytes(TpSync::Q8), (32.0 + 2.0) / 32.0);
}

// A memory-bound device (FLOPs never bind) whose matvec rates are its bandwidth.
DeviceProfile plain_device(const std::string& name, double bw, double overhead_s = 0) {
  DeviceProfile d;
  d.name = name;
  d.host = name;
  d.bandwidth_Bps = bw;
  d.flops = 1e18;
  d.op_overhead_s = overhead_s;
  d.total_bytes = d.free_bytes = 64ull << 30;
  return d;
}

double sum_bytes(const std::vector<ModelShape::TypeBytes>& v) {
  double s = 0;
  for (const auto& tb : v) s += static_cast<double>(tb.bytes);
  return s;
}

TEST(TpModel, OneRankIsTheDeviceAlone) {
  // Memory-bound, the two halves' maxima add up to the layer's: a group of one costs what the device
  // costs alone (same bytes, same kernel calls), for every range.
  const ModelShape m = shape_from_name("tinyllama-1.1b", "Q4_K_M");
  Cluster c;
  c.devices.push_back(plain_device("a", 50e9, 3e-6));
  PlanOptions o;
  o.n_ctx = 1024;
  const TpGroup g = make_tp_group(m, c, {0});
  for (auto [f, e] : {std::pair<int64_t, int64_t>{0, 22}, {0, 5}, {5, 22}, {3, 9}}) {
    const TpStageCost t = tp_stage_decode(m, c, g, f, e, o);
    EXPECT_EQ(t.sync_s, 0.0);
    EXPECT_NEAR(t.compute_s, stage_decode_s(m, c.devices[0], f, e, o), 1e-12) << f << "-" << e;
  }
}

TEST(TpModel, TwoEqualRanksHalveTheShardedBytes) {
  // tinyllama: 4 KV heads, n_ff 5632 = 176 blocks of 32, vocab 32000: two equal ranks get exactly half.
  const ModelShape m = shape_from_name("tinyllama-1.1b", "Q4_0");
  const double bw = 40e9;
  Cluster c;
  c.devices = {plain_device("a", bw), plain_device("b", bw)};
  c.local_link = c.default_link = {0, INFINITY};  // free sync: compute only
  PlanOptions o;
  o.n_ctx = 512;
  const TpGroup g = make_tp_group(m, c, {0, 1});
  ASSERT_EQ(g.shards.kv_heads[0].size(), 2);
  ASSERT_EQ(g.shards.ffn_rows[0].size(), 2816);
  ASSERT_EQ(g.shards.vocab[0].size(), 16000);
  // By hand: every layer matrix halved, norms whole, half the KV cache; output rows halved, its norm
  // whole; the embedding row whole.
  double expect = 0;
  const double pos = static_cast<double>(o.n_ctx) / 2;
  for (int64_t l = 0; l < m.n_layers(); ++l) {
    const double mats = sum_bytes(m.layer_matrix_bytes[static_cast<size_t>(l)]);
    const double other = static_cast<double>(m.layer_bytes[static_cast<size_t>(l)]) - mats;
    expect += mats / 2 / bw + other / bw + pos * static_cast<double>(m.kv_bytes_per_token_layer(o.kv_elem_bytes)) / 2 / bw;
  }
  const double norm = static_cast<double>(m.output_bytes - m.output_matrix.bytes);
  expect += static_cast<double>(m.output_matrix.bytes) / 2 / bw + norm / bw;
  expect += input_decode_s(m, c.devices[0]);
  const TpStageCost t = tp_stage_decode(m, c, g, 0, m.n_layers(), o);
  EXPECT_NEAR(t.compute_s, expect, 1e-12 * expect);
  EXPECT_EQ(t.sync_s, 0.0);
  // ... which is a little more than half the device alone (the norms and the embedding row repeat).
  const double alone = stage_decode_s(m, c.devices[0], 0, m.n_layers(), o);
  EXPECT_GT(t.compute_s, alone / 2);
  EXPECT_LT(t.compute_s, alone / 2 * 1.01);
  // The sync: 2 per layer; with 2 ranks the busiest sends each message once, f32.
  EXPECT_EQ(t.n_all_reduce, 2 * m.n_layers());
  EXPECT_DOUBLE_EQ(t.sync_bytes, 2.0 * m.n_layers() * m.config.n_embd * 4 + 16000 * 4);
}

TEST(TpModel, SyncTimeFollowsLatencyHopsAndPrecision) {
  const ModelShape m = shape_from_name("llama2-7b", "Q4_0");
  Cluster c;
  for (int i = 0; i < 4; ++i) c.devices.push_back(plain_device("d" + std::to_string(i), 50e9));
  c.default_link = {1e-3, 1e12};  // latency only
  PlanOptions o;
  for (int n = 2; n <= 4; ++n) {
    std::vector<int> devs(static_cast<size_t>(n));
    std::iota(devs.begin(), devs.end(), 0);
    const TpGroup g = make_tp_group(m, c, devs);
    const TpStageCost t = tp_stage_decode(m, c, g, 0, m.n_layers(), o);
    // 64 all-reduces, all-gathers of n_embd f32 (latency-bound: f32_sync_gathers) of n-1 hops,
    // and a gather of (n-1) steps, each hop 1 ms (+ ~0 transfer).
    const double hops = 64.0 * (n - 1) + (n - 1);
    EXPECT_NEAR(t.sync_s, hops * 1e-3, 1e-6 * hops) << n;
  }
  // Precision scales the all-reduce bytes: f16 half of f32, q8 34/128 of it (the gather stays f32).
  c.default_link = {0, 1e9};
  const TpGroup g = make_tp_group(m, c, {0, 1});
  double ar[3];
  int i = 0;
  for (TpSync s : {TpSync::F32, TpSync::F16, TpSync::Q8}) {
    o.tp_sync = s;
    ar[i++] = tp_stage_decode(m, c, g, 0, m.n_layers() - 1, o).sync_bytes;  // no output: all-reduces only
  }
  EXPECT_DOUBLE_EQ(ar[1], ar[0] / 2);
  EXPECT_DOUBLE_EQ(ar[2], ar[0] * 34.0 / 128.0);
}

TEST(TpModel, SharesAreTheEnginesShardPlanBySpeed) {
  const ModelShape m = shape_from_name("tinyllama-1.1b", "Q4_0");
  Cluster c;
  c.devices = {plain_device("fast", 90e9), plain_device("slow", 30e9)};
  const TpGroup g = make_tp_group(m, c, {0, 1});
  // Memory-bound with equal rates: speed is bandwidth, 3:1.
  ASSERT_NEAR(g.weights[0] / g.weights[1], 3.0, 1e-9);
  const ShardPlan p = plan_shards(tp_shard_shape(m), g.weights);
  EXPECT_EQ(g.shards.kv_heads, p.kv_heads);
  EXPECT_EQ(g.shards.ffn_rows, p.ffn_rows);
  EXPECT_EQ(g.shards.vocab, p.vocab);
  EXPECT_EQ(g.shards.kv_heads[0].size(), 3);  // 4 KV heads, 3:1
  // Proportional shares balance the ranks better than equal ones would: the slowest rank's FFN
  // rows take about as long as the fast rank's.
  const double f0 = static_cast<double>(g.shards.ffn_rows[0].size()) / 90e9;
  const double f1 = static_cast<double>(g.shards.ffn_rows[1].size()) / 30e9;
  EXPECT_NEAR(f0 / f1, 1.0, 32.0 / 1408);  // within one block of 32 of the quota 4224 : 1408
}

TEST(TpModel, RankMemoryAddsUpToTheStagePlusReplicas) {
  for (const char* type : {"Q4_0", "Q8_0", "F16"})
    for (int n : {2, 3, 4}) {
      const ModelShape m = shape_from_name("tinyllama-1.1b", type);
      Cluster c;
      for (int i = 0; i < n; ++i) c.devices.push_back(plain_device("d" + std::to_string(i), (1 + i) * 20e9));
      PlanOptions o;
      o.n_ctx = 2048;
      std::vector<int> devs(static_cast<size_t>(n));
      std::iota(devs.begin(), devs.end(), 0);
      const TpGroup g = make_tp_group(m, c, devs);
      for (auto [f, e] : {std::pair<int64_t, int64_t>{0, 22}, {0, 7}, {7, 22}, {4, 11}}) {
        double w = 0, kv = 0;
        for (int r = 0; r < n; ++r) {
          const StageMemory s = tp_rank_memory(m, c.devices[static_cast<size_t>(r)], g.shards, r, f, e, o);
          w += static_cast<double>(s.weights);
          kv += static_cast<double>(s.kv);
        }
        // Replicated on every rank: the layers' norms, the embedding (first stage), the final norm (last).
        double replicated = 0;
        for (int64_t l = f; l < e; ++l)
          replicated += static_cast<double>(m.layer_bytes[static_cast<size_t>(l)]) - sum_bytes(m.layer_matrix_bytes[static_cast<size_t>(l)]);
        if (f == 0) replicated += static_cast<double>(m.embd_bytes);
        if (e == m.n_layers()) replicated += static_cast<double>(m.output_bytes - m.output_matrix.bytes);
        const double expect = static_cast<double>(m.stage_bytes(f, e)) + (n - 1) * replicated;
        EXPECT_NEAR(w, expect, n) << type << " " << n << " ranks " << f << "-" << e;  // 1 byte of rounding per rank
        EXPECT_NEAR(kv, static_cast<double>(kv_bytes(m, e - f, o)), n);
      }
    }
}

TEST(TpModel, ShardShapeIsTheEngines) {
  // engine/tp_shard.cpp's shard_shape reads attn_output's and ffn_down's types from the weights;
  // the planner's from the shape. Every dense named shape x type mix: the same shape or both throw.
  int throws = 0, wide_units = 0;
  for (const auto& ns : known_shapes()) {
    if (ns.n_expert > 0) continue;
    for (const char* type : {"Q4_0", "Q8_0", "Q4_K_M", "Q3_K_S", "Q6_K", "F16"}) {
      const model::ModelConfig cfg = shape_config(ns);
      const ModelShape m = shape_from_config(cfg, type);
      const model::TypeMix mix = model::parse_type_mix(type);
      model::StageWeights full;
      full.layers.resize(static_cast<size_t>(cfg.n_layers));
      for (int64_t l = 0; l < cfg.n_layers; ++l) {
        auto& lw = full.layers[static_cast<size_t>(l)];
        const int64_t gqa = cfg.n_heads / cfg.n_kv_heads;
        lw.wo.type = model::layer_matrix_type(mix, model::MixRole::AttnOutput, l, cfg.n_layers, gqa);
        lw.w_down.type = model::layer_matrix_type(mix, model::MixRole::FfnDown, l, cfg.n_layers, gqa);
      }
      const std::string what = ns.name + " " + type;
      ShardShape engine{}, planner{};
      bool engine_ok = true, planner_ok = true;
      try {
        engine = shard_shape(cfg, full);
      } catch (const std::invalid_argument&) {
        engine_ok = false;
      }
      try {
        planner = tp_shard_shape(m);
      } catch (const std::invalid_argument&) {
        planner_ok = false;
      }
      ASSERT_EQ(engine_ok, planner_ok) << what;
      if (!engine_ok) {
        ++throws;
        continue;
      }
      wide_units += planner.kv_unit > 1;
      EXPECT_EQ(engine.kv_unit, planner.kv_unit) << what;
      EXPECT_EQ(engine.ffn_block, planner.ffn_block) << what;
      EXPECT_EQ(engine.n_head_kv, planner.n_head_kv) << what;
      EXPECT_EQ(engine.n_ff, planner.n_ff) << what;
    }
  }
  // Both kinds occur: K-quant blocks spanning several KV-head groups, and shapes that cannot split.
  EXPECT_GT(throws, 0);
  EXPECT_GT(wide_units, 0);
}

TEST(TpModel, ShardShapeOfARealFile) {
  HERD_REQUIRE_FILE(test::smollm2_path());
  auto f = model::GgufFile::open(test::smollm2_path());
  const model::ModelConfig cfg = model::load_config(*f);
  const model::StageWeights full = model::load_stage_weights(*f, cfg, {0, cfg.n_layers, true, true});
  const ShardShape e = shard_shape(cfg, full), p = tp_shard_shape(shape_from_gguf(*f, cfg));
  EXPECT_EQ(e.kv_unit, p.kv_unit);
  EXPECT_EQ(e.ffn_block, p.ffn_block);
  EXPECT_EQ(e.n_head_kv, p.n_head_kv);
  EXPECT_EQ(max_tp_ranks(shape_from_gguf(*f, cfg)), 3);  // SmolLM2-135M: 3 KV heads
  // Its FFN matrices are the ffn_* tensors: gate and up [576 x 1536] and down [1536 x 576], Q4_1 or
  // whatever the file stores; their bytes are part of the layer's.
  const ModelShape m = shape_from_gguf(*f, cfg);
  for (int64_t l = 0; l < m.n_layers(); ++l) {
    const double ffn = sum_bytes(m.layer_ffn_matrix_bytes[static_cast<size_t>(l)]);
    EXPECT_GT(ffn, 0.5 * sum_bytes(m.layer_matrix_bytes[static_cast<size_t>(l)]));  // 3 x 576 x 1536 vs 4 x 576^2 / 3-ish
    EXPECT_LT(ffn, sum_bytes(m.layer_matrix_bytes[static_cast<size_t>(l)]));
  }
}

// ---- `optimal` with tensor parallelism against brute force -------------------------------------

struct Instance {
  ModelShape m;
  Cluster c;
  PlanOptions o;
};

// tinyllama's widths with a few layers (random), random devices and links; memory from tight to roomy.
Instance random_instance(std::mt19937_64& rng, int max_devices, int max_layers) {
  auto uni = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); };
  auto pick = [&](int a, int b) { return std::uniform_int_distribution<int>(a, b)(rng); };
  model::ModelConfig cfg = shape_config(*find_shape("tinyllama-1.1b"));
  cfg.n_layers = pick(1, max_layers);
  Instance in;
  in.m = shape_from_config(cfg, pick(0, 1) ? "Q4_0" : "Q8_0");
  const int n = pick(1, max_devices);
  const double per_device = static_cast<double>(in.m.total_bytes()) / n;
  for (int i = 0; i < n; ++i) {
    DeviceProfile d;
    d.name = "d" + std::to_string(i);
    d.free_bytes = static_cast<uint64_t>(uni(0.4, 3.0) * per_device) + (150ull << 20);
    d.total_bytes = d.free_bytes;
    d.bandwidth_Bps = uni(20e9, 400e9);
    d.flops = d.bandwidth_Bps * uni(2, 100);
    d.op_overhead_s = uni(0, 5e-6);
    d.overhead_bytes = static_cast<uint64_t>(uni(0, 100e6));
    d.host = "h" + std::to_string(pick(0, n - 1));
    in.c.devices.push_back(d);
  }
  in.c.default_link = {uni(1e-6, 1e-3), uni(100e6, 50e9)};
  in.c.local_link = {uni(1e-7, 2e-5), uni(5e9, 100e9)};
  in.c.coordinator_host = "h0";
  in.o.n_ctx = pick(1, 4) * 512;
  in.o.n_parallel = std::vector<int>{1, 1, 2, 3}[static_cast<size_t>(pick(0, 3))];
  in.o.tp_sync = static_cast<TpSync>(pick(0, 2));
  in.o.max_tp = n;
  return in;
}

// Every plan over one grouping: every non-empty subsequence of its groups, every split of the
// layers into that many non-empty contiguous ranges. The least objective of those that fit.
double brute_force_grouping(const Instance& in, const std::vector<std::vector<int>>& groups) {
  const int G = static_cast<int>(groups.size());
  const int64_t L = in.m.n_layers();
  double best = INFINITY;
  for (uint32_t S = 1; S < (1u << G); ++S) {
    std::vector<int> used;
    for (int g = 0; g < G; ++g)
      if (S & (1u << g)) used.push_back(g);
    const int k = static_cast<int>(used.size());
    if (k > L) continue;
    std::vector<int> cut(static_cast<size_t>(L - 1), 0);
    std::fill(cut.end() - (k - 1), cut.end(), 1);
    do {
      Plan p;
      int64_t start = 0;
      int idx = 0;
      for (int64_t l = 1; l <= L; ++l)
        if (l == L || cut[static_cast<size_t>(l - 1)]) {
          p.stages.push_back(make_tp_stage(groups[static_cast<size_t>(used[static_cast<size_t>(idx++)])], start, l));
          start = l;
        }
      if (!validate_plan(p, in.m, in.c, in.o).empty()) continue;
      finish_plan(p, in.m, in.c, in.o);
      best = std::min(best, plan_objective(p));
    } while (std::next_permutation(cut.begin(), cut.end()));
  }
  return best;
}

TEST(TpOptimal, EqualsBruteForceOverPipelinesAndGroupings) {
  std::mt19937_64 rng(20261207);
  int tp_won = 0, pp_won = 0, checked = 0;
  for (int it = 0; it < 300; ++it) {
    Instance in = random_instance(rng, 4, 4);
    const std::string what = "instance " + std::to_string(it);
    const int n = static_cast<int>(in.c.devices.size());
    // The pipeline optimum (verified against brute force in test_strategies.cpp).
    PlanOptions pp_only = in.o;
    pp_only.max_tp = 1;
    double best = INFINITY;
    try {
      best = plan_optimal(in.m, in.c, pp_only).pred.token_s;
    } catch (const PlanError&) {
    }
    const double pp_best = best;
    for (const auto& groups : tp_groupings(n, std::min(n, max_tp_ranks(in.m)))) {
      const double brute = brute_force_grouping(in, groups);
      double dp = INFINITY;
      try {
        dp = plan_tp_grouping(in.m, in.c, in.o, groups).pred.token_s;
      } catch (const PlanError&) {
      }
      if (std::isinf(brute)) {
        EXPECT_TRUE(std::isinf(dp)) << what;
      } else {
        // The DP's objective equals the brute force's (both through finish_plan) to rounding.
        EXPECT_NEAR(dp, brute, 1e-9 * brute) << what << " " << grouping_name(groups);
        ++checked;
      }
      best = std::min(best, brute);
    }
    if (std::isinf(best)) {
      EXPECT_THROW(plan_optimal(in.m, in.c, in.o), PlanError) << what;
      continue;
    }
    const Plan p = plan_optimal(in.m, in.c, in.o);
    EXPECT_NEAR(p.pred.token_s, best, 1e-9 * best) << what;
    EXPECT_TRUE(validate_plan(p, in.m, in.c, in.o).empty()) << what;
    // Every device is a rank of a stage or excluded with a reason.
    size_t devs = p.excluded.size();
    for (const auto& s : p.stages) devs += static_cast<size_t>(s.tp());
    EXPECT_EQ(devs, in.c.devices.size()) << what;
    (p.tp() > 1 ? tp_won : pp_won)++;
    if (p.tp() > 1) {
      EXPECT_LT(p.pred.token_s, pp_best) << what;
    }
  }
  // The instances exercise both outcomes and many groupings (else the test proves little).
  EXPECT_GT(tp_won, 5);
  EXPECT_GT(pp_won, 5);
  EXPECT_GT(checked, 100);
}

TEST(TpOptimal, Groupings) {
  using G = std::vector<std::vector<int>>;
  const auto four = tp_groupings(4, 4);
  EXPECT_EQ(four, (std::vector<G>{{{0, 1}, {2, 3}}, {{0, 1, 2}, {3}}, {{0, 1, 2, 3}}, {{0, 1}, {2}, {3}}}));
  EXPECT_EQ(tp_groupings(4, 2), (std::vector<G>{{{0, 1}, {2, 3}}, {{0, 1}, {2}, {3}}}));
  EXPECT_TRUE(tp_groupings(1, 4).empty());
  EXPECT_TRUE(tp_groupings(4, 1).empty());
  // Every grouping covers 0..n-1 once, in order, and has a group of 2..max_tp.
  for (int n = 2; n <= 9; ++n)
    for (int t = 2; t <= n; ++t)
      for (const auto& g : tp_groupings(n, t)) {
        std::vector<int> flat;
        size_t biggest = 0;
        for (const auto& grp : g) {
          flat.insert(flat.end(), grp.begin(), grp.end());
          biggest = std::max(biggest, grp.size());
        }
        std::vector<int> want(static_cast<size_t>(n));
        std::iota(want.begin(), want.end(), 0);
        EXPECT_EQ(flat, want);
        EXPECT_GE(biggest, 2u);
        EXPECT_LE(biggest, static_cast<size_t>(t));
      }
  EXPECT_EQ(grouping_name({{0, 1}, {2, 3}}), "tp 2 x pp 2");
  EXPECT_EQ(grouping_name({{0, 1, 2, 3}}), "tp 4");
  EXPECT_EQ(grouping_name({{0, 1}, {2}}), "tp 2+1");
}

TEST(TpOptimal, SlowLinksChooseThePipelineFastLinksTensorParallelism) {
  // llama2-7b Q4_0 on two equal 50 GB/s devices that each hold it: one device alone takes ~75 ms
  // per token; TP 2 halves the sharded bytes (~38 ms) and adds 64 all-reduces x 2 hops. At 1 ms a
  // hop that is 128 ms: the pipeline (one device) wins; at 5 us, 0.6 ms: TP wins.
  const ModelShape m = shape_from_name("llama2-7b", "Q4_0");
  Cluster c;
  c.devices = {plain_device("a", 50e9), plain_device("b", 50e9)};
  PlanOptions o;
  o.max_tp = 2;
  c.default_link = {1e-3, 1.25e9};
  Plan slow = plan_optimal(m, c, o);
  EXPECT_EQ(slow.tp(), 1) << plan_shape(slow, c);
  c.default_link = {5e-6, 10e9};
  Plan fast = plan_optimal(m, c, o);
  ASSERT_EQ(fast.tp(), 2) << plan_shape(fast, c);
  EXPECT_EQ(plan_shape(fast, c), "tp 2: stages {a,b}");
  EXPECT_LT(fast.pred.token_s, 0.6 * slow.pred.token_s);
  // A model tensor parallelism cannot split is never grouped.
  const ModelShape moe = shape_from_name("qwen3-30b-a3b", "Q4_K_M");
  EXPECT_EQ(max_tp_ranks(moe), 1);
  for (auto& d : c.devices) d.free_bytes = d.total_bytes = 64ull << 30;
  EXPECT_EQ(plan_optimal(moe, c, o).tp(), 1);
  // max_tp = 1 (the default) never groups, however fast the links.
  o.max_tp = 1;
  EXPECT_EQ(plan_optimal(m, c, o).tp(), 1);
  // plan_tp: exactly groups of N.
  o.max_tp = 2;
  const Plan fixed = plan_tp(m, c, o, 2);
  EXPECT_EQ(fixed.tp(), 2);
  EXPECT_THROW(plan_tp(m, c, o, 3), PlanError);
}

}  // namespace
}  // namespace herd::partition
