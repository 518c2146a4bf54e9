#include "coordinator/model_session.h"

#include <algorithm>
#include <thread>

#include "kernels/cpu/cpu_backend.h"

#include "coordinator/remote_pipeline.h"
#include "engine/tp_pipeline.h"

namespace herd {

int64_t default_context(const model::ModelConfig& c) { return std::min<int64_t>(c.n_ctx_train, 4096); }

int default_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

ModelSession ModelSession::open(const std::string& path, const SessionOptions& opts) {
  ModelSession s;
  s.file = model::GgufFile::open(path);
  s.config = model::load_config(*s.file);
  s.tokenizer = model::Tokenizer::from_gguf(*s.file);
  if (s.tokenizer->n_vocab() != s.config.n_vocab)
    throw std::runtime_error(path + ": the tokenizer has " + std::to_string(s.tokenizer->n_vocab()) +
                             " tokens but token_embd.weight has " + std::to_string(s.config.n_vocab) + " rows");
  const bool rank_devices = !opts.rank_device_backends.empty();
  if ((opts.device_backend || rank_devices) && !opts.workers.empty())
    throw std::invalid_argument("--device picks where this process computes; with --workers the workers compute: "
                                "give each its device (herd worker --device cuda:N)");
  if (rank_devices && opts.tp != static_cast<int>(opts.rank_device_backends.size()))
    throw std::invalid_argument("--device lists " + std::to_string(opts.rank_device_backends.size()) +
                                " GPUs, one per tensor-parallel rank: give --tp " +
                                std::to_string(opts.rank_device_backends.size()));
  if (rank_devices && !opts.device_comm)
    throw std::invalid_argument("--tp on GPUs joins the ranks over NCCL, and this herd was built without it (NCCL "
                                "was not found when it was configured)");
  if (opts.device_backend) {
    if (opts.tp != 1)
      throw std::invalid_argument("--tp " + std::to_string(opts.tp) + " on a GPU: one rank per GPU, so list them "
                                  "(--device cuda:0,cuda:1,...); two ranks cannot share one GPU");
    s.backend = opts.device_backend();
  } else {
    s.backend = make_cpu_backend(CpuBackendOptions{opts.exact, opts.isa});
  }
  s.backend->set_threads(opts.n_threads > 0 ? opts.n_threads : default_threads());
  const int64_t n_ctx = opts.n_ctx > 0 ? opts.n_ctx : default_context(s.config);
  if (opts.n_seq < 1 || opts.n_seq > 4096) throw std::invalid_argument("--parallel must be in 1..4096");
  const KvOptions kv{n_ctx, opts.n_seq, parse_kv_type(opts.kv_type)};
  if (opts.tp < 0 || opts.tp > 256)
    throw std::invalid_argument("--tp must be in 1..256 or auto, not " + std::to_string(opts.tp));
  if (opts.tp == 0 && (opts.workers.empty() || !opts.split.empty()))
    throw std::invalid_argument("--tp auto needs --workers and no --split (the planner chooses the groups and the "
                                "split); in one process give --tp N");
  const TpSync sync = parse_tp_sync(opts.tp_sync);
  if (opts.tp > 1 && !opts.split.empty() && opts.workers.empty())
    throw std::invalid_argument("not yet: --tp with --split runs over --workers only (one range per group of --tp "
                                "workers); in one process --tp is one stage");
  if (opts.tp > 1 && opts.workers.empty()) {
    // Each rank is a thread with a backend of its own; -t T gives each max(1, T / N) threads.
    TpOptions to;
    to.n_ranks = opts.tp;
    to.sync = sync;
    to.threads_per_rank = std::max(1, (opts.n_threads > 0 ? opts.n_threads : default_threads()) / opts.tp);
    if (rank_devices) {
      to.make_backend = [devices = opts.rank_device_backends](int r) { return devices.at(static_cast<size_t>(r))(); };
      to.device_comm = opts.device_comm;
    } else {
      to.make_backend = [exact = opts.exact, isa = opts.isa](int) { return make_cpu_backend(CpuBackendOptions{exact, isa}); };
    }
    s.pipeline = std::make_unique<TpPipeline>(*s.file, s.config, kv, std::move(to));
    return s;
  }
  if (!opts.plan_file.empty() && opts.workers.empty())
    throw std::invalid_argument("--plan runs a plan over --workers (or herd-cluster FILE --plan PLAN -- run ...)");
  if (!opts.plan_file.empty() && opts.plan_strategy != "optimal")
    throw std::invalid_argument("--plan and --plan-strategy: give one (the plan file names its strategy)");
  if (!opts.workers.empty()) {
    RemotePipelineOptions ro;
    if (!opts.plan_file.empty()) ro.plan = partition::read_plan_file(opts.plan_file);
    ro.workers = parse_worker_list(opts.workers);
    ro.split = opts.split;
    ro.plan_strategy = opts.plan_strategy;
    ro.print_plan = true;
    ro.show_progress = true;
    ro.isa = opts.isa;
    ro.exact = opts.exact;
    ro.n_ctx = n_ctx;
    ro.n_seq = kv.n_seq;
    ro.kv_type = kv.type;
    ro.take_over = opts.take_over;
    ro.tp = opts.tp;
    ro.tp_sync = sync;
    if (!(opts.step_timeout_s == -1 || (opts.step_timeout_s >= 0 && opts.step_timeout_s <= 86400)))
      throw std::invalid_argument("--step-timeout must be in 0..86400 seconds (0 = off)");
    if (!(opts.wait_timeout_s >= 0 && opts.wait_timeout_s <= 86400))
      throw std::invalid_argument("--wait-timeout must be in 0..86400 seconds");
    ro.step_timeout_ms = opts.step_timeout_s < 0 ? -1 : static_cast<int>(opts.step_timeout_s * 1000);
    check_worker_loss_policy(opts.on_worker_loss);
    ro.on_worker_loss = opts.on_worker_loss;
    ro.wait_timeout_ms = static_cast<int>(opts.wait_timeout_s * 1000);
    if (opts.act_dtype != "f32" && opts.act_dtype != "f16")
      throw std::invalid_argument("--act-dtype must be f32 or f16, not '" + opts.act_dtype + "'");
    ro.act_dtype = opts.act_dtype == "f16" ? transport::WireDType::F16 : transport::WireDType::F32;
    s.pipeline = std::make_unique<RemotePipeline>(*s.file, s.config, ro);
    return s;
  }
  std::vector<model::LayerRange> ranges;
  if (!opts.split.empty()) ranges = parse_split(opts.split, s.config.n_layers);
  s.pipeline = std::make_unique<LocalPipeline>(*s.file, s.config, *s.backend, kv, ranges);
  return s;
}

}  // namespace herd
