// Options shared by the subcommands that load a model and sample from it.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "coordinator/model_session.h"
#include "coordinator/remote_pipeline.h"
#include "engine/sampler.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "launch/device_backend.h"
#include "launch/security_options.h"

namespace herd::cli {

struct ModelOptions {
  std::string model;
  std::string device = "cpu";  // --device (session_for turns it into SessionOptions::device_backend)
  SessionOptions session;
  SecurityOptions security;  // for --workers
};

// --step-timeout, --on-worker-loss, --wait-timeout (every command that takes --workers).
inline void add_recovery_options(ArgParser& p, SessionOptions& s) {
  p.add("--step-timeout", "SEC", "with --workers: a batch that makes no progress this long names the stuck worker "
        "(-1: " + std::to_string(kStepTimeoutBaseMs / 1000) + " s + 4x the plan's predicted time for the batch, "
        "or " + std::to_string(kStepTimeoutSplitMs / 1000) + " s with --split; 0 = off)", &s.step_timeout_s);
  p.add("--on-worker-loss", "replan|wait|fail", "with --workers: when a worker dies or is stuck, replan (split the layers over the others, rebuild the caches and go on; an error when they cannot hold the model), "
        "wait (for it to answer again at the same address, up to --wait-timeout) or fail (an error naming it)",
        &s.on_worker_loss);
  p.add("--wait-timeout", "SEC", "with --on-worker-loss wait: how long the lost worker may take to come back", &s.wait_timeout_s);
}

// --plan FILE (every command that takes --workers).
inline void add_plan_file_option(ArgParser& p, SessionOptions& s) {
  p.add("--plan", "FILE", "with --workers: run exactly this plan, made by `herd plan ... --json > FILE` (its stages, "
        "layers and tensor-parallel groups; its devices matched to --workers by address, or by position for device "
        "lines); a plan for another model or other workers is refused, naming the difference", &s.plan_file);
}

// kv_default: the --kv-type this command starts from ("f16"; `herd logits` "f32").
inline void add_model_options(ArgParser& p, ModelOptions& o, const char* kv_default = "f16") {
  o.session.kv_type = kv_default;
  p.add("-m,--model", "FILE", "GGUF model (default: $HERD_MODEL or models/SmolLM2-135M-Instruct.Q4_1.gguf)",
        &o.model);
  p.add("-c,--ctx-size", "N", "context size in tokens (0 = min(training context, 4096))", &o.session.n_ctx,
        0, kMaxCtx);
  p.add("-t,--threads", "N", "CPU threads (0 = all cores)", &o.session.n_threads, 0, kMaxThreads);
  p.add("--kv-type", "f32|f16|q8_0",
        std::string(kv_default) == "f32"
            ? "KV cache storage (f32 here: llama.cpp's reference dumps were made with an f32 cache; f16 halves "
              "the cache, q8_0 quarters it)"
            : "KV cache storage (f32 doubles the cache's memory, q8_0 halves it)",
        &o.session.kv_type);
  p.add("--split", "A-B,C-D", "run the layers as in-process stages, e.g. 0-1,2-4 (same math as a cluster split)",
        &o.session.split);
  p.add("--workers", "HOST:PORT,...", "run the stages on `herd worker` processes, in this order (with --split: "
        "one range per worker; else the planner splits the layers from each worker's reported profile and the "
        "measured links, and may leave a worker out)", &o.session.workers);
  p.add("--plan-strategy", "S", "how the planner splits layers over --workers without --split: optimal (default; "
        "fastest predicted), even, memory, speed (docs/planner.md)", &o.session.plan_strategy);
  add_plan_file_option(p, o.session);
  p.add("--act-dtype", "f32|f16", "hidden states between workers (f32 = bit-identical to a local run)",
        &o.session.act_dtype);
  p.add("--tp", "N|auto", "tensor parallelism: split every layer over N ranks (heads, FFN rows and vocabulary rows). "
        "Alone: N threads of this process (-t shared among them). With --workers: each N consecutive workers are one "
        "pipeline stage, a ring of ranks with shares by their measured read bandwidth (the count must be a multiple "
        "of N; N = the count is pure TP; --split gives one range per group; --on-worker-loss replan leaves a lost "
        "rank's whole group out). auto (with --workers, without --split): the planner picks N among the divisors of "
        "the worker count (1 = a pipeline), the fastest predicted (a larger group only when 10% faster)", &o.session.tp, 1, 256);
  p.keyword("auto", 0);
  p.add("--tp-sync", "f32|f16|q8", "with --tp: precision of the partial sums the ranks add (f32: the same bits every "
        "run; f16/q8: fewer bytes, rounded)", &o.session.tp_sync);
  p.add("--exact", "", "exact f32 dot products (default: 8-bit activations inside quantized dot products, "
        "as llama.cpp does; faster)", &o.session.exact);
  p.add("--cpu", "ISA", "CPU kernels: auto, avx512, avx2 or scalar (the reference); env HERD_CPU_ISA", &o.session.isa);
  p.add("--device", "DEV", "where this process computes (without --workers): " + device_help() +
        "; with --tp N, N GPUs, one per rank: cuda:0,cuda:1", &o.device);
  p.add("--take-over", "", "with --workers: take workers that another coordinator is using (it gets an error "
        "naming us); without it such a worker answers \"busy: owned by HOST (pid P) since T\"", &o.session.take_over);
  add_recovery_options(p, o.session);
  add_security_options(p, o.security);
}

// --trace FILE (run, chat, serve, bench): every batch as Chrome trace events (coordinator/trace_writer.h).
inline void add_trace_option(ArgParser& p, std::string* path) {
  p.add("--trace", "FILE", "write every batch as Chrome trace events (open in ui.perfetto.dev or chrome://tracing): "
        "a track per stage (compute) and per link (transfer), per batch", path);
}

// The session options with --device resolved (a GPU this build or host lacks is an error now).
inline SessionOptions session_for(const ModelOptions& o) {
  SessionOptions s = o.session;
  set_session_devices(s, o.device);
  return s;
}

inline std::string resolve_model(const ModelOptions& o) { return o.model.empty() ? default_model_path() : o.model; }

struct SamplingOptions {
  SamplerParams params;
  int64_t seed = -1;
};

inline void add_sampling_options(ArgParser& p, SamplingOptions& s) {
  p.add("--temp", "T", "temperature; 0 = greedy", &s.params.temperature);
  p.add("--top-k", "K", "keep the K most likely tokens (0 = off)", &s.params.top_k, 0, int64_t{1} << 30);
  p.add("--top-p", "P", "keep the smallest set with cumulative probability >= P (1 = off)", &s.params.top_p);
  p.add("--min-p", "P", "drop tokens less likely than P x the most likely (0 = off)", &s.params.min_p);
  p.add("--repeat-penalty", "X", "penalise the last --repeat-last-n tokens (1 = off)", &s.params.repeat_penalty);
  p.add("--repeat-last-n", "N", "window of the repeat penalty", &s.params.repeat_last_n, 0, kMaxCtx);
  p.add("-s,--seed", "S", "random seed; the same seed gives the same text (-1 = random)", &s.seed, -1, INT64_MAX);
}

inline SamplerParams finish_sampling(const SamplingOptions& s) {
  SamplerParams p = s.params;
  p.seed = s.seed >= 0 ? static_cast<uint64_t>(s.seed) : std::random_device{}();
  return p;
}

}  // namespace herd::cli
