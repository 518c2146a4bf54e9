// Everything a single-host run needs, opened from one GGUF file: the validated file, the
// architecture config, the tokenizer, a backend and a pipeline over the requested split.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/comm.h"
#include "engine/pipeline.h"
#include "kernels/backend.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

namespace herd {

struct SessionOptions {
  int64_t n_ctx = 0;      // 0: min(training context, 4096)
  int n_threads = 0;      // 0: hardware concurrency
  std::string split;      // "" = one stage; else e.g. "0-1,2-4" (in-process stages, or one per worker)
  std::string workers;    // "" = run here; else "HOST:PORT,..." of `herd worker` processes (RemotePipeline)
  std::string plan_strategy = "optimal";  // split over workers without --split (partition/strategies.h)
  std::string plan_file;  // --plan FILE: run this `herd plan --json` plan over the workers exactly
  std::string act_dtype = "f32";  // activations between workers: f32 | f16
  bool exact = false;             // f32 dot products everywhere (no 8-bit activation quantization)
  std::string isa = "auto";       // CPU kernels: auto | avx512 | avx2 | scalar (the reference)
  int64_t n_seq = 1;              // sequence slots (--parallel): sequences that decode together
  std::string kv_type = "f16";    // KV cache storage: f32 | f16 | q8_0 (`herd logits`: f32)
  bool take_over = false;         // --take-over: workers owned by another coordinator are taken from it
  int tp = 1;                     // --tp N: tensor parallelism (engine/tp_pipeline.h; with workers: groups of N);
                                  // 0 = --tp auto (with workers: the planner picks N)
  std::string tp_sync = "f32";    // --tp-sync f32 | f16 | q8: how the ranks' partial sums travel
  double step_timeout_s = -1;     // --step-timeout: no progress this long names the stuck worker (-1: the
                                  // default from the plan, RemotePipelineOptions::step_timeout_ms; 0: off)
  std::string on_worker_loss = "replan";  // --on-worker-loss: replan | wait | fail
  double wait_timeout_s = 60;     // --wait-timeout: `wait` gives up after this long
  // --device: the backend of this process's stages when not the CPU (a CUDA GPU; made by the herd
  // binary, launch/device_backend.h). Null: the CPU backend of `isa`/`exact`.
  std::function<std::unique_ptr<Backend>()> device_backend;
  // --device cuda:0,cuda:1 with --tp N: rank r computes on the r-th device (N of them), and the
  // ranks join through device_comm (NCCL; launch/device_backend.h). Empty: device_backend.
  std::vector<std::function<std::unique_ptr<Backend>()>> rank_device_backends;
  std::function<std::unique_ptr<Comm>(Comm& over, Backend& be, std::string* error)> device_comm;
};

struct ModelSession {
  std::unique_ptr<model::GgufFile> file;
  model::ModelConfig config;
  std::unique_ptr<model::Tokenizer> tokenizer;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Pipeline> pipeline;

  // Throws std::runtime_error (or GgufError) with a message fit for the user.
  static ModelSession open(const std::string& path, const SessionOptions& opts);
};

int64_t default_context(const model::ModelConfig& c);
int default_threads();

}  // namespace herd
