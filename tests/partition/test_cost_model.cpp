// The calibrated cost terms (per-type matvec rate, attention over the KV length, per-kernel
// overhead, measured loopback latency) and the probe file a cluster file references.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "kernels/dtype.h"
#include "partition/cost_model.h"
#include "partition/plan.h"
#include "engine/probe_profile.h"
#include "partition/shapes.h"

namespace herd::partition {
namespace {

DeviceProfile plain_device() {
  DeviceProfile d;
  d.name = "cpu";
  d.total_bytes = 16ull << 30;
  d.free_bytes = 14ull << 30;
  d.bandwidth_Bps = 20e9;
  d.flops = 1e15;  // never FLOP-bound here: the byte terms are what is tested
  return d;
}

PlanOptions opts(int64_t ctx) {
  PlanOptions o;
  o.n_ctx = ctx;
  return o;
}

uint32_t id(DType t) { return static_cast<uint32_t>(t); }

TEST(CostModel, UncalibratedProfileKeepsTheBandwidthFormula) {
  const ModelShape m = shape_from_name("stories110m", "Q4_0");
  const DeviceProfile d = plain_device();
  const PlanOptions o = opts(1024);
  for (int64_t l : {int64_t{0}, m.n_layers() - 1}) {
    const double kv = 512.0 * static_cast<double>(m.kv_bytes_per_token_layer(4));
    const double expect = (static_cast<double>(m.layer_bytes[static_cast<size_t>(l)]) + kv) / d.bandwidth_Bps;
    EXPECT_NEAR(layer_decode_s(m, d, l, o), expect, expect * 1e-12);
  }
}

TEST(CostModel, PerTypeMatvecRate) {
  // Q4_0 matrices at half the bandwidth; the output (Q6_K) and the norms stay at bw.
  const ModelShape m = shape_from_name("stories110m", "Q4_0");
  DeviceProfile d = plain_device();
  const PlanOptions o = opts(2);
  const double before = layer_decode_s(m, d, 3, o), out_before = output_decode_s(m, d);
  d.matvec_Bps[id(DType::Q4_0)] = d.bandwidth_Bps / 2;
  uint64_t q4 = 0;
  for (const auto& tb : m.layer_matrix_bytes[3])
    if (tb.type == id(DType::Q4_0)) q4 += tb.bytes;
  ASSERT_GT(q4, 0u);
  EXPECT_LT(q4, m.layer_bytes[3]);  // the norms are not matrices
  EXPECT_NEAR(layer_decode_s(m, d, 3, o) - before, static_cast<double>(q4) / d.bandwidth_Bps, 1e-12);
  EXPECT_DOUBLE_EQ(output_decode_s(m, d), out_before);
  ASSERT_EQ(m.output_matrix.type, id(DType::Q6_K));
  d.matvec_Bps[id(DType::Q6_K)] = d.bandwidth_Bps / 4;
  EXPECT_NEAR(output_decode_s(m, d) - out_before, 3.0 * static_cast<double>(m.output_matrix.bytes) / d.bandwidth_Bps, 1e-12);
}

TEST(CostModel, TiedOutputUsesTheEmbeddingType) {
  const ModelShape m = shape_from_name("smollm2-135m", "Q8_0");
  ASSERT_TRUE(m.config.tied_embeddings);
  EXPECT_EQ(m.output_matrix.type, id(DType::Q8_0));
  EXPECT_EQ(m.output_matrix.bytes, m.embd_bytes);
}

TEST(CostModel, AttentionGrowsWithTheKvLengthAtTheAttentionRate) {
  const ModelShape m = shape_from_name("stories110m", "Q4_0");
  DeviceProfile d = plain_device();
  d.attn_Bps = 5e9;
  const double kv_tok = static_cast<double>(m.kv_bytes_per_token_layer(4));
  // Predictions are at the mean position n_ctx / 2: 4096 - 1024 context = 1536 more positions.
  const double grow = layer_decode_s(m, d, 0, opts(4096)) - layer_decode_s(m, d, 0, opts(1024));
  EXPECT_NEAR(grow, 1536.0 * kv_tok / 5e9, 1e-12);
  d.attn_Bps = 0;  // unset: the device bandwidth
  const double grow_bw = layer_decode_s(m, d, 0, opts(4096)) - layer_decode_s(m, d, 0, opts(1024));
  EXPECT_NEAR(grow_bw, 1536.0 * kv_tok / d.bandwidth_Bps, 1e-12);
}

TEST(CostModel, PerOpOverheadPerLayerOutputAndInput) {
  const ModelShape m = shape_from_name("stories110m", "Q4_0");
  DeviceProfile d = plain_device();
  const PlanOptions o = opts(256);
  const double layer0 = layer_decode_s(m, d, 5, o), out0 = output_decode_s(m, d), in0 = input_decode_s(m, d);
  const double all0 = stage_decode_s(m, d, 0, m.n_layers(), o);
  d.op_overhead_s = 4e-6;
  EXPECT_NEAR(layer_decode_s(m, d, 5, o) - layer0, kOpsPerLayer * 4e-6, 1e-15);
  EXPECT_NEAR(output_decode_s(m, d) - out0, kOpsOutput * 4e-6, 1e-15);
  EXPECT_NEAR(input_decode_s(m, d) - in0, kOpsInput * 4e-6, 1e-15);
  const double ops = static_cast<double>(kOpsPerLayer * m.n_layers() + kOpsOutput + kOpsInput);
  EXPECT_NEAR(stage_decode_s(m, d, 0, m.n_layers(), o) - all0, ops * 4e-6, 1e-12);
  // A middle stage pays neither the output nor the input calls.
  EXPECT_NEAR(stage_decode_s(m, d, 2, 6, o), layer_decode_s(m, d, 2, o) + layer_decode_s(m, d, 3, o) +
                                                 layer_decode_s(m, d, 4, o) + layer_decode_s(m, d, 5, o), 1e-12);
  // Qwen2-style q/k/v biases are three more adds per layer.
  ModelShape q = m;
  q.config.has_qkv_bias = true;
  EXPECT_NEAR(layer_decode_s(q, d, 5, o) - layer_decode_s(m, d, 5, o), kOpsBiasQkv * 4e-6, 1e-15);
  // Prefill pays the calls once per --batch chunk.
  PlanOptions po = o;
  po.n_prompt = 1024;
  po.n_batch = 256;
  DeviceProfile z = d;
  z.op_overhead_s = 0;
  EXPECT_NEAR(stage_prefill_s(m, d, 0, m.n_layers(), po) - stage_prefill_s(m, z, 0, m.n_layers(), po), 4 * ops * 4e-6, 1e-12);
}

TEST(CostModel, RangeTableMatchesStageSum) {
  const ModelShape m = shape_from_name("smollm2-135m", "Q4_K_M");
  DeviceProfile d = plain_device();
  d.op_overhead_s = 3e-6;
  d.matvec_Bps[id(DType::Q4_K)] = 7e9;
  d.matvec_Bps[id(DType::Q6_K)] = 5e9;
  const PlanOptions o = opts(512);
  const DeviceCost c = device_cost(m, d, o);
  const int64_t n = m.n_layers();
  for (auto [a, b] : {std::pair<int64_t, int64_t>{0, n}, {0, 3}, {4, n}, {7, 19}})
    EXPECT_NEAR(c.range_s(a, b, n), stage_decode_s(m, d, a, b, o), 1e-12) << a << ".." << b;
}

TEST(CostModel, MissingMatrixBreakdownFallsBackToLayerBytes) {
  // A shape built by hand (no per-type breakdown) prices every byte at bw, as before.
  ModelShape m = shape_from_name("stories110m", "Q8_0");
  m.layer_matrix_bytes.clear();
  m.output_matrix = {};
  DeviceProfile d = plain_device();
  d.matvec_Bps[id(DType::Q8_0)] = 1e9;
  const PlanOptions o = opts(2);
  EXPECT_NEAR(layer_decode_s(m, d, 0, o),
              (static_cast<double>(m.layer_bytes[0]) + static_cast<double>(m.kv_bytes_per_token_layer(4))) / d.bandwidth_Bps,
              1e-12);
}

ProbeResult sample_probe() {
  ProbeResult p;
  p.host = "box \"one\"";
  p.cpu = "Some CPU";
  p.isa = "cpu-avx2";
  p.threads = 2;
  p.hw_threads = 8;
  p.mem_total_bytes = 32000000000ull;
  p.mem_available_bytes = 30000000000ull;
  p.read_bw_Bps = 25e9;
  p.matmul_flops = 300e9;
  p.op_overhead_s = 2.5e-6;
  p.attn_Bps = 12e9;
  p.loopback_latency_s = 30e-6;
  p.disk_read_Bps = 2.5e9;
  p.matvec_Bps[id(DType::Q4_0)] = 15e9;
  p.matvec_Bps[id(DType::Q6_K)] = 9e9;
  p.matvec_Bps[id(DType::F16)] = 20e9;
  p.gpus.push_back({0, "RTX 3090", 24000000000ull, 23000000000ull});
  return p;
}

TEST(Probe, JsonRoundTrip) {
  const ProbeResult p = sample_probe();
  const ProbeResult q = probe_from_json(probe_to_json(p));
  EXPECT_EQ(q.host, p.host);
  EXPECT_EQ(q.cpu, p.cpu);
  EXPECT_EQ(q.threads, 2);
  EXPECT_EQ(q.mem_total_bytes, p.mem_total_bytes);
  EXPECT_EQ(q.mem_available_bytes, p.mem_available_bytes);
  EXPECT_DOUBLE_EQ(q.read_bw_Bps, 25e9);
  EXPECT_DOUBLE_EQ(q.op_overhead_s, 2.5e-6);
  EXPECT_DOUBLE_EQ(q.loopback_latency_s, 30e-6);
  EXPECT_DOUBLE_EQ(q.disk_read_Bps, 2.5e9);
  EXPECT_EQ(q.matvec_Bps, p.matvec_Bps);
  ASSERT_EQ(q.gpus.size(), 1u);
  EXPECT_EQ(q.gpus[0].name, "RTX 3090");
  EXPECT_EQ(q.gpus[0].free_bytes, 23000000000ull);
}

TEST(Probe, MalformedFilesAreErrors) {
  EXPECT_THROW(probe_from_json("{", "p.json"), std::runtime_error);
  EXPECT_THROW(probe_from_json("{\"mem_total_bytes\": 1, \"read_bw_Bps\": 1}", "p.json"), std::runtime_error);  // no herd_probe
  EXPECT_THROW(probe_from_json("{\"herd_probe\": 1, \"read_bw_Bps\": 1}", "p.json"), std::runtime_error);       // no memory
  EXPECT_THROW(probe_from_json("{\"herd_probe\": 1, \"mem_total_bytes\": 1, \"read_bw_Bps\": -1}", "p.json"), std::runtime_error);
  EXPECT_THROW(probe_from_json("{\"herd_probe\": 1, \"mem_total_bytes\": 1, \"read_bw_Bps\": 1, \"matvec_Bps\": {\"q9_9\": 1}}", "p.json"),
               std::runtime_error);
  try {
    probe_from_json("{\"herd_probe\": 1, \"mem_total_bytes\": 10, \"mem_available_bytes\": 20, \"read_bw_Bps\": 1}", "p.json");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("p.json"), std::string::npos) << e.what();
  }
}

TEST(Probe, ClusterFileDeviceFromProbe) {
  const std::string dir = ::testing::TempDir();
  std::ofstream(dir + "box.json") << probe_to_json(sample_probe());
  // Relative to the cluster file's directory; explicit keys override the measurement.
  const Cluster c = parse_cluster(
      "device name=w0 probe=box.json host=box\n"
      "device name=w1 probe=box.json host=box free=10GB op_overhead=5us matvec_q4_0=1GB/s\n"
      "device name=far kind=cuda mem=24GB bw=900GB/s\n",
      dir + "cluster.txt");
  ASSERT_EQ(c.devices.size(), 3u);
  const DeviceProfile& a = c.devices[0];
  EXPECT_EQ(a.kind, DeviceKind::Cpu);
  EXPECT_EQ(a.total_bytes, 32000000000ull);
  EXPECT_EQ(a.free_bytes, 30000000000ull);  // MemAvailable
  EXPECT_DOUBLE_EQ(a.bandwidth_Bps, 25e9);
  EXPECT_DOUBLE_EQ(a.flops, 300e9);
  EXPECT_DOUBLE_EQ(a.op_overhead_s, 2.5e-6);
  EXPECT_DOUBLE_EQ(a.attention_rate(), 12e9);
  EXPECT_DOUBLE_EQ(a.matvec_rate(id(DType::Q4_0)), 15e9);
  EXPECT_DOUBLE_EQ(a.matvec_rate(id(DType::Q8_0)), 25e9);  // not measured: read bandwidth
  EXPECT_EQ(a.probe, dir + "box.json");
  const DeviceProfile& b = c.devices[1];
  EXPECT_EQ(b.free_bytes, 10000000000ull);
  EXPECT_DOUBLE_EQ(b.op_overhead_s, 5e-6);
  EXPECT_DOUBLE_EQ(b.matvec_rate(id(DType::Q4_0)), 1e9);
  EXPECT_DOUBLE_EQ(b.matvec_rate(id(DType::Q6_K)), 9e9);
  EXPECT_EQ(c.devices[2].op_overhead_s, 0.0);
  // The measured loopback latency becomes the local link's; the default link is untouched.
  EXPECT_DOUBLE_EQ(c.link(0, 1).latency_s, 30e-6);
  EXPECT_DOUBLE_EQ(c.link(0, 2).latency_s, 300e-6);
  // An explicit `link local` wins over the probe.
  const Cluster e = parse_cluster("link local latency=7us bw=10GB/s\ndevice name=w0 probe=box.json host=box\n"
                                  "device name=w1 probe=box.json host=box\n", dir + "c2.txt");
  EXPECT_DOUBLE_EQ(e.link(0, 1).latency_s, 7e-6);
}

TEST(Probe, ClusterFileErrorsNameTheLine) {
  const std::string dir = ::testing::TempDir();
  std::ofstream(dir + "bad.json") << "{\"herd_probe\": 1}";
  auto message = [&](const std::string& text) {
    try {
      parse_cluster(text, dir + "c.txt");
    } catch (const ClusterError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("device name=a mem=8GB bw=1GB/s\ndevice name=b probe=missing.json\n").find("c.txt:2:"), std::string::npos);
  EXPECT_NE(message("device name=b probe=bad.json\n").find("mem_total_bytes"), std::string::npos);
  EXPECT_NE(message("device name=b mem=8GB bw=1GB/s matvec_q9=1GB/s\n").find("c.txt:1:"), std::string::npos);
  EXPECT_NE(message("device name=b mem=8GB bw=1GB/s op_overhead=fast\n").find("c.txt:1:"), std::string::npos);
}


// The cache curve: a probe's matvec rates over smaller matrices, and the plan pricing a device at
// the rate for the bytes its host reads per token.
ProbeResult curve_probe() {
  ProbeResult p = sample_probe();
  p.matvec_bytes = 1000ull << 20;
  p.matvec_cached_Bps[id(DType::Q4_0)] = {{8ull << 20, 60e9}, {64ull << 20, 40e9}, {160ull << 20, 20e9}};
  return p;
}

TEST(CacheCurve, JsonRoundTripAndOlderFiles) {
  const ProbeResult p = curve_probe();
  const ProbeResult q = probe_from_json(probe_to_json(p));
  EXPECT_EQ(q.matvec_bytes, p.matvec_bytes);
  EXPECT_EQ(q.matvec_cached_Bps, p.matvec_cached_Bps);
  // A file from before the curve has none: the rates beyond the caches only.
  const ProbeResult old = probe_from_json("{\"herd_probe\": 1, \"mem_total_bytes\": 10, \"read_bw_Bps\": 1}");
  EXPECT_TRUE(old.matvec_cached_Bps.empty());
  EXPECT_EQ(old.matvec_bytes, 0u);
  const std::string head = "{\"herd_probe\": 1, \"mem_total_bytes\": 10, \"read_bw_Bps\": 1, \"matvec_cached_Bps\": ";
  for (const char* bad : {"[]", "{\"q4_0\": 5}", "{\"q9_9\": []}", "{\"q4_0\": [[1]]}", "{\"q4_0\": [[0, 5]]}",
                          "{\"q4_0\": [[8, -1]]}", "{\"q4_0\": [[8, 5], [8, 6]]}", "{\"q4_0\": [[16, 5], [8, 6]]}",
                          "{\"q4_0\": [[\"8\", 5]]}"})
    EXPECT_THROW(probe_from_json(head + bad + "}", "p.json"), std::runtime_error) << bad;
}

TEST(CacheCurve, RateAtAWorkingSet) {
  const std::vector<std::pair<uint64_t, double>> pts = {{8, 60}, {64, 40}, {160, 20}};
  EXPECT_DOUBLE_EQ(cached_rate(pts, 1000, 10, 1), 60);      // below the first point: its rate
  EXPECT_DOUBLE_EQ(cached_rate(pts, 1000, 10, 8), 60);
  EXPECT_DOUBLE_EQ(cached_rate(pts, 1000, 10, 64), 40);     // on a point: its rate
  EXPECT_NEAR(cached_rate(pts, 1000, 10, std::sqrt(8.0 * 64.0)), 50, 1e-9);  // halfway in log(bytes)
  EXPECT_NEAR(cached_rate(pts, 1000, 10, std::sqrt(160.0 * 1000.0)), 15, 1e-9);  // towards beyond_rate
  EXPECT_DOUBLE_EQ(cached_rate(pts, 1000, 10, 1000), 10);   // from the main matrices' size on
  EXPECT_DOUBLE_EQ(cached_rate(pts, 1000, 10, 1e12), 10);
  EXPECT_DOUBLE_EQ(cached_rate({}, 1000, 10, 8), 10);       // no curve
  EXPECT_DOUBLE_EQ(cached_rate(pts, 0, 10, 8), 10);         // main size unknown (an older file)
  // Along the curve the rate moves monotonically between neighbouring points.
  double last = 61;
  for (double b = 1; b < 2000; b *= 1.1) {
    const double r = cached_rate(pts, 1000, 10, b);
    EXPECT_LE(r, last + 1e-9) << b;
    last = r;
  }
}

TEST(CacheCurve, DeviceRateFollowsItsWorkingSet) {
  DeviceProfile d = plain_device();
  apply_probe(d, curve_probe());
  const uint32_t q4 = id(DType::Q4_0);
  EXPECT_DOUBLE_EQ(d.matvec_rate(q4), 15e9);  // no working set: beyond the caches
  d.working_set_bytes = 64.0 * (1 << 20);
  EXPECT_DOUBLE_EQ(d.matvec_rate(q4), 40e9);
  d.working_set_bytes = 2000.0 * (1 << 20);
  EXPECT_DOUBLE_EQ(d.matvec_rate(q4), 15e9);
  d.working_set_bytes = 8.0 * (1 << 20);
  EXPECT_DOUBLE_EQ(d.matvec_rate(id(DType::Q6_K)), 9e9);  // a type without a curve
  // A given rate is the rate: matvec_q4_0= drops the probe's curve for that type.
  const std::string dir = ::testing::TempDir();
  std::ofstream(dir + "curve.json") << probe_to_json(curve_probe());
  Cluster c = parse_cluster("device name=a probe=curve.json\ndevice name=b probe=curve.json matvec_q4_0=5GB/s\n",
                            dir + "curve.txt");
  for (auto& dv : c.devices) dv.working_set_bytes = 8.0 * (1 << 20);
  EXPECT_DOUBLE_EQ(c.devices[0].matvec_rate(q4), 60e9);
  EXPECT_DOUBLE_EQ(c.devices[1].matvec_rate(q4), 5e9);
}

TEST(CacheCurve, PlanPricesEachHostAtWhatItReads) {
  const ModelShape m = shape_from_name("stories110m", "Q4_0");
  const std::string dir = ::testing::TempDir();
  std::ofstream(dir + "curve2.json") << probe_to_json(curve_probe());
  // Two devices on one host, one on another.
  const Cluster c = parse_cluster("device name=a probe=curve2.json host=h1\ndevice name=b probe=curve2.json host=h1\n"
                                  "device name=z probe=curve2.json host=h2\n", dir + "curve2.txt");
  PlanOptions o = opts(64);
  Plan p;
  p.stages = {make_stage(0, 0, 4), make_stage(1, 4, 8), make_stage(2, 8, m.n_layers())};
  const std::vector<double> ws = plan_working_sets(p, m, c, o);
  auto stage_bytes = [&](int64_t f, int64_t e) {
    double b = 0;
    for (int64_t l = f; l < e; ++l)
      b += m.layer_read_bytes(l, 1) + static_cast<double>(m.kv_bytes_per_token_layer(o.kv_elem_bytes)) * 32.0;
    if (e == m.n_layers()) b += static_cast<double>(m.output_matrix.bytes);
    return b;
  };
  ASSERT_EQ(ws.size(), 3u);
  EXPECT_NEAR(ws[0], stage_bytes(0, 8), 1e-6 * ws[0]);  // h1 holds layers 0-7 on two devices
  EXPECT_DOUBLE_EQ(ws[1], ws[0]);
  EXPECT_NEAR(ws[2], stage_bytes(8, m.n_layers()), 1e-6 * ws[2]);
  // finish_plan prices each stage at its host's rate: layers of the same sizes cost less where
  // fewer bytes are read (h2: 4 layers and the output; h1: 8 layers).
  finish_plan(p, m, c, o);
  EXPECT_DOUBLE_EQ(p.stages[0].working_set_bytes, ws[0]);
  DeviceProfile at = c.devices[0];
  at.working_set_bytes = ws[0];
  double expect = 0;
  for (int64_t l = 0; l < 4; ++l) expect += layer_decode_s(m, at, l, o);
  expect += input_decode_s(m, at);
  EXPECT_NEAR(p.stages[0].decode_s, expect, expect * 1e-12);
  EXPECT_LT(p.stages[0].decode_s, stage_decode_s(m, c.devices[0], 0, 4, o));  // faster than beyond the caches
  // A tensor-parallel stage's bytes count on each rank's host, split evenly; a host where a stage
  // streams from disk gets none (its reads go to storage).
  Plan tp;
  tp.stages = {make_tp_stage({0, 2}, 0, m.n_layers())};
  const std::vector<double> tws = plan_working_sets(tp, m, c, o);
  EXPECT_NEAR(tws[0], stage_bytes(0, m.n_layers()) / 2, 1e-6 * tws[0]);
  EXPECT_DOUBLE_EQ(tws[2], tws[0]);
  EXPECT_EQ(tws[1], 0.0);  // no stage
  const Cluster small = parse_cluster("device name=s probe=curve2.json host=h1 free=40MB overhead=1MB disk=1GB/s\n", dir + "s.txt");
  Plan streamed;
  streamed.stages = {make_stage(0, 0, m.n_layers())};
  finish_plan(streamed, m, small, o);
  ASSERT_GT(streamed.stages[0].streamed, 0);
  EXPECT_EQ(plan_working_sets(streamed, m, small, o)[0], 0.0);
  EXPECT_EQ(streamed.stages[0].working_set_bytes, 0.0);
  // A device line without the curve is priced as before, whatever its working set.
  const Cluster plain = parse_cluster("device name=a mem=16GB bw=20GB/s host=h1\n", dir + "plain.txt");
  Plan one;
  one.stages = {make_stage(0, 0, m.n_layers())};
  finish_plan(one, m, plain, o);
  EXPECT_EQ(one.stages[0].working_set_bytes, 0.0);
  EXPECT_DOUBLE_EQ(one.stages[0].decode_s, stage_decode_s(m, plain.devices[0], 0, m.n_layers(), o));
}

}  // namespace
}  // namespace herd::partition
