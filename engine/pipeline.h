// A Pipeline evaluates batches (engine/batch.h) through all of a model's stages. It is
// asynchronous: submit() queues a batch and returns at once, poll() hands back finished ones in
// submission order, so a caller can keep several micro-batches in flight (on a cluster, stage 1
// computes one while stage 2 computes another). eval() is submit + wait.
//
// The outputs of a batch are its rows flagged in Batch::logits: logits rows, or, when the caller
// passes one Sampler per output row, sampled token ids (on a cluster the last stage samples and
// only ids travel back; the RNG stays with the caller's Sampler: one draw per row at submit).
//
// The tokens each sequence's KV slot holds live here (cached()), the one place per-sequence state
// is kept on the coordinator's side: prefix reuse, and replay onto restarted workers, read it.
//
// LocalPipeline runs its stages in this process, in order (one stage = a plain single-host run;
// several = the same split a cluster would use, for checking that splits change nothing).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/batch.h"
#include "engine/sampler.h"
#include "engine/stage.h"
#include "kernels/backend.h"
#include "model/arch.h"
#include "model/weights.h"

namespace herd {
namespace model {
class GgufFile;
}

struct BatchOutput {
  uint64_t ticket = 0;
  std::vector<float> logits;    // [n_outputs, n_vocab] when the batch was submitted without samplers
  std::vector<int32_t> tokens;  // [n_outputs] sampled ids when it was submitted with samplers
};

// What the last stage needs to sample one output row: the caller's sampler (params and repeat
// window) and the draw it gave for this step.
struct RowSample {
  const Sampler* sampler = nullptr;
  uint64_t draw = 0;
};

// What a pipeline says about its stages, for status pages and metrics. Times are moving means
// over the recent batches (PipelineStats: exponential, alpha 0.1; 0 = nothing measured yet), of
// every batch polled since the pipeline was built or last reconnected, prompt chunks and decode
// steps alike.
struct StageStatus {
  std::string name;          // "local" in-process; "HOST:PORT" of a worker
  std::string device;        // Backend::description(): "cpu-avx512-q8, 2 threads"
  int64_t first_layer = 0;   // layers [first_layer, end_layer)
  int64_t end_layer = 0;
  uint64_t memory_bytes = 0; // weights (bytes of the stage's tensors) + KV cache allocated
  double compute_ms = 0;     // measured: Stage::forward per batch (+ sampling, on the last stage)
  double overhead_ms = 0;    // measured on a worker: the rest of its handling of a batch (unpack,
                             // checks, f16 conversion); 0 in-process
};
struct PipelineStatus {
  std::vector<StageStatus> stages;
  // A cluster's links, in order: coordinator -> stage 0, stage i -> i+1, last -> coordinator;
  // transfer + queueing time per batch. Empty in-process.
  std::vector<double> hop_ms;
  double batch_ms = 0;   // submit -> output, per batch
  uint64_t batches = 0;  // batches measured
};

// One batch's times, as PipelineStats::record gets them: for a trace (--trace) of every batch.
struct BatchTimes {
  std::chrono::steady_clock::time_point submitted;  // when the batch left the caller
  int64_t rows = 0;
  std::vector<double> compute_ms, overhead_ms, hop_ms;  // per stage / per hop, as in StageStatus
  double batch_ms = 0;
};
using BatchObserver = std::function<void(const BatchTimes&)>;

// The bookkeeping behind status(): the layout of the stages and an exponential moving mean of each
// time, m += 0.1 (x - m) per batch (the first batch sets it), so a status page follows a change of
// load within ~20 batches and one slow batch moves it by a tenth. Thread-safe: a status page may
// read it while another thread submits and polls.
class PipelineStats {
 public:
  static constexpr double kAlpha = 0.1;
  // A new layout (names, devices, layer ranges, memory); the means start again. n_hops: 0 in-process.
  void reset(std::vector<StageStatus> stages, size_t n_hops);
  // One batch: compute_ms and overhead_ms per stage, hop_ms per hop (each the size reset() gave;
  // overhead_ms may be empty), and its submit -> output time.
  // submitted/rows: for the observer.
  void record(std::span<const double> compute_ms, std::span<const double> overhead_ms,
              std::span<const double> hop_ms, double batch_ms,
              std::chrono::steady_clock::time_point submitted = {}, int64_t rows = 0);
  PipelineStatus snapshot() const;
  // Called with every recorded batch, outside the lock (it may call snapshot()). Several may
  // observe (a trace writer and a run's report); add returns the id remove takes.
  int add_observer(BatchObserver o);
  void remove_observer(int id);

 private:
  mutable std::mutex mu_;
  PipelineStatus s_;
  std::vector<std::pair<int, BatchObserver>> observers_;
  int next_observer_ = 1;
  void record_locked(std::span<const double> compute_ms, std::span<const double> overhead_ms,
                     std::span<const double> hop_ms, double batch_ms);
};

class Pipeline {
 public:
  virtual ~Pipeline() = default;
  virtual const model::ModelConfig& config() const = 0;
  virtual int64_t n_ctx() const = 0;
  virtual int64_t n_seq() const = 0;  // sequence slots (--parallel)
  // Stages the batches pass through (a scheduler keeps this many micro-batches in flight).
  virtual int64_t n_stages() const = 0;
  // Stages, devices and measured times (implementations fill stats_ with what they know).
  virtual PipelineStatus status() const { return stats_.snapshot(); }
  // Every batch's times as it completes (a trace writer, a run's report). Add before submitting;
  // remove (by the id add returned) before the observer goes.
  int add_observer(BatchObserver o) { return stats_.add_observer(std::move(o)); }
  void remove_observer(int id) { stats_.remove_observer(id); }

  // Queues `b`; returns its ticket. samplers: empty, or one per output row in row order (the
  // sampler must stay alive until the batch is polled; its RNG advances here). Throws
  // std::invalid_argument / std::out_of_range for a malformed batch (a sequence continuing past
  // what its slot holds, a full context, a token outside the vocabulary): nothing is queued then.
  uint64_t submit(const Batch& b, std::span<Sampler* const> samplers = {});
  // The oldest unfinished batch's output once it is done; nothing after timeout_ms (< 0: wait).
  // A lost or failing worker is a std::runtime_error (RemotePipeline).
  std::optional<BatchOutput> poll(int timeout_ms);
  size_t in_flight() const { return tickets_.size(); }
  // submit + wait: polls every batch in flight before this one (dropping their outputs), then it.
  BatchOutput eval(const Batch& b, std::span<Sampler* const> samplers = {});

  // One sequence (slot 0) at a time, the single-stream conveniences: n tokens at positions pos0..;
  // logits [n, n_vocab] when all_logits, else the last token's [n_vocab].
  void eval(const int32_t* tokens, int64_t n, int64_t pos0, bool all_logits, std::vector<float>& logits);
  // Evaluates and samples the last token's row with `sampler` (its RNG advances as sample()
  // would; it does not accept() the result). Same seed and history => same token anywhere.
  int32_t eval_sample(const int32_t* tokens, int64_t n, int64_t pos0, Sampler& sampler, int32_t seq = 0);

  // Tokens whose keys/values slot `seq` holds, from position 0 (as of the last submit).
  const std::vector<int32_t>& cached(int32_t seq) const;
  // Forgets what slot `seq` holds (its next batch starts at position 0).
  void forget(int32_t seq);

 protected:
  // The implementation's side: the batch is valid (runs checked against cached()), samples has
  // one entry per output row or none.
  virtual void do_submit(uint64_t ticket, const Batch& b, std::vector<RowSample> samples) = 0;
  virtual std::optional<BatchOutput> do_poll(int timeout_ms) = 0;
  // Called when a batch in flight failed (after poll threw): its tokens may not be cached.
  void rewind_failed();
  // The record of `seq` holds at most positions [0, pos0).
  void cut(int32_t seq, int32_t pos0);

  std::vector<std::vector<int32_t>> seq_tokens_;  // [n_seq] tokens each slot holds
  PipelineStats stats_;                           // what status() returns

 private:
  struct InFlight {
    uint64_t ticket;
    std::vector<std::pair<int32_t, int32_t>> starts;  // (seq, pos0) of each run: the rewind on failure
  };
  std::deque<InFlight> tickets_;
  uint64_t next_ticket_ = 1;
  Batch one_;
};

class LocalPipeline : public Pipeline {
 public:
  // ranges: contiguous stage ranges covering every layer once; empty = one stage with all layers.
  LocalPipeline(const model::GgufFile& f, const model::ModelConfig& c, Backend& backend, const KvOptions& kv,
                std::vector<model::LayerRange> ranges = {});
  LocalPipeline(const model::GgufFile& f, const model::ModelConfig& c, Backend& backend, int64_t n_ctx,
                std::vector<model::LayerRange> ranges = {})
      : LocalPipeline(f, c, backend, KvOptions{n_ctx, 1, DType::F32}, std::move(ranges)) {}

  const model::ModelConfig& config() const override { return config_; }
  int64_t n_ctx() const override { return kv_.n_ctx; }
  int64_t n_seq() const override { return kv_.n_seq; }
  int64_t n_stages() const override { return static_cast<int64_t>(stages_.size()); }

 protected:
  void do_submit(uint64_t ticket, const Batch& b, std::vector<RowSample> samples) override;
  std::optional<BatchOutput> do_poll(int timeout_ms) override;

 private:
  model::ModelConfig config_;
  KvOptions kv_;
  std::vector<std::unique_ptr<Stage>> stages_;
  std::vector<float> hidden_a_, hidden_b_;
  std::deque<BatchOutput> done_;
  std::vector<double> compute_ms_;  // the batch being run: per stage
};

// Splits n_layers into contiguous ranges from a spec like "0-9,10-21" (inclusive bounds), checking
// that they cover every layer exactly once and in order. Throws std::invalid_argument with the reason.
std::vector<model::LayerRange> parse_split(const std::string& spec, int64_t n_layers);

}  // namespace herd
