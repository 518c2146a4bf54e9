#include "coordinator/plan_adapter.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "common/log.h"
#include "partition/strategies.h"

namespace herd {

namespace {

std::string tok_s_text(double tok_s) {
  char b[32];
  std::snprintf(b, sizeof b, tok_s >= 100 ? "%.0f" : "%.1f", tok_s);
  return b;
}

}  // namespace

partition::DeviceProfile device_profile(const cluster::WorkerProfile& w, const std::string& name) {
  partition::DeviceProfile d;
  d.name = name;
  d.host = name;  // every worker its own host: the links are per worker
  d.kind = partition::DeviceKind::Cpu;
  d.free_bytes = w.free_ram_bytes;
  d.total_bytes = std::max(w.total_ram_bytes, w.free_ram_bytes);
  d.bandwidth_Bps = w.read_bw_Bps > 0 ? w.read_bw_Bps : 10e9;
  d.flops = w.matmul_flops > 0 ? w.matmul_flops : 50 * d.bandwidth_Bps;
  // What the worker process held when it answered, else a cluster file's cpu device default.
  d.overhead_bytes = w.process_bytes > 0 ? w.process_bytes : 128ull << 20;
  d.attn_Bps = w.attn_Bps;
  // A worker that streams but measured no disk (no -m: its weights come later) is planned at an
  // assumed SATA-SSD speed, and says so; one that does not stream never gets more than its memory.
  d.disk_Bps = !w.streams ? 0 : w.disk_Bps > 0 ? w.disk_Bps : kAssumedWorkerDiskBps;
  d.op_overhead_s = w.op_overhead_s;
  for (const auto& m : w.matvec) d.matvec_Bps[m.type] = m.bytes_per_s;
  d.probe = w.source;
  if (w.streams && !(w.disk_Bps > 0)) d.probe += " (disk not measured: assumed 0.5 GB/s)";
  return d;
}

partition::LinkProfile link_profile(const cluster::LinkStats& s) {
  return {s.latency_s, s.bandwidth_Bps > 0 ? s.bandwidth_Bps : 125e6};
}

namespace {

// The name of device d: its worker, or with groups "workers 1-2".
std::string device_name(const WorkerSet& workers, size_t d, size_t group) {
  if (group <= 1) return "worker " + std::to_string(workers[d].index + 1);
  return "workers " + std::to_string(workers[d * group].index + 1) + "-" +
         std::to_string(workers[d * group + group - 1].index + 1);
}

// The workers as the planner's devices: one per worker, or with group > 1 one per group of `group`
// consecutive workers (their memory and rates summed), and the links between them.
partition::Cluster make_cluster(const WorkerSet& workers,
                                const std::map<std::pair<std::string, std::string>, cluster::LinkStats>& measured_hops,
                                size_t group) {
  const auto& links = workers.links();
  const size_t n_dev = workers.size() / group;
  partition::Cluster c;
  c.coordinator_host = "coordinator";
  for (size_t d = 0; d < n_dev; ++d) {
    partition::DeviceProfile p = device_profile(workers[d * group].hello.profile, device_name(workers, d, group));
    for (size_t r = 1; r < group; ++r) {  // a tensor-parallel group: its members' memory and rates summed
      const partition::DeviceProfile m = device_profile(workers[d * group + r].hello.profile, p.name);
      p.free_bytes += m.free_bytes;
      p.total_bytes += m.total_bytes;
      p.bandwidth_Bps += m.bandwidth_Bps;
      p.flops += m.flops;
      p.attn_Bps += m.attn_Bps;
      for (auto& [t, rate] : p.matvec_Bps) rate += m.matvec_rate(t);
    }
    c.devices.push_back(std::move(p));
  }
  auto key = [](const std::string& a, const std::string& b) { return a < b ? std::make_pair(a, b) : std::make_pair(b, a); };
  for (size_t i = 0; i < n_dev; ++i) {
    const size_t wi = i * group;
    c.links[key(c.coordinator_host, c.devices[i].host)] = link_profile(links[workers[wi].index]);
    for (size_t j = i + 1; j < n_dev; ++j) {
      const size_t wj = j * group;
      // Measured by the stage itself on an earlier assignment, else estimated from the two
      // coordinator links: the slower latency and the lower bandwidth.
      partition::LinkProfile l;
      const auto& li = links[workers[wi].index];
      const auto& lj = links[workers[wj].index];
      if (auto it = measured_hops.find({workers[wi].address, workers[wj].address}); it != measured_hops.end()) {
        l = link_profile(it->second);
      } else {
        l.latency_s = std::max(li.latency_s, lj.latency_s);
        l.bandwidth_Bps = std::min(link_profile(li).bandwidth_Bps, link_profile(lj).bandwidth_Bps);
      }
      c.links[key(c.devices[i].host, c.devices[j].host)] = l;
    }
  }
  return c;
}

}  // namespace

SplitPlan plan_split(const partition::ModelShape& shape, const WorkerSet& workers,
                     const std::map<std::pair<std::string, std::string>, cluster::LinkStats>& measured_hops,
                     const SplitRequest& request, size_t group) {
  if (group < 1 || workers.size() % group != 0)
    throw std::invalid_argument(std::to_string(workers.size()) + " workers do not form groups of " + std::to_string(group));
  // Tensor-parallel groups under `optimal`: the planner's TP model (partition/tp_model.h) over the
  // individual workers, which prices each group's all-reduces on its ranks' links; the other
  // strategies plan each group as one device (members summed, no sync cost).
  const bool tp_model = group > 1 && request.strategy == "optimal";
  partition::Cluster c = make_cluster(workers, measured_hops, tp_model ? 1 : group);
  partition::PlanOptions o;
  o.n_ctx = request.n_ctx;
  o.n_batch = std::min<int64_t>(512, request.n_ctx);
  o.n_prompt = std::min<int64_t>(512, request.n_ctx);
  o.act_bytes = request.act_bytes;
  o.n_parallel = request.n_seq;
  o.kv_type = request.kv_type;
  o.kv_elem_bytes = partition::kv_elem_bytes(request.kv_type);
  o.keep_order = true;  // the stages follow --workers
  o.tp_sync = request.tp_sync;
  partition::Strategy strategy = nullptr;
  try {
    strategy = partition::find_strategy(request.strategy);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(std::string("--plan-strategy: ") + e.what());
  }
  SplitPlan out;
  try {
    out.plan = tp_model ? partition::plan_tp(shape, c, o, static_cast<int>(group)) : strategy(shape, c, o);
  } catch (const std::invalid_argument& e) {  // a model TP cannot split this many ways
    throw partition::PlanError(e.what());
  }  // partition::PlanError passes through
  const partition::Plan& p = out.plan;

  // The plan's stages in pipeline order; workers it leaves out get nothing.
  std::string line = "plan:";
  for (size_t s = 0; s < p.stages.size(); ++s) {
    const auto& st = p.stages[s];
    // Group index d: with the TP model the plan's devices are workers (st.device the leader).
    const size_t d = tp_model ? static_cast<size_t>(st.device) / group : static_cast<size_t>(st.device);
    const model::LayerRange range{st.first, st.end, s == 0, s + 1 == p.stages.size()};
    for (size_t r = 0; r < group; ++r) {
      out.stage_workers.push_back(d * group + r);
      out.ranges.push_back(range);
    }
    const std::string name = device_name(workers, d, group);
    line += std::string(s ? ", " : " ") + name + " " + layers_text(range);
    HERD_LOG_INFO("plan (", p.strategy, "): ", name, " (", workers[d * group].address, group > 1 ? ", ..." : "", ") ",
                  layers_text(range), ": needs ", partition::gb(st.mem.total()), " of ",
                  partition::gb(c.devices[static_cast<size_t>(st.device)].free_bytes), " free, ", st.decode_s * 1e3, " ms per token");
  }
  line += "; predicted " + tok_s_text(p.pred.decode_tok_s) + " tok/s";
  for (const auto& e : p.excluded) {
    const size_t d = tp_model ? static_cast<size_t>(e.device) / group : static_cast<size_t>(e.device);
    if (tp_model && static_cast<size_t>(e.device) % group != 0) continue;  // named once, by its group's leader
    const std::string name = device_name(workers, d, group);
    HERD_LOG_INFO("plan: ", name, " (", workers[d * group].address, ") gets no layers: ", e.reason);
    const std::string why = e.reason.rfind("left out: ", 0) == 0 ? e.reason.substr(10) : e.reason;
    line += "; " + name + " unused (" + why + ")";
  }
  HERD_LOG_INFO("plan (", p.strategy, "): predicted ", p.pred.decode_tok_s, " tok/s decode, ", p.pred.ttft_s * 1e3,
                " ms to the first token of a ", o.n_prompt, "-token prompt");
  out.cluster = std::move(c);
  out.options = o;
  out.summary = line;
  return out;
}

std::vector<model::LayerRange> split_by_memory(int64_t n_layers, const std::vector<uint64_t>& free_bytes) {
  const auto n = static_cast<int64_t>(free_bytes.size());
  if (n == 0) throw std::invalid_argument("no workers");
  if (n > n_layers)
    throw std::invalid_argument(std::to_string(n) + " workers but the model has only " + std::to_string(n_layers) +
                                " layers");
  // Everyone gets one layer; the rest go by share of free memory (equal shares when unknown).
  long double total = 0;
  for (uint64_t b : free_bytes) total += static_cast<long double>(b);
  std::vector<int64_t> count(static_cast<size_t>(n), 1);
  std::vector<std::pair<long double, int64_t>> rem;
  const int64_t spare = n_layers - n;
  int64_t given = 0;
  for (int64_t i = 0; i < n; ++i) {
    const long double share = total > 0 ? static_cast<long double>(free_bytes[i]) / total : 1.0L / n;
    const long double want = share * spare;
    const auto whole = static_cast<int64_t>(want);
    count[i] += whole;
    given += whole;
    rem.push_back({want - whole, -i});
  }
  std::sort(rem.rbegin(), rem.rend());
  for (int64_t k = 0; given < spare; ++k, ++given) ++count[static_cast<size_t>(-rem[static_cast<size_t>(k)].second)];
  std::vector<model::LayerRange> out;
  int64_t first = 0;
  for (int64_t i = 0; i < n; ++i) {
    out.push_back({first, first + count[i], i == 0, i + 1 == n});
    first += count[i];
  }
  return out;
}

}  // namespace herd
