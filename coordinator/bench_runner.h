// The timing loop of `herd bench` (llama-bench's tests): prompt processing of n_prompt tokens in
// one batch ("pp128") and generation of n_gen tokens one at a time ("tg64"), each from position 0
// of the KV cache (a fresh cache: evaluating from position 0 overwrites whatever was there),
// repeated and summarised by the median. Reusable by scripts and tests; printing is separate.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "coordinator/model_session.h"

namespace herd {

struct BenchParams {
  std::vector<int> threads = {0};  // thread counts to run (0 = default_threads())
  int64_t n_prompt = 128;          // 0: skip the pp test
  int64_t n_gen = 64;              // 0: skip the tg test
  int reps = 5;
  bool warmup = true;              // one untimed run of each test first (page faults, caches)
  // tg with N sequences decoding together (`--parallel 1,2,4,8`): one batch row per sequence per
  // step, in `micro_batches` groups kept in flight at once (0: one group per pipeline stage).
  // Rates are aggregate (all sequences' tokens / time). Needs the session's n_seq >= max N.
  std::vector<int> parallel;
  int micro_batches = 0;
  int n_stages = 1;                // the pipeline's stages (the default micro-batch count)
};

// What a row needs to say about the model (llama-bench's model/size/params columns).
struct BenchModelInfo {
  std::string path;
  std::string description;        // "llama 134M Q4_0"
  std::string type;               // "Q4_0", "Q4_K_M", or the dominant tensor type
  uint64_t size_bytes = 0;        // sum of all tensor bytes
  uint64_t n_params = 0;
  // Weight bytes one decoded token reads: every tensor except the embedding table, of which one
  // row is read (a tied output reads the whole table as the output projection).
  uint64_t bytes_per_token = 0;
};
BenchModelInfo bench_model_info(const ModelSession& s);

struct BenchResult {
  std::string test;               // "pp128" / "tg64"
  int n_threads = 0;
  int64_t n_prompt = 0, n_gen = 0;
  int n_seq = 1, micro_batches = 1;  // sequences decoding together, groups in flight
  std::vector<double> seconds;    // one per repetition
  std::vector<double> tokens_per_second() const;
  double median_ts() const;
  double spread_ts() const;       // half the range (max - min) / 2 of the per-repetition rates
  double mean_ts() const;
  double stddev_ts() const;
};

// Runs every (threads, test) combination on the session's pipeline; `on_result` is called after
// each row (e.g. to print it while the next one runs). Throws std::invalid_argument for
// n_prompt + n_gen beyond the session's context or non-positive reps.
std::vector<BenchResult> run_bench(ModelSession& s, const BenchParams& p,
                                   const std::function<void(const BenchResult&)>& on_result = {});

// llama-bench-style output: a markdown header, one row per result, and one JSON object per result.
std::string bench_table_header();
std::string bench_table_row(const BenchModelInfo& m, const std::string& backend, const BenchResult& r);
std::string bench_json_row(const BenchModelInfo& m, const std::string& backend, const BenchResult& r);

}  // namespace herd
