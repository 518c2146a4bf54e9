// A Pipeline whose stages are `herd worker` processes (or in-process WorkerServers over inproc://
// links). The coordinator sends token ids to the first worker; hidden states flow worker to worker
// directly; the last worker returns logits — or, for generation (eval_sample), samples them with
// the request's sampler and returns the token id (this coordinator keeps the sampler's RNG and
// sends each step's draw, so a seed gives the same text locally and on a cluster). Same kernels,
// same split => bit-identical logits to LocalPipeline.
//
// A worker with no copy of the model asks for exactly its tensors (and the GGUF header) while it
// handles the Assign; they are served from this process's file in crc32-checked chunks
// (cluster/protocol.h WeightRequest/WeightChunk; coordinator/weight_server.h) and cached on the
// worker's disk.
//
// Weight integrity: the constructor hashes every tensor of the file once (BLAKE2b-256, cached
// beside the file: cluster/tensor_hashes.h) and each Assign carries the digests of its stage's
// tensors; a worker whose copy (or weight cache, or what it received) differs refuses the Assign
// naming the tensor, which fails the setup with that message.
//
// The split: --split when given; else the planner (coordinator/plan_adapter.h; `optimal` by default)
// over the workers in the given order, from what they report in the Hello (free RAM, measured
// rates) and the links this coordinator measures to each (Ping/Pong: latency, ~1 MiB echo). Links
// between workers are estimated from those until a worker has measured its link to the next stage
// (reported in Ready; used on the next setup). A worker the plan leaves out gets no layers.
//
// The workers and their links: coordinator/worker_set.h. Every wait watches all workers' links
// (ZeroMQ heartbeats + a socket monitor notice a dead or SIGSTOPped worker within ~1.2 s), and a
// progress watchdog (step_timeout_ms) notices a worker that is alive but stuck: when a batch makes
// no progress for that long, each worker gets a Ping, which its main thread answers; the one that
// does not is named ("worker 2 of 3 (tcp://..., layers 4-7): no progress for 5.0 s (--step-timeout)").
//
// Recovery (on_worker_loss): a lost worker (dead link, stuck) is, with `fail`, a WorkerError
// (std::runtime_error naming the worker and its layers; the next eval() reconnects, re-assigns and
// replays the tokens the lost caches held). With `replan` (the CLI's default), inside the same poll: the
// lost worker is left out for good, the planner splits the layers over the others (a named error
// when they cannot hold the model, or none is left), every slot's cache is rebuilt by replaying
// its tokens, the batches in flight are sent again (each with the sampler draw and window it had:
// the RNG is this side's, so nothing is drawn twice) and the caller sees only a line on stderr.
// With `wait`: the same, over the same workers once the lost one answers again (within
// wait_timeout_ms). At most as many recoveries per poll as there are workers, plus one: no loop.
// A worker that reports an error of its own (refusal, bad message) is not a loss: an error value.
//
// status(): per stage its address, the device and memory its Ready reported, its layers, and the
// compute and overhead times every stage measures on its own clock and appends to the batch
// (cluster::StageTime); the batch time is measured here, from just before the Forward is packed to
// when poll() has its Result. What is neither compute nor overhead is the time on the hops (wire,
// socket queues, waiting behind another micro-batch, a caller that polls late): that total is
// measured, its split over the hops is derived (spread_hop_time). Since the last (re)connect.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cluster/protocol.h"
#include "coordinator/plan_adapter.h"
#include "coordinator/setup_progress.h"
#include "coordinator/weight_server.h"
#include "coordinator/worker_set.h"
#include "engine/pipeline.h"
#include "engine/tp_sync.h"
#include "partition/model_shape.h"
#include "partition/plan.h"
#include "partition/plan_file.h"
#include "transport/link.h"

namespace herd {

// One batch's hop times, derived rather than measured (no clock is shared between hosts):
// `residual_ms` (the round trip less every stage's compute and overhead) spread over the hops in
// proportion to `predicted_ms` (each hop's measured link at setup: latency + bytes / bandwidth), or
// evenly when nothing is predicted. A negative or non-finite residual counts as 0.
std::vector<double> spread_hop_time(double residual_ms, std::span<const double> predicted_ms);

struct RemotePipelineOptions {
  std::vector<std::string> workers;  // listen addresses, in stage order ("HOST:PORT", tcp://..., inproc://...)
  std::string split;                 // "0-1,2-4" (one range per worker); "" = the planner's split
  std::string plan_strategy = "optimal";  // without split: even, memory, speed, gpu-first or optimal
  // --plan FILE: run this plan (`herd plan --json`) exactly: its stages, layers, groups and shares
  // (coordinator/fixed_plan.h). Not with split or tp; a replan after a lost worker plans anew.
  std::optional<partition::PlanFile> plan;
  bool print_plan = false;           // print the one-line plan summary to stderr (the CLI)
  bool show_progress = false;        // weight transfers and "N stages ready" on stderr (the CLI; setup_progress.h)
  int64_t n_ctx = 0;
  int64_t n_seq = 1;                 // sequence slots on every worker (--parallel)
  DType kv_type = DType::F32;        // KV cache storage on every worker
  transport::WireDType act_dtype = transport::WireDType::F32;  // hidden states between workers
  std::string isa = "auto";          // CPU kernels the workers use (see CpuBackendOptions)
  bool exact = false;
  std::string model_path;            // hint sent to workers started without -m
  int connect_timeout_ms = 5000;     // Hello answer
  int assign_timeout_ms = 120000;    // mapping + loading a shard
  int request_timeout_ms = 0;        // 0 = no limit on one eval (dead workers are still noticed at once)
  // No progress on a batch for this long names the stuck worker (--step-timeout). < 0: the default,
  // kStepTimeoutBaseMs + 4 x the plan's predicted time for the batch's rows (kStepTimeoutSplitMs
  // with --split: no prediction); 0: off.
  int step_timeout_ms = -1;
  // replan | wait | fail (see the header comment). fail here, for a caller that handles the error
  // itself; the CLI's default (SessionOptions) is replan.
  std::string on_worker_loss = "fail";
  int wait_timeout_ms = 60000;            // `wait`: how long the lost worker may take to answer again
  bool take_over = false;            // workers owned by another coordinator are taken from it (else: "busy")
  // Tensor parallelism (--tp): each `tp` consecutive workers form one pipeline stage, every rank
  // running its share of the stage's layers (engine/tp_shard.h) over a ring of its own
  // (engine/ring_comm.h); shares proportional to the ranks' measured read bandwidth (their Hello
  // profiles). workers.size() must be a multiple of tp; --split gives one range per group.
  // 0 (--tp auto, without --split): the planner picks the group size among the divisors of the
  // worker count (1 = a pipeline), the fastest predicted decode, at the first setup.
  int tp = 1;
  TpSync tp_sync = TpSync::F32;
  int debug_corrupt_chunks = 0;      // test hook: flip a byte in the first N weight chunks sent (-1: all)
  int debug_tamper_chunks = 0;       // test hook: change the first N tensor chunks sent before their crc32 is taken
};

constexpr int kStepTimeoutBaseMs = 3000;
constexpr int kStepTimeoutSplitMs = 10000;
// "replan" | "wait" | "fail"; anything else: std::invalid_argument naming the choices.
void check_worker_loss_policy(const std::string& policy);

class RemotePipeline : public Pipeline {
 public:
  // Connects, checks versions and the model hash, assigns layers; throws std::runtime_error.
  RemotePipeline(const model::GgufFile& f, const model::ModelConfig& c, RemotePipelineOptions opts);
  ~RemotePipeline() override;

  const model::ModelConfig& config() const override { return config_; }
  int64_t n_ctx() const override { return opts_.n_ctx; }
  int64_t n_seq() const override { return opts_.n_seq; }
  int64_t n_stages() const override { return static_cast<int64_t>(ranges_.size() / tp_); }

  // Per worker in use (the ranks of a tensor-parallel group repeat their stage's range).
  const std::vector<model::LayerRange>& ranges() const { return ranges_; }
  // Tensor parallelism: per stage, the weights its ranks' shard plan was made from (one per rank).
  const std::vector<std::vector<double>>& tp_weights() const { return tp_weights_; }
  int tp() const { return static_cast<int>(tp_); }
  // What hashing the model's tensors cost this coordinator (0 tensors hashed: the cache file held them).
  const cluster::HashStats& hash_stats() const { return hashes_->stats(); }
  // Weight bytes sent to workers that had no copy of the model (since construction).
  uint64_t weight_bytes_sent() const { return weights_.bytes_sent(); }
  // Each worker's Ready text from the last assignment (its layers, mapped MiB, bytes received).
  const std::vector<std::string>& ready_info() const { return ready_info_; }

  // The planner's plan (no value with --split, until a replan); its device i is worker i of
  // opts.workers less those a replan left out.
  const std::optional<partition::Plan>& plan() const { return plan_; }
  // What the plan was made from: the workers as devices and the measured links, and the options.
  const partition::Cluster& planned_cluster() const { return cluster_; }
  const partition::PlanOptions& plan_options() const { return plan_options_; }
  // The --plan file while its split runs (nullptr otherwise: no --plan, or a replan took over).
  const partition::PlanFile* fixed_plan() const { return opts_.plan && !replanned_ ? &*opts_.plan : nullptr; }
  // "plan: worker 1 layers 0-13, worker 2 layers 14-29; predicted 96 tok/s" ("" with --split).
  const std::string& plan_summary() const { return plan_summary_; }
  // Coordinator -> worker link of every worker in use, in opts.workers order (measured at connect time).
  const std::vector<cluster::LinkStats>& worker_links() const { return worker_links_; }
  // Link from each active stage to the next as that stage measured it (n_stages - 1 entries).
  const std::vector<cluster::LinkStats>& stage_links() const { return stage_links_; }
  // Recoveries done inside a poll (on_worker_loss replan|wait) since construction.
  int recoveries() const { return recoveries_; }
  // The step timeout a batch of n_rows gets (ms; 0 = off).
  int step_timeout_ms(int64_t n_rows) const;

 private:
  // Connects every worker, splits the layers, assigns them (serving weights meanwhile).
  void setup();
  // Sets ranges_ from the planner; drops the workers it leaves out from workers_.
  void plan_split();
  // Sets ranges_, the groups and their shares from opts_.plan (--plan FILE).
  void fixed_split();
  std::vector<std::vector<double>> fixed_tp_weights_;  // opts_.plan's shares per stage (group > 1)
  SplitPlan choose_tp(const SplitRequest& q);  // --tp auto: the group size with the fastest predicted decode
  // Sends the Assign of stage k and waits for its Ready, serving its weight requests meanwhile.
  void assign(size_t k);
  // Tensor parallelism: sends every rank of stage s's group the ring's addresses (TpRing) and waits
  // for all of them to have formed it (they do so at the same time).
  void form_ring(size_t s);
  // The worker that returns results: the last stage's (its group's rank 0).
  size_t result_worker() const { return workers_.size() - tp_; }
  // The request path (remote_requests.cpp). A batch goes to stage 0 as a Forward at once; results
  // come back from the last stage in the order sent.
  void do_submit(uint64_t ticket, const Batch& b, std::vector<RowSample> samples) override;
  std::optional<BatchOutput> do_poll(int timeout_ms) override;
  // After a failure: reconnects, re-assigns, and rebuilds every slot's cache from cached() (the
  // positions before `keep[seq]`, when given, for the slots the new batch rewinds).
  void recover(const std::vector<std::pair<int32_t, int32_t>>& rewinds);
  // Replays seq_tokens_[seq][0, keep[seq]) of every slot onto freshly assigned workers; returns the tokens sent.
  int64_t replay(const std::vector<int64_t>& keep);
  // on_worker_loss replan|wait after `e`: re-sets up without (replan) or with (wait) the lost worker,
  // rebuilds the caches and resends pending_. Throws (a runtime_error naming the loss) when it cannot.
  void recover_in_place(const WorkerError& e);
  void recover_rounds(const WorkerError& e);
  // do_poll's work; a WorkerError leaves it for do_poll to recover from.
  std::optional<BatchOutput> poll_once(int timeout_ms);
  // The batch in flight whose result does not come: pings every worker and fails (lost) naming the
  // one whose main thread does not answer (or the last stage when all do).
  [[noreturn]] void fail_stuck(double waited_s);
  // Sends one Forward to stage 0; returns its request id.
  uint64_t send_forward(const Batch& b, cluster::Forward& fw);
  // Waits for the Result of `request_id` (older ones are stale: ignored), watching every worker.
  // Nothing within timeout_ms (< 0: no limit but the request timeout) -> no value.
  // `since`: when the batch last made progress (its step timeout counts from there).
  std::optional<transport::Message> wait_result(uint64_t request_id, int timeout_ms,
                                                std::chrono::steady_clock::time_point since, int64_t n_rows);
  double last_wait_s_ = 0;  // how long the last Result took to come: wait_result spins only for short steps
  void serve_weights(size_t k, const transport::Message& m);
  std::string describe(size_t i) const { return workers_.describe(i); }
  // The WorkerSet's failures, which also mark the pipeline for a reconnect on the next eval.
  [[noreturn]] void fail(size_t i, const std::string& what, bool lost = false);
  [[noreturn]] void fail_root_cause(size_t i, const std::string& what);

  model::ModelConfig config_;
  const model::GgufFile& file_;
  RemotePipelineOptions opts_;
  std::string model_hash_;
  std::unique_ptr<cluster::TensorHashes> hashes_;  // the digests of file_'s tensors (Assign v5)
  std::vector<model::LayerRange> ranges_;  // per active worker (declared before workers_, which names them)
  WorkerSet workers_{ranges_};
  WeightServer weights_;
  SetupProgress progress_;
  std::vector<std::string> ready_info_;
  std::optional<partition::ModelShape> shape_;
  std::optional<partition::Plan> plan_;
  partition::Cluster cluster_;
  partition::PlanOptions plan_options_;
  std::string plan_summary_;
  std::vector<cluster::LinkStats> worker_links_, stage_links_;
  std::map<std::pair<std::string, std::string>, cluster::LinkStats> measured_hops_;  // (from, to) address
  struct Pending {
    uint64_t request_id = 0, ticket = 0;
    int64_t n_outputs = 0;
    bool sample = false;
    std::vector<int32_t> sample_seqs;  // the sequence of each output row (sampling)
    int64_t n_rows = 0;
    std::chrono::steady_clock::time_point sent;  // just before the Forward was packed
    // To send it again after a recovery: the batch, its runs' (seq, pos0), and each output row's
    // sampling (draw, params and window as at submit).
    Batch batch;
    std::vector<std::pair<int32_t, int32_t>> starts;
    std::vector<cluster::SampleSpec> specs;
  };
  // Sends p's batch (a fresh request id): the sampling fields the last stage's mirror lacks.
  void send_pending(Pending& p);
  std::deque<Pending> pending_;  // Forwards in flight, oldest first
  // What the last stage's sampler of each slot holds (params and window) as far as this side
  // knows; reset on every reconnect. A step whose sampler differs sends a reset.
  struct SamplerMirror {
    SamplerParams params;
    std::vector<int32_t> recent;
  };
  std::vector<std::optional<SamplerMirror>> mirrors_;
  // status(): each active stage as its Ready described it, and each hop's measured link
  // (coordinator -> stage 0, stage i -> i+1, last stage -> coordinator: n_stages + 1).
  std::vector<StageStatus> stage_status_;
  std::vector<cluster::LinkStats> hop_links_;
  // Records one finished batch's times (stage_times: one per stage, checked by the caller).
  void record_times(const Pending& p, const std::vector<cluster::StageTime>& stage_times);
  std::chrono::steady_clock::time_point progress_at_;  // the last Result (or setup)
  std::vector<std::string> live_;  // the workers still in use (opts.workers less those left out by replan)
  bool replanned_ = false;         // the --split no longer applies: the planner splits over live_
  int recoveries_ = 0;
  bool healthy_ = false;
  uint64_t next_request_ = 1, session_ = 0;
  std::vector<std::string> link_tokens_;  // the last assignment's: stage k -> k+1 (RemotePipeline::assign)
  size_t tp_ = 1;                                 // opts_.tp (0 = auto: the planner's choice, once)
  bool tp_auto_ = false;                          // --tp auto, not chosen yet
  std::vector<std::vector<double>> tp_weights_;   // per stage (tp_ > 1)
  std::vector<std::string> ring_addresses_;       // per worker, from its Ready (tp_ > 1)
};

}  // namespace herd
