// TpPipeline: tensor parallelism in one process (`--tp N` without --workers). The model is one
// stage whose every layer is split over N ranks (engine/shard_plan.h, engine/tp_shard.h); each
// rank is a thread of its own running a Stage on its shard with its own backend and the KV cache
// of its heads, and the ranks join their partial sums through an InprocComm (two all-reduces per
// layer, the logits gathered in rank order: engine/stage.h StageTensorParallel). Every rank ends a
// batch with the same logits; rank 0's are the output, sampled here as LocalPipeline samples.
//
// Bits: f32 sync sums the partials in rank order, so a run is deterministic whatever the threads'
// timing; it differs from a single-rank run only in where the attention-output and FFN-down dot
// products are cut (docs/architecture.md §3 "Tensor parallelism").
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/comm.h"
#include "engine/pipeline.h"
#include "engine/shard_plan.h"
#include "engine/tp_sync.h"

namespace herd {

struct TpOptions {
  int n_ranks = 2;
  std::vector<double> weights;  // per rank, relative speeds for the shard plan; empty = equal
  TpSync sync = TpSync::F32;
  int threads_per_rank = 1;     // each rank's backend's threads
  // Rank r's backend (one each: a backend is not shared by threads; ranks on GPUs: one GPU each).
  std::function<std::unique_ptr<Backend>(int rank)> make_backend;
  // Ranks whose backend computes on a device join through a Comm on that device (Stage::
  // set_tensor_parallel), made here for each such rank from the in-process group `over` (which it
  // may use to exchange what it needs: NCCL's id), on every rank's thread at once (making one is
  // a collective). Null *error and a Comm, or *error. Unset: device ranks are refused.
  std::function<std::unique_ptr<Comm>(Comm& over, Backend& rank_backend, std::string* error)> device_comm;
};

class TpPipeline : public Pipeline {
 public:
  // Throws std::invalid_argument naming the numbers when the model cannot be split N ways
  // (more ranks than KV heads, a MoE model, a column cut inside a quant block).
  TpPipeline(const model::GgufFile& f, const model::ModelConfig& c, const KvOptions& kv, TpOptions o);
  ~TpPipeline() override;

  const model::ModelConfig& config() const override { return config_; }
  int64_t n_ctx() const override { return kv_.n_ctx; }
  int64_t n_seq() const override { return kv_.n_seq; }
  int64_t n_stages() const override { return 1; }

  const ShardPlan& plan() const { return plan_; }
  int n_ranks() const { return static_cast<int>(ranks_.size()); }
  // Rank 0's seconds in all-reduces and logits gathers so far (Stage::tp_sync_seconds); read
  // between batches (rank 0 runs on the caller's thread).
  double sync_seconds() const { return ranks_.empty() || !ranks_[0].stage ? 0 : ranks_[0].stage->tp_sync_seconds(); }
  // Gives each rank's backend max(1, total / n_ranks) threads (herd bench's -t).
  void set_threads(int total);

 protected:
  void do_submit(uint64_t ticket, const Batch& b, std::vector<RowSample> samples) override;
  std::optional<BatchOutput> do_poll(int timeout_ms) override;

 private:
  struct Rank {
    std::unique_ptr<Backend> backend;
    std::unique_ptr<Stage> stage;
    std::vector<float> out;  // ranks > 0: their copy of the gathered logits
    std::exception_ptr error;
  };
  // A fresh InprocComm group (after a failure broke the last one), and over it the device ranks'
  // Comms; throws std::runtime_error naming the rank when one cannot be made.
  void connect_ranks();
  void run_rank(int r);
  void rank_thread(int r);

  model::ModelConfig config_;
  KvOptions kv_;
  TpSync sync_;
  ShardPlan plan_;
  std::vector<Rank> ranks_;
  std::vector<std::unique_ptr<Comm>> comms_;
  std::function<std::unique_ptr<Comm>(Comm&, Backend&, std::string*)> device_comm_;
  std::vector<std::unique_ptr<Comm>> device_comms_;  // made by device_comm_ over comms_ (device ranks)
  // The batch being run and rank 0's output (valid while the ranks run it).
  const Batch* batch_ = nullptr;
  float* out0_ = nullptr;
  std::deque<BatchOutput> done_;
  // Ranks 1..N-1 wait for a new generation, run it, and count down `running_`.
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  uint64_t generation_ = 0;
  int running_ = 0;
  bool stop_ = false;
};

}  // namespace herd
