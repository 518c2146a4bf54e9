// herd plan: split a model's layers across the devices of a cluster file and predict the speed.
#include <algorithm>
#include <cstdio>
#include <fstream>

#include "launch/args.h"
#include "launch/cluster_figures.h"
#include "launch/commands.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "partition/model_shape.h"
#include "partition/plan_report.h"
#include "partition/shapes.h"
#include "partition/strategies.h"
#include "partition/tp_model.h"

namespace herd::cli {

int cmd_plan(const Args& args) {
  std::string model_path, shape, type = "Q4_K_M", cluster_path, strategy = "optimal", svg, kv_type = "f16";
  int64_t n_ctx = 4096, n_parallel = 1, n_prompt = 512, n_batch = 512;
  bool compare = false, json = false, no_stream = false;
  std::string strategy_names;
  for (const auto& s : partition::strategies()) strategy_names += (strategy_names.empty() ? "" : ", ") + std::string(s.name);
  ArgParser p("herd plan (-m MODEL.gguf | --shape NAME [--type T]) --cluster FILE [options]",
              "Splits the model's layers across the cluster's devices and predicts decode and prefill speed, "
              "time to first token and the bytes per token on each link. The cluster file format is in docs/planner.md.");
  p.add("-m,--model", "FILE", "a GGUF model (exact tensor sizes)", &model_path);
  p.add("--shape", "NAME", "a known model shape instead of a file: " + partition::known_shape_names(), &shape);
  p.add("--type", "T", "quant type for --shape: " + partition::known_types(), &type);
  p.add("--cluster", "FILE", "devices and links (required)", &cluster_path);
  p.add("--strategy", "S", "one of " + strategy_names, &strategy);
  p.add("-c,--ctx", "N", "context per sequence the KV cache is sized for", &n_ctx);
  p.add("--parallel", "K", "sequences in flight (KV cache each; pipeline micro-batches)", &n_parallel);
  p.add("--kv-type", "T", "KV cache element type: f16 (the default of run, chat and workers), f32, q8_0", &kv_type);
  p.add("--prompt", "N", "prompt length for the prefill / time-to-first-token prediction", &n_prompt);
  p.add("-b,--batch", "N", "prompt tokens per forward (scratch size)", &n_batch);
  int tp = 0, tp_max = 0;
  std::string tp_sync = "f32";
  p.add("--tp", "N", "tensor parallelism in groups of exactly N consecutive devices, the groups a pipeline (the shape "
        "`--workers ... --tp N` runs; overrides --strategy; 0 = let --strategy decide)", &tp, 0, 256);
  p.add("--tp-max", "N", "optimal also tries tensor-parallel groups of up to N consecutive devices "
        "(1 = pipeline only, 0 = up to every device)", &tp_max, 0, 256);
  p.add("--tp-sync", "f32|f16|q8", "precision of the tensor-parallel partial sums (4, 2 or 34/32 bytes per value)", &tp_sync);
  p.add("--compare", "", "every strategy side by side, and the tensor-parallel groupings optimal tries", &compare);
  p.add("--no-stream", "",
        "never plan layers streamed from disk (devices with disk= may otherwise hold more layers than their memory, "
        "reading the rest from the model file every token)",
        &no_stream);
  p.add("--svg", "FILE", "write the layer map and a per-token timeline", &svg);
  p.add("--json", "", "machine-readable output", &json);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  if (model_path.empty() == shape.empty()) throw UsageError("give either -m MODEL.gguf or --shape NAME (see --help)");
  if (cluster_path.empty()) throw UsageError("--cluster FILE is required (see --help)");
  if (n_ctx <= 0 || n_ctx > (int64_t{1} << 24)) throw UsageError("--ctx must be in 1 .. 16M");
  if (n_parallel <= 0 || n_parallel > 4096) throw UsageError("--parallel must be in 1 .. 4096");
  if (n_prompt <= 0 || n_batch <= 0) throw UsageError("--prompt and --batch must be positive");
  if (compare && tp > 0) throw UsageError("--tp N and --compare: give one (--compare lists every grouping optimal tries)");

  partition::PlanOptions o;
  o.n_ctx = n_ctx;
  o.stream = !no_stream;
  o.n_parallel = n_parallel;
  o.n_prompt = n_prompt;
  o.n_batch = n_batch;
  try {
    o.kv_elem_bytes = partition::kv_elem_bytes(kv_type);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  o.kv_type = kv_type;
  try {
    o.tp_sync = parse_tp_sync(tp_sync);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }

  partition::ModelShape m;
  if (!model_path.empty()) {
    auto f = model::GgufFile::open(model_path, {.map_all = false});
    m = partition::shape_from_gguf(*f, model::load_config(*f));
  } else {
    try {
      m = partition::shape_from_name(shape, type);
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
  }
  partition::Cluster c = partition::load_cluster(cluster_path);
  // Worker lines without figures: those on this host are probed now; others are an error naming them.
  std::vector<uint32_t> types;
  for (const auto& layer : m.layer_matrix_bytes)
    for (const auto& tb : layer)
      if (std::find(types.begin(), types.end(), tb.type) == types.end()) types.push_back(tb.type);
  if (std::find(types.begin(), types.end(), m.output_matrix.type) == types.end()) types.push_back(m.output_matrix.type);
  fill_local_figures(c, types, "herd plan");
  partition::require_figures(c, cluster_path);
  o.max_tp = tp_max == 0 ? static_cast<int64_t>(c.devices.size()) : tp_max;

  std::vector<partition::StrategyOutcome> outcomes;
  if (compare) {
    for (const auto& s : partition::strategies()) {
      partition::StrategyOutcome r{s.name, std::nullopt, ""};
      try {
        r.plan = s.fn(m, c, o);
      } catch (const partition::PlanError& e) {
        r.error = e.what();
      }
      outcomes.push_back(std::move(r));
    }
    const int max_tp = static_cast<int>(std::min<int64_t>(o.max_tp, partition::max_tp_ranks(m)));
    for (const auto& groups : partition::tp_groupings(static_cast<int>(c.devices.size()), max_tp)) {
      partition::StrategyOutcome r{partition::grouping_name(groups), std::nullopt, ""};
      try {
        r.plan = partition::plan_tp_grouping(m, c, o, groups);
        r.plan->strategy = r.strategy;
      } catch (const partition::PlanError& e) {
        r.error = e.what();
      } catch (const std::invalid_argument& e) {
        r.error = std::string("\n") + e.what();  // format_compare shows the second line
      }
      outcomes.push_back(std::move(r));
    }
  } else if (tp > 0) {
    outcomes.push_back({"tp " + std::to_string(tp), partition::plan_tp(m, c, o, tp), ""});  // PlanError: exit 1
  } else {
    partition::Strategy fn;
    try {
      fn = partition::find_strategy(strategy);
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
    outcomes.push_back({strategy, fn(m, c, o), ""});  // PlanError: the shortfall, exit 1
  }

  if (!svg.empty()) {
    std::ofstream out(svg);
    out << partition::plan_svg(outcomes, m, c, o);
    if (!out) throw std::runtime_error("cannot write " + svg);
  }
  if (json) {
    std::fputs(partition::plan_json(outcomes, m, c, o).c_str(), stdout);
  } else if (compare) {
    std::fputs(partition::format_compare(outcomes, m, c, o).c_str(), stdout);
  } else {
    std::fputs(partition::format_plan(*outcomes[0].plan, m, c, o).c_str(), stdout);
  }
  // Devices the plan models but this herd cannot run: one line each (stderr under --json, so the
  // JSON stays one document).
#if defined(HERD_HAVE_CUDA)
  const bool cuda_built = true;
#else
  const bool cuda_built = false;
#endif
  const auto cannot = partition::devices_herd_cannot_run(c, cuda_built);
  if (!cannot.empty() && !json) std::fputs("\n", stdout);
  for (const auto& line : cannot) std::fprintf(json ? stderr : stdout, "note: %s\n", line.c_str());
  return 0;
}

}  // namespace herd::cli
