// herd bench: llama-bench's pp/tg tests on one model (see coordinator/bench_runner.h).
#include <chrono>
#include <cstdio>
#include <sstream>

#include "coordinator/bench_runner.h"
#include "coordinator/remote_pipeline.h"
#include "coordinator/run_report.h"
#include "coordinator/trace_writer.h"
#include "engine/tp_pipeline.h"
#include "launch/options.h"
#include "cluster/protocol.h"

namespace herd::cli {
namespace {

std::vector<int> parse_threads(const std::string& list, const char* flag = "-t") {
  std::vector<int> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    int v = -1;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || item.empty() || v < 0 || v > 4096)
      throw UsageError(std::string(flag) + ": '" + item + "' is not a count (give e.g. 1,2,4)");
    out.push_back(v);
  }
  if (out.empty()) throw UsageError(std::string(flag) + ": empty list");
  return out;
}

size_t wire_bytes(const transport::Message& m) {
  size_t n = 0;
  for (const auto& f : transport::encode_frames(m)) n += f.size();
  return n;
}

// Bytes one decoded token puts on each hop of a cluster (frames as encoded, before ZeroMQ's own few
// bytes of framing): coordinator -> stage 0 (token id, its row, the sampler's draw), stage i -> i+1
// (hidden state), last stage -> coordinator (token id).
std::string hop_bytes(const model::ModelConfig& c, const std::string& act_dtype) {
  cluster::Forward f{1, 100, 1, false};
  f.sample = true;
  f.samples.resize(1);  // a decode step: the draw only (the last stage keeps the sampler)
  transport::Tensor tok{transport::WireDType::I32, {1}, std::string(4, '\0')};
  const bool f16 = act_dtype == "f16";
  transport::Tensor hidden{f16 ? transport::WireDType::F16 : transport::WireDType::F32, {1, c.n_embd},
                           std::string(static_cast<size_t>(c.n_embd) * (f16 ? 2 : 4), '\0')};
  cluster::Result r{1, 1, {42}};
  return "wire bytes per decoded token: coordinator->stage0 " + std::to_string(wire_bytes(cluster::pack(f, {tok}))) +
         ", stage->stage " + std::to_string(wire_bytes(cluster::pack(f, {hidden}))) + " (" + act_dtype +
         " hidden [1, " + std::to_string(c.n_embd) + "]), last->coordinator " +
         std::to_string(wire_bytes(cluster::pack(r))) + "\n";
}

}  // namespace

int cmd_bench(const Args& args) {
  std::string model, threads = "0", split, workers, act_dtype = "f32", parallel, kv_type = "f16", trace_path;
  int64_t micro_batches = 0;
  BenchParams bp;
  int64_t reps = 5;
  bool json = false, no_warmup = false, so_take_over = false;
  ArgParser p("herd bench [-m MODEL] [-t N[,N...]] [-p N] [-n N] [-r N] [--parallel N,...] [--json]",
              "Measures prompt processing (pp: N tokens in one batch) and generation (tg: N tokens one at a time), "
              "each from an empty KV cache, like llama-bench. Prints a markdown table of the median rate and half "
              "the range over the repetitions (t/s = median ± spread); with --json, one JSON object per row on "
              "stdout instead (the table then goes to stderr).");
  p.add("-m,--model", "FILE", "GGUF model (default: $HERD_MODEL or models/SmolLM2-135M-Instruct.Q4_1.gguf)", &model);
  p.add("-t,--threads", "N,...", "thread counts to test, comma-separated (0 = all cores)", &threads);
  p.add("-p,--n-prompt", "N", "prompt tokens of the pp test (0 = skip it)", &bp.n_prompt, 0, kMaxCtx);
  p.add("-n,--n-gen", "N", "generated tokens of the tg test (0 = skip it)", &bp.n_gen, 0, kMaxCtx);
  p.add("-r,--repetitions", "N", "timed repetitions of each test", &reps, 1, 100000);
  p.add("--split", "A-B,C-D", "run the layers as in-process stages (same math as a cluster split)", &split);
  p.add("--workers", "HOST:PORT,...", "run on `herd worker` processes, one stage each (tg: the last stage samples)",
        &workers);
  p.add("--act-dtype", "f32|f16", "activations between workers", &act_dtype);
  int tp = 1;
  std::string tp_sync = "f32";
  p.add("--tp", "N|auto", "tensor parallelism over N in-process ranks (each gets max(1, threads / N) threads); with "
        "--workers: groups of N consecutive workers, one pipeline stage each (auto: the planner picks N)", &tp, 1, 256);
  p.keyword("auto", 0);
  p.add("--tp-sync", "f32|f16|q8", "with --tp: precision of the partial sums the ranks add", &tp_sync);
  add_trace_option(p, &trace_path);
  p.add("--parallel", "N,...", "run tg as N sequences decoding together instead (one batch row each per step; "
        "aggregate t/s; every N once per round, so their ratios are paired), e.g. 1,2,4,8", &parallel);
  p.add("--micro-batches", "M", "with --parallel: groups of sequences in flight at once (0 = one per pipeline "
        "stage, so every stage has work)", &micro_batches);
  p.add("--kv-type", "f32|f16|q8_0", "KV cache storage", &kv_type);
  SessionOptions so;
  std::string device = "cpu";
  p.add("--device", "DEV", "where this process computes (without --workers): " + device_help() +
        "; with --tp N, N GPUs, one per rank: cuda:0,cuda:1", &device);
  p.add("--plan-strategy", "S", "with --workers and no --split: how the planner splits the layers (optimal, even, "
        "memory, speed; docs/planner.md)", &so.plan_strategy);
  add_plan_file_option(p, so);
  add_recovery_options(p, so);
  SecurityOptions security;
  p.add("--take-over", "", "with --workers: take workers that another coordinator is using", &so_take_over);
  add_security_options(p, security);
  p.add("--no-warmup", "", "skip the untimed warm-up run of each test", &no_warmup);
  p.add("--json", "", "JSON lines on stdout (keys: model, model_size, model_n_params, backend, n_threads, test, "
        "n_prompt, n_gen, samples_ns, samples_ts, median_ts, spread_ts, ...)", &json);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  apply_security_options(security);
  if (reps <= 0 || reps > 1000) throw UsageError("-r must be in 1..1000");
  if (bp.n_prompt < 0 || bp.n_gen < 0) throw UsageError("-p and -n must be >= 0");
  if (bp.n_prompt == 0 && bp.n_gen == 0) throw UsageError("nothing to measure: -p and -n are both 0");
  bp.reps = static_cast<int>(reps);
  bp.threads = parse_threads(threads);
  bp.warmup = !no_warmup;
  if (!parallel.empty()) bp.parallel = parse_threads(parallel, "--parallel");
  for (int n : bp.parallel)
    if (n < 1) throw UsageError("--parallel: sequence counts must be at least 1");
  if (micro_batches < 0 || micro_batches > 64) throw UsageError("--micro-batches must be in 0..64");
  bp.micro_batches = static_cast<int>(micro_batches);

  so.n_ctx = std::max<int64_t>({bp.n_prompt, bp.n_gen, 1});
  so.split = split;
  so.workers = workers;
  so.take_over = so_take_over;
  so.act_dtype = act_dtype;
  so.kv_type = kv_type;
  so.tp = tp;
  so.tp_sync = tp_sync;
  set_session_devices(so, device);
  for (int n : bp.parallel) so.n_seq = std::max<int64_t>(so.n_seq, n);
  ModelSession s = ModelSession::open(model.empty() ? default_model_path() : model, so);
  std::unique_ptr<TraceWriter> trace;
  if (!trace_path.empty()) trace = std::make_unique<TraceWriter>(trace_path, *s.pipeline);
  RunReport report(*s.pipeline);
  const BenchModelInfo info = bench_model_info(s);
  std::string backend = s.backend->name();
  bp.n_stages = split.empty() ? 1 : static_cast<int>(parse_split(split, s.config.n_layers).size());
  // --tp auto: the group size the planner chose.
  const int run_tp = workers.empty() ? tp : dynamic_cast<RemotePipeline&>(*s.pipeline).tp();
  if (run_tp > 1) {
    backend += " tp";
    backend += std::to_string(run_tp);
    if (tp_sync != "f32") backend += " " + tp_sync;
  }
  if (!workers.empty()) {
    const size_t n = dynamic_cast<RemotePipeline&>(*s.pipeline).ranges().size();
    bp.n_stages = static_cast<int>(n);
    backend += " ";  // appended piecewise: GCC 12 -Wrestrict misreads " " + std::string here
    backend += std::to_string(n);
    backend += n == 1 ? " worker" : " workers";
    std::fputs(hop_bytes(s.config, act_dtype).c_str(), stderr);
  }

  FILE* table = json ? stderr : stdout;
  std::fputs(bench_table_header().c_str(), table);
  std::fflush(table);
  // In-process --tp: the share of each test's wall time rank 0 spent in its all-reduces and
  // logits gathers (waiting for the slower rank included), measured, not predicted.
  auto* tp_pipe = dynamic_cast<TpPipeline*>(s.pipeline.get());
  double sync0 = tp_pipe ? tp_pipe->sync_seconds() : 0;
  auto wall0 = std::chrono::steady_clock::now();
  run_bench(s, bp, [&](const BenchResult& r) {
    std::fputs(bench_table_row(info, backend, r).c_str(), table);
    std::fflush(table);
    if (tp_pipe) {
      const auto now = std::chrono::steady_clock::now();
      const double wall = std::chrono::duration<double>(now - wall0).count(), sync = tp_pipe->sync_seconds() - sync0;
      std::fprintf(stderr, "tp sync: %s: %.1f%% of the test's wall time in rank 0's all-reduces and logits gathers "
                   "(%.3f of %.3f s, warm-up included)\n", r.test.c_str(), wall > 0 ? 100.0 * sync / wall : 0.0, sync, wall);
      sync0 += sync;
      wall0 = now;
    }
    if (json) {
      std::fputs(bench_json_row(info, backend, r).c_str(), stdout);
      std::fflush(stdout);
    }
  });
  std::fputs(report.format().c_str(), stderr);
  return 0;
}

}  // namespace herd::cli
