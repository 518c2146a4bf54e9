// `herd plan` as a user runs it: a real GGUF, named shapes, every output format, errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <cmath>
#include <fstream>
#include <sstream>

#include "partition/strategies.h"
#include "partition/tp_model.h"
#include "tests/process.h"
#include "tests/test_paths.h"

namespace herd::test {
namespace {

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}

const char* kSmallCluster =
    "device name=gpu kind=cuda mem=8GB bw=400GB/s flops=20T host=box\n"
    "device name=cpu kind=cpu mem=16GB bw=40GB/s host=box\n"
    "device name=laptop kind=metal mem=16GB bw=100GB/s host=laptop\n"
    "link default latency=0.3ms bw=1Gbit\n";

TEST(PlanCli, SmolLM2Table) {
  HERD_REQUIRE_FILE(smollm2_path());
  const auto cl = write_temp("small.txt", kSmallCluster);
  auto r = run_process({herd_bin(), "plan", "-m", smollm2_path(), "--cluster", cl, "--ctx", "2048"}, 30);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("30 layers"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("strategy: optimal"), std::string::npos);
  EXPECT_NE(r.out.find("gpu"), std::string::npos);
  EXPECT_NE(r.out.find("predicted decode:"), std::string::npos);
  EXPECT_NE(r.out.find("predicted prefill:"), std::string::npos);
  EXPECT_NE(r.out.find("time to first token"), std::string::npos);
}

TEST(PlanCli, CompareJsonSvg) {
  HERD_REQUIRE_FILE(smollm2_path());
  const auto cl = write_temp("small2.txt", kSmallCluster);
  auto r = run_process({herd_bin(), "plan", "-m", smollm2_path(), "--cluster", cl, "--compare"}, 30);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* s : {"even", "memory", "speed", "gpu-first", "optimal"}) EXPECT_NE(r.out.find(s), std::string::npos) << s;
  const std::string svg = ::testing::TempDir() + "plan.svg";
  std::remove(svg.c_str());
  r = run_process({herd_bin(), "plan", "--shape", "llama3-8b", "--type", "Q8_0", "--cluster", cl, "--json", "--svg", svg}, 30);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("{", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("\"strategy\": \"optimal\""), std::string::npos);
  EXPECT_NE(r.out.find("\"decode_tok_s\""), std::string::npos);
  EXPECT_NE(r.out.find("\"bytes_per_token\": 16384"), std::string::npos);  // 4096 x f32 on each hop
  const std::string s = slurp(svg);
  EXPECT_EQ(s.rfind("<svg", 0), 0u);
  EXPECT_NE(s.find("</svg>"), std::string::npos);
}

TEST(PlanCli, Llama405BOnTheDocsCluster) {
  const std::string cl = std::string(HERD_SOURCE_DIR) + "/docs/clusters/405b-8-devices.txt";
  HERD_REQUIRE_FILE(cl);
  auto r = run_process({herd_bin(), "plan", "--shape", "llama3.1-405b", "--type", "Q4_K_M", "--cluster", cl, "--compare"}, 30);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("126 layers"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("optimal"), std::string::npos);
}

// [offload]: prima.cpp's home cluster (docs/clusters/70b-prima-home.txt) holds ~37 GB for a 40 GB
// model: only streaming from disk makes it fit. The plan streams only on devices with a disk,
// says how many layers stream and names a disk too slow for its compute; --no-stream refuses
// and suggests streaming; the JSON carries resident/streamed counts.
TEST(PlanCli, Llama70BStreamsOnPrimaCppsHomeCluster) {
  const std::string cl = std::string(HERD_SOURCE_DIR) + "/docs/clusters/70b-prima-home.txt";
  HERD_REQUIRE_FILE(cl);
  const std::vector<std::string> base = {herd_bin(), "plan", "--shape", "llama3-70b", "--type", "Q4_K_S", "--cluster", cl,
                                         "--ctx", "1024"};
  auto r = run_process(base, 60);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("layers from disk"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("disk is too slow for its compute"), std::string::npos) << r.out;
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  r = run_process(with({"--json"}), 60);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"streamed_layers\": "), std::string::npos);
  // Only devices with disk= stream (the GPUs here have none).
  for (const char* gpu : {"rtx3070", "rtx2080ti"}) {
    const size_t at = r.out.find(std::string("\"device\": \"") + gpu + "\"");
    if (at == std::string::npos) continue;
    EXPECT_NE(r.out.find("\"streamed_layers\": 0,", at), std::string::npos) << gpu;
    EXPECT_LT(r.out.find("\"streamed_layers\": 0,", at), r.out.find("}", at)) << gpu;
  }
  r = run_process(with({"--no-stream"}), 60);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("does not fit"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("streaming layers from disk (without --no-stream) fits"), std::string::npos) << r.err;
}

// docs/planner.md's mixture-of-experts scenario: the numbers the doc quotes come from this run.
TEST(PlanCli, Qwen3MoeOnTheHomeCluster) {
  const std::string cl = std::string(HERD_SOURCE_DIR) + "/docs/clusters/235b-home-4-boxes.txt";
  HERD_REQUIRE_FILE(cl);
  auto r = run_process({herd_bin(), "plan", "--shape", "qwen3-235b-a22b", "--type", "Q2_K", "--cluster", cl}, 30);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("94 layers"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("experts: 128 per layer, 8 per token"), std::string::npos) << r.out;
  // Decode is bounded by the ~8.4 GB a token reads at the 60 GB/s of the desktops: 140 ms + KV + hops;
  // reading all 86 GB would be ~1.4 s per token.
  const auto at = r.out.find("predicted decode:");
  ASSERT_NE(at, std::string::npos) << r.out;
  const double tok_s = std::stod(r.out.substr(at + 17));
  EXPECT_GT(tok_s, 5.0) << r.out;
  EXPECT_LT(tok_s, 60.0 / 8.0) << r.out;
  r = run_process({herd_bin(), "plan", "--shape", "mixtral-8x7b", "--type", "Q4_K_M", "--cluster", cl, "--json"}, 30);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"experts\": 8, \"experts_used\": 2"), std::string::npos) << r.out;
}

TEST(PlanCli, ErrorsAreClear) {
  const auto cl = write_temp("small3.txt", kSmallCluster);
  auto r = run_process({herd_bin(), "plan", "--shape", "llama3.1-405b", "--cluster", cl}, 30);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("does not fit"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("what would make it fit"), std::string::npos) << r.err;

  const auto bad = write_temp("bad.txt", "device name=a mem=8GB bw=1GB/s\ndevice name=b mem=lots bw=1GB/s\n");
  r = run_process({herd_bin(), "plan", "--shape", "llama3-8b", "--cluster", bad}, 30);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("bad.txt:2:"), std::string::npos) << r.err;

  r = run_process({herd_bin(), "plan", "--shape", "llama3-8b"}, 30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--cluster"), std::string::npos) << r.err;
  r = run_process({herd_bin(), "plan", "--shape", "nope", "--cluster", cl}, 30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("llama3-70b"), std::string::npos) << r.err;
  r = run_process({herd_bin(), "plan", "--shape", "llama3-8b", "--cluster", cl, "--strategy", "magic"}, 30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("gpu-first"), std::string::npos) << r.err;
}

// The number after `"key": ` at or after `from` in a JSON text (NaN when absent).
double json_number(const std::string& j, const std::string& key, size_t from = 0) {
  const auto at = j.find("\"" + key + "\": ", from);
  if (at == std::string::npos) return NAN;
  return std::stod(j.substr(at + key.size() + 4));
}

const char* kTwoBoxes =
    "device name=a kind=cpu mem=16GB bw=50GB/s host=a\n"
    "device name=b kind=cpu mem=16GB bw=50GB/s host=b\n";

// --compare's TP rows and --tp 2 --json against the pure model (partition/tp_model.h) on the same
// cluster text and options; the verdict line names the all-reduce latency from the model's numbers.
TEST(PlanCli, TensorParallelOptionsMatchThePureModel) {
  for (const char* link : {"link default latency=5us bw=10Gbit\n", "link default latency=1ms bw=1Gbit\n"}) {
    const std::string text = std::string(kTwoBoxes) + link;
    const auto cl = write_temp("tp2.txt", text);
    partition::PlanOptions o;  // herd plan's defaults: context 4096, f16 KV, prompt 512
    o.kv_elem_bytes = 2;
    o.kv_type = "f16";
    o.max_tp = 2;
    const partition::ModelShape m = partition::shape_from_name("llama2-7b", "Q4_0");
    const partition::Cluster c = partition::parse_cluster(text);
    const partition::Plan tp = partition::plan_tp(m, c, o, 2);
    const partition::Plan pp = [&] {
      partition::PlanOptions q = o;
      q.max_tp = 1;
      return partition::plan_optimal(m, c, q);
    }();

    auto r = run_process({herd_bin(), "plan", "--shape", "llama2-7b", "--type", "Q4_0", "--cluster", cl, "--compare"}, 30);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (const char* s : {"even", "optimal", "tp 2 ", "sync ms", "sync KB", "{a,b}:32"})
      EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
    // The tp 2 row's ms/token is the model's (the table rounds to 0.1 ms).
    const auto row = r.out.find("\n  tp 2 ");
    ASSERT_NE(row, std::string::npos) << r.out;
    std::istringstream fields(r.out.substr(row + 8));
    double tok_s = 0, ms = 0;
    fields >> tok_s >> ms;
    EXPECT_NEAR(ms, tp.pred.token_s * 1e3, 0.051) << r.out;
    // The verdict: TP against the best pipeline, and the latency of its all-reduces.
    const bool wins = tp.pred.token_s < pp.pred.token_s;
    EXPECT_NE(r.out.find(wins ? "beats the fastest pipeline" : "loses to the fastest pipeline"), std::string::npos) << r.out;
    const double hop_ms = c.default_link.latency_s * 1e3;
    char line[160];
    std::snprintf(line, sizeof line, "a per-hop latency of %.3g ms x 64 all-reduces per token (2 hops each) of a 32-layer model is %.2f ms",
                  hop_ms, 64 * 2 * hop_ms);
    EXPECT_NE(r.out.find(line), std::string::npos) << line << "\n" << r.out;
    EXPECT_EQ(wins, std::string(link).find("5us") != std::string::npos) << "fast links: TP wins; 1 ms: the pipeline";

    r = run_process({herd_bin(), "plan", "--shape", "llama2-7b", "--type", "Q4_0", "--cluster", cl, "--tp", "2", "--json"}, 30);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("\"shape\": \"tp 2: stages {a,b}\""), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\"kv_heads\": [0, 16]"), std::string::npos) << r.out;  // 32 KV heads, equal devices
    EXPECT_NEAR(json_number(r.out, "sync_bytes_per_token"), tp.stages[0].sync_bytes, 1e-5 * tp.stages[0].sync_bytes);
    EXPECT_NEAR(json_number(r.out, "sync_s"), tp.stages[0].sync_s, 1e-5 * tp.stages[0].sync_s);
    EXPECT_NEAR(json_number(r.out, "decode_tok_s"), tp.pred.decode_tok_s, 1e-5 * tp.pred.decode_tok_s);
    EXPECT_EQ(json_number(r.out, "tp", r.out.find("\"plans\"")), 2);
  }
  // A count of devices that does not form groups of --tp: exit 1, saying so.
  const auto three = write_temp("tp3.txt", std::string(kTwoBoxes) + "device name=c kind=cpu mem=16GB bw=50GB/s host=c\n");
  auto r = run_process({herd_bin(), "plan", "--shape", "llama2-7b", "--cluster", three, "--tp", "2"}, 30);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("do not form groups of 2"), std::string::npos) << r.err;
  r = run_process({herd_bin(), "plan", "--shape", "llama2-7b", "--cluster", three, "--tp-sync", "q4"}, 30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("q4"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace herd::test
