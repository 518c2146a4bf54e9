#include "engine/tp_pipeline.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

#include "common/log.h"
#include "engine/inproc_comm.h"
#include "engine/tp_shard.h"
#include "model/gguf.h"

namespace herd {

TpPipeline::TpPipeline(const model::GgufFile& f, const model::ModelConfig& c, const KvOptions& kv, TpOptions o)
    : config_(c), kv_(kv), sync_(o.sync), device_comm_(std::move(o.device_comm)) {
  if (kv.n_ctx <= 0) throw std::invalid_argument("context size must be positive");
  if (kv.n_seq <= 0) throw std::invalid_argument("--parallel must be at least 1");
  if (o.n_ranks < 1) throw std::invalid_argument("--tp must be at least 1, not " + std::to_string(o.n_ranks));
  if (!o.make_backend) throw std::invalid_argument("TpPipeline: no backend factory");
  if (o.weights.empty()) o.weights.assign(static_cast<size_t>(o.n_ranks), 1.0);
  if (o.weights.size() != static_cast<size_t>(o.n_ranks))
    throw std::invalid_argument("--tp " + std::to_string(o.n_ranks) + " with " + std::to_string(o.weights.size()) +
                                " rank weights");
  if (o.sync == TpSync::Q8 && c.n_embd % 32 != 0)
    throw std::invalid_argument("--tp-sync q8 needs n_embd in whole blocks of 32; it is " + std::to_string(c.n_embd));
  const model::LayerRange all{0, c.n_layers, true, true};
  const model::StageWeights full = model::load_stage_weights(f, c, all);
  plan_ = plan_shards(shard_shape(c, full), o.weights);
  for (int r = 0; r < o.n_ranks; ++r) {
    const size_t i = static_cast<size_t>(r);
    HERD_LOG_INFO("tp rank ", r, ": KV heads ", plan_.kv_heads[i].begin, "..", plan_.kv_heads[i].end - 1, ", FFN rows ",
                  plan_.ffn_rows[i].begin, "..", plan_.ffn_rows[i].end - 1, ", vocabulary rows ", plan_.vocab[i].begin,
                  "..", plan_.vocab[i].end - 1);
  }
  // Every shard is cut (its column slices copied) before any Stage prepares its matrices and may
  // drop file pages: then nothing is read twice from disk.
  std::vector<model::StageWeights> shards;
  for (int r = 0; r < o.n_ranks; ++r) shards.push_back(shard_weights(c, full, plan_, r));
  ranks_.resize(static_cast<size_t>(o.n_ranks));
  uint64_t memory = model::stage_weight_bytes(f, c, all);
  for (int r = 0; r < o.n_ranks; ++r) {
    Rank& k = ranks_[static_cast<size_t>(r)];
    k.backend = o.make_backend(r);
    k.backend->set_threads(std::max(1, o.threads_per_rank));
    k.stage = std::make_unique<Stage>(shard_config(c, plan_, r), std::move(shards[static_cast<size_t>(r)]),
                                      *k.backend, kv);
    memory += k.stage->cache().bytes();
  }
  connect_ranks();
  stats_.reset({{"local", "tp " + std::to_string(o.n_ranks) + " x " + ranks_[0].backend->description() + ", sync " +
                              tp_sync_name(sync_),
                 0, c.n_layers, memory}},
               0);
  for (int r = 1; r < o.n_ranks; ++r) threads_.emplace_back([this, r] { rank_thread(r); });
}

TpPipeline::~TpPipeline() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void TpPipeline::connect_ranks() {
  // The new group is made whole before the stages are pointed at it: when a device Comm cannot be
  // made, the stages keep the old (broken) group, whose collectives fail at once, never a freed one.
  auto comms = make_inproc_comms(n_ranks());
  std::vector<std::unique_ptr<Comm>> device_comms;
  std::vector<Comm*> use(static_cast<size_t>(n_ranks()));
  for (size_t i = 0; i < use.size(); ++i) use[i] = comms[i].get();
  const bool devices = ranks_[0].backend->device().kind != Device::Kind::Host;
  if (devices && device_comm_) {
    // Every rank makes its Comm on a thread of its own: making one is a collective.
    device_comms.resize(use.size());
    std::vector<std::string> errors(use.size());
    std::vector<std::thread> makers;
    for (int r = 0; r < n_ranks(); ++r)
      makers.emplace_back([this, r, &errors, &comms, &device_comms] {
        const auto i = static_cast<size_t>(r);
        try {
          device_comms[i] = device_comm_(*comms[i], *ranks_[i].backend, &errors[i]);
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
        if (!device_comms[i] && errors[i].empty()) errors[i] = "no Comm was made";
      });
    for (std::thread& t : makers) t.join();
    for (int r = 0; r < n_ranks(); ++r)
      if (!errors[static_cast<size_t>(r)].empty())
        throw std::runtime_error("tensor-parallel rank " + std::to_string(r) + " on " +
                                 ranks_[static_cast<size_t>(r)].backend->device().name() + ": " +
                                 errors[static_cast<size_t>(r)]);
    for (size_t i = 0; i < use.size(); ++i) use[i] = device_comms[i].get();
  }
  for (int r = 0; r < n_ranks(); ++r)
    ranks_[static_cast<size_t>(r)].stage->set_tensor_parallel({use[static_cast<size_t>(r)], sync_, plan_.vocab});
  device_comms_ = std::move(device_comms);  // the old device Comms go first: they were made over the old group
  comms_ = std::move(comms);
}

void TpPipeline::set_threads(int total) {
  for (Rank& k : ranks_) k.backend->set_threads(std::max(1, total / n_ranks()));
  stats_.reset({{"local", "tp " + std::to_string(n_ranks()) + " x " + ranks_[0].backend->description() + ", sync " +
                              tp_sync_name(sync_),
                 0, config_.n_layers, stats_.snapshot().stages.at(0).memory_bytes}},
               0);
}

void TpPipeline::run_rank(int r) {
  Rank& k = ranks_[static_cast<size_t>(r)];
  try {
    float* out = out0_;
    if (r > 0) {
      k.out.resize(static_cast<size_t>(k.stage->output_floats(*batch_)));
      out = k.out.data();
    }
    k.stage->forward(*batch_, nullptr, out);
  } catch (...) {
    k.error = std::current_exception();
  }
}

void TpPipeline::rank_thread(int r) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    run_rank(r);
    std::lock_guard<std::mutex> lock(mu_);
    if (--running_ == 0) done_cv_.notify_all();
  }
}

void TpPipeline::do_submit(uint64_t ticket, const Batch& b, std::vector<RowSample> samples) {
  using Clock = std::chrono::steady_clock;
  auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  const auto start = Clock::now();
  BatchOutput out{ticket, {}, {}};
  out.logits.resize(static_cast<size_t>(ranks_[0].stage->output_floats(b)));
  batch_ = &b;
  out0_ = out.logits.data();
  for (Rank& k : ranks_) k.error = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_ = n_ranks() - 1;
    ++generation_;
  }
  start_cv_.notify_all();
  run_rank(0);
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return running_ == 0; });
  }
  batch_ = nullptr;
  // Every rank that failed is named: the cause (a failing op on one rank) and its echo (the
  // others' collectives timing out or finding the group broken) alike.
  std::vector<size_t> failed;
  for (size_t i = 0; i < ranks_.size(); ++i)
    if (ranks_[i].error) failed.push_back(i);
  if (!failed.empty()) {
    // A rank that failed inside a collective left the group broken for the others; the next batch
    // gets a fresh group (a fresh group of device Comms that cannot be made is logged; the stages
    // keep the broken one, and the next batch fails too).
    try {
      connect_ranks();
    } catch (const std::exception& e) {
      HERD_LOG_WARN("tp: cannot form a fresh group after a failed batch: ", e.what());
    }
    // One error, or every rank the same one (a bad batch: each refused it alike): that error, of
    // its own type (a caller tells bad input from a failure by it). Else each rank's, named.
    std::vector<std::string> whats;
    for (size_t i : failed) {
      try {
        std::rethrow_exception(ranks_[i].error);
      } catch (const std::exception& e) {
        whats.push_back(e.what());
      } catch (...) {
        whats.push_back("an unknown error");
      }
    }
    if (std::all_of(whats.begin(), whats.end(), [&](const std::string& w) { return w == whats[0]; }))
      std::rethrow_exception(ranks_[failed[0]].error);
    std::string all;
    for (size_t j = 0; j < failed.size(); ++j)
      all += (j ? "; rank " : "rank ") + std::to_string(failed[j]) + ": " + whats[j];
    throw std::runtime_error(all);
  }
  const double compute = ms(Clock::now() - start);
  double sample_ms = 0;
  if (!samples.empty()) {
    const auto t0 = Clock::now();
    for (size_t r = 0; r < samples.size(); ++r)
      out.tokens.push_back(samples[r].sampler->sample_with_draw(out.logits.data() + r * config_.n_vocab,
                                                                samples[r].draw));
    out.logits.clear();
    sample_ms = ms(Clock::now() - t0);
  }
  done_.push_back(std::move(out));
  const double stage_ms[1] = {compute + sample_ms};
  stats_.record(stage_ms, {}, {}, ms(Clock::now() - start), start, b.size());
}

std::optional<BatchOutput> TpPipeline::do_poll(int) {
  if (done_.empty()) throw std::logic_error("TpPipeline: poll without a batch in flight");
  BatchOutput o = std::move(done_.front());
  done_.pop_front();
  return o;
}

}  // namespace herd
