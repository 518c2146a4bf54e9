#include "partition/plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "partition/memory_model.h"
#include "partition/strategies.h"
#include "partition/tp_model.h"

namespace herd::partition {

std::string gb(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GB", static_cast<double>(bytes) / 1e9);
  return buf;
}

StagePlan make_tp_stage(const std::vector<int>& ranks, int64_t first, int64_t end) {
  StagePlan s = make_stage(ranks.empty() ? 0 : ranks.front(), first, end);
  if (ranks.size() >= 2) s.ranks = ranks;
  return s;
}

namespace {

// The devices a stage runs on: its group's ranks, or its device.
std::vector<int> stage_devices(const StagePlan& s) { return s.ranks.empty() ? std::vector<int>{s.device} : s.ranks; }

}  // namespace

std::vector<double> plan_working_sets(const Plan& p, const ModelShape& m, const Cluster& c, const PlanOptions& o) {
  std::vector<double> dev(c.devices.size(), 0.0);
  std::map<std::string, double> host_bytes;
  std::set<std::string> streaming;
  auto host_of = [&](int d) {
    const std::string& h = c.devices[static_cast<size_t>(d)].host;
    return h.empty() ? "\x01" + std::to_string(d) : h;  // no host: a host of its own
  };
  const double kv_token = static_cast<double>(m.kv_bytes_per_token_layer(o.kv_elem_bytes)) *
                          static_cast<double>(o.n_ctx) / 2.0 * static_cast<double>(std::max<int64_t>(o.n_parallel, 1));
  for (const StagePlan& s : p.stages) {
    double bytes = 0;
    for (int64_t l = s.first; l < s.end; ++l) bytes += m.layer_read_bytes(l, 1) + kv_token;
    if (s.end == m.n_layers()) bytes += static_cast<double>(m.output_matrix.bytes);
    const std::vector<int> devs = stage_devices(s);
    if (devs.size() == 1 && s.end > s.first) {
      const StageFit fit = stage_fit(m, c.devices[static_cast<size_t>(s.device)], s.first, s.end, o);
      if (fit.fits && fit.streamed > 0) streaming.insert(host_of(s.device));
    }
    for (int d : devs) host_bytes[host_of(d)] += bytes / static_cast<double>(devs.size());
  }
  for (const StagePlan& s : p.stages)
    for (int d : stage_devices(s))
      if (!streaming.count(host_of(d))) dev[static_cast<size_t>(d)] = host_bytes[host_of(d)];
  return dev;
}

void finish_plan(Plan& p, const ModelShape& m, const Cluster& cluster, const PlanOptions& o,
                 const std::string& unused_reason) {
  // The devices as this plan runs them: each with its host's working set, where a cache curve
  // gives its matvec rates (plan_working_sets). Without any curve, the cluster itself.
  bool curves = false;
  for (const DeviceProfile& d : cluster.devices) curves = curves || !d.matvec_cached_Bps.empty();
  Cluster priced;
  std::vector<double> sets;
  if (curves) {
    priced = cluster;
    sets = plan_working_sets(p, m, cluster, o);
    for (size_t i = 0; i < priced.devices.size(); ++i) priced.devices[i].working_set_bytes = sets[i];
  }
  const Cluster& c = curves ? priced : cluster;
  const double k = static_cast<double>(std::max<int64_t>(o.n_parallel, 1));
  Prediction& r = p.pred;
  r = Prediction{};
  if (p.stages.empty()) return;
  const double hb = hop_bytes_per_token(m, o);
  double busy_sum = 0;
  r.coord_in_s = control_in_s(c, stage_devices(p.stages.front()));
  r.coord_out_s = control_s(c.link(p.stages.back().device, -1));
  r.latency_s = r.coord_in_s + r.coord_out_s;
  r.ttft_s = r.latency_s;
  for (size_t i = 0; i < p.stages.size(); ++i) {
    StagePlan& s = p.stages[i];
    const DeviceProfile& d = c.devices[static_cast<size_t>(s.device)];
    s.working_set_bytes = 0;
    for (int dv : stage_devices(s))
      if (!c.devices[static_cast<size_t>(dv)].matvec_cached_Bps.empty())
        s.working_set_bytes = std::max(s.working_set_bytes, c.devices[static_cast<size_t>(dv)].working_set_bytes);
    if (s.ranks.size() >= 2) {
      const TpGroup g = make_tp_group(m, c, s.ranks);
      s.device = s.ranks.front();
      s.rank_weights = g.weights;
      s.shards = g.shards;
      s.rank_mem.clear();
      for (size_t q = 0; q < s.ranks.size(); ++q)
        s.rank_mem.push_back(tp_rank_memory(m, c.devices[static_cast<size_t>(s.ranks[q])], g.shards, static_cast<int>(q),
                                            s.first, s.end, o));
      s.mem = s.rank_mem.front();
      const TpStageCost t = tp_stage_decode(m, c, g, s.first, s.end, o);
      s.decode_s = t.total_s();
      s.sync_s = t.sync_s;
      s.sync_bytes = t.sync_bytes;
      s.n_all_reduce = t.n_all_reduce;
      s.prefill_s = tp_stage_prefill_s(m, c, g, s.first, s.end, o);
    } else {
      s.ranks.clear();
      const StageFit fit = stage_fit(m, d, s.first, s.end, o);
      s.streamed = fit.fits ? fit.streamed : 0;
      s.mem = s.streamed > 0 ? streamed_stage_memory(m, d, s.first, s.end, fit.resident, o)
                             : stage_memory(m, d, s.first, s.end, o);
      s.decode_s = stage_decode_s(m, d, s.first, s.end, o);
      s.prefill_s = stage_prefill_s(m, d, s.first, s.end, o);
      s.disk_s = 0;
      for (int64_t l = s.end - s.streamed; l < s.end; ++l) s.disk_s += m.layer_read_bytes(l, 1) / d.disk_Bps;
      if (s.streamed > 0 && s.end == m.n_layers()) s.disk_s += static_cast<double>(m.output_matrix.bytes) / d.disk_Bps;
      // A prompt reads each streamed layer from disk once per n_batch chunk.
      if (s.streamed > 0) {
        const double chunks = std::max(1.0, std::ceil(static_cast<double>(o.n_prompt) /
                                                      static_cast<double>(std::max<int64_t>(o.n_batch, 1))));
        s.prefill_s = std::max(s.prefill_s, chunks * s.disk_s);
      }
    }
    r.latency_s += s.decode_s;
    r.ttft_s += s.prefill_s;
    r.bottleneck_s = std::max(r.bottleneck_s, s.decode_s);
    busy_sum += s.decode_s;
    if (i + 1 < p.stages.size()) {
      const auto to = stage_devices(p.stages[i + 1]);
      const HopCost hc = group_hop(c, s.device, to, hb);
      HopPrediction h{s.device, to.front(), hb, hc.decode_s, hc.busy_s};
      r.latency_s += h.decode_s;
      r.ttft_s += group_hop(c, s.device, to, hb * static_cast<double>(o.n_prompt)).decode_s;
      r.bottleneck_s = std::max(r.bottleneck_s, h.busy_s);
      r.hops.push_back(h);
    }
  }
  r.cycle_s = std::max(r.latency_s, k * r.bottleneck_s);
  r.token_s = r.cycle_s / k;
  r.decode_tok_s = k / r.cycle_s;
  r.prefill_tok_s = static_cast<double>(o.n_prompt) / r.ttft_s;
  r.bubble = 1.0 - k * busy_sum / (static_cast<double>(p.stages.size()) * r.cycle_s);
  std::set<int> used, listed;
  for (const auto& s : p.stages)
    for (int d : stage_devices(s)) used.insert(d);
  for (const auto& e : p.excluded) listed.insert(e.device);
  for (int i = 0; i < static_cast<int>(c.devices.size()); ++i)
    if (!used.count(i) && !listed.count(i)) p.excluded.push_back({i, unused_reason});
  std::sort(p.excluded.begin(), p.excluded.end(), [](const Excluded& a, const Excluded& b) { return a.device < b.device; });
}

double plan_objective(const Plan& p) { return p.pred.token_s; }

std::vector<std::string> validate_plan(const Plan& p, const ModelShape& m, const Cluster& c, const PlanOptions& o) {
  std::vector<std::string> errs;
  if (p.stages.empty()) errs.push_back("plan has no stages");
  int64_t next = 0;
  std::set<int> seen;
  for (size_t i = 0; i < p.stages.size(); ++i) {
    const StagePlan& s = p.stages[i];
    const std::string where = "stage " + std::to_string(i);
    if (s.device < 0 || s.device >= static_cast<int>(c.devices.size())) {
      errs.push_back(where + ": device index " + std::to_string(s.device) + " out of range");
      continue;
    }
    if (!s.ranks.empty() && s.ranks.front() != s.device)
      errs.push_back(where + ": a tensor-parallel group's leader must be its first rank");
    for (int dv : stage_devices(s))
      if (dv < 0 || dv >= static_cast<int>(c.devices.size())) errs.push_back(where + ": device index " + std::to_string(dv) + " out of range");
      else if (!seen.insert(dv).second) errs.push_back(where + ": device " + c.devices[static_cast<size_t>(dv)].name + " used twice");
    if (s.first != next) errs.push_back(where + ": starts at layer " + std::to_string(s.first) + ", expected " + std::to_string(next));
    if (s.end <= s.first) errs.push_back(where + ": empty layer range");
    if (s.end > m.n_layers()) errs.push_back(where + ": ends past the model's " + std::to_string(m.n_layers()) + " layers");
    next = s.end;
    const int64_t f0 = std::max<int64_t>(0, s.first), e0 = std::min(s.end, m.n_layers());
    if (s.ranks.size() >= 2) {
      bool in_range = true;
      for (int dv : s.ranks) in_range &= dv >= 0 && dv < static_cast<int>(c.devices.size());
      if (!in_range || e0 <= f0) continue;
      TpGroup g;
      try {
        g = make_tp_group(m, c, s.ranks);
      } catch (const std::invalid_argument& e) {
        errs.push_back(where + ": " + e.what());
        continue;
      }
      for (size_t q = 0; q < s.ranks.size(); ++q) {
        const DeviceProfile& d = c.devices[static_cast<size_t>(s.ranks[q])];
        const StageMemory mem = tp_rank_memory(m, d, g.shards, static_cast<int>(q), f0, e0, o);
        if (mem.total() > d.free_bytes)
          errs.push_back(where + " rank " + std::to_string(q) + " on " + d.name + ": needs " + gb(mem.total()) + ", has " +
                         gb(d.free_bytes) + " free");
      }
      continue;
    }
    const DeviceProfile& d = c.devices[static_cast<size_t>(s.device)];
    const StageMemory mem = stage_memory(m, d, f0, e0, o);
    if (mem.total() > d.free_bytes && !stage_fit(m, d, f0, e0, o).fits)
      errs.push_back(where + " on " + d.name + ": needs " + gb(mem.total()) + ", has " + gb(d.free_bytes) + " free" +
                     (o.stream && d.disk_Bps > 0 ? " (even streaming its layers from disk)" : ""));
  }
  if (next != m.n_layers()) errs.push_back("layers end at " + std::to_string(next) + ", the model has " + std::to_string(m.n_layers()));
  return errs;
}

namespace {

// The most leading layers any order of the devices can cover: cover[S] = max over d in S of
// cover[S \ d] + the layers d holds from there (covering more never hurts the devices after,
// since a stage's memory only grows with its range). Exact for <= 16 devices; beyond that the
// given order only.
int64_t max_coverable(const ModelShape& m, const Cluster& c, const PlanOptions& o) {
  const int n = static_cast<int>(c.devices.size());
  const int64_t L = m.n_layers();
  if (n > 16) {
    int64_t pos = 0;
    for (const auto& d : c.devices) pos += max_layers_from(m, d, pos, o);
    return std::min(pos, L);
  }
  std::vector<int64_t> cover(size_t{1} << n, 0);
  for (uint32_t s = 1; s < (1u << n); ++s)
    for (int d = 0; d < n; ++d)
      if (s & (1u << d)) {
        const int64_t from = cover[s ^ (1u << d)];
        if (from >= L) {
          cover[s] = L;
          break;
        }
        cover[s] = std::max(cover[s], from + max_layers_from(m, c.devices[static_cast<size_t>(d)], from, o));
      }
  return cover.back();
}

}  // namespace

bool model_fits(const ModelShape& m, const Cluster& c, const PlanOptions& o) { return max_coverable(m, c, o) >= m.n_layers(); }

std::string shortfall_report(const ModelShape& m, const Cluster& c, const PlanOptions& o, const std::string& what) {
  const int64_t L = m.n_layers();
  char line[512];
  std::string out = what + ": " + m.name + " (" + gb(m.total_bytes()) + " of weights, KV cache " +
                    gb(kv_bytes(m, L, o)) + " at context " + std::to_string(o.n_ctx) + " x " +
                    std::to_string(o.n_parallel) + (o.n_parallel == 1 ? " sequence, " : " sequences, ") + o.kv_type + ") does not fit:\n";
  double free_sum = 0;
  uint64_t need_sum = m.total_bytes() + kv_bytes(m, L, o);
  for (size_t i = 0; i < c.devices.size(); ++i) {
    const DeviceProfile& d = c.devices[i];
    free_sum += static_cast<double>(d.free_bytes);
    const StageMemory fixed = stage_memory(m, d, 1, 1, o);  // overhead + margin of an empty stage
    need_sum += fixed.overhead + fixed.margin;
    const int64_t mid = max_layers_from(m, d, std::min<int64_t>(1, L - 1), o);
    // The device's share if layers were split by free memory, as llama.cpp and exo do.
    double total_free = 0;
    for (const auto& e : c.devices) total_free += static_cast<double>(e.free_bytes);
    const int64_t share = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(L) * static_cast<double>(d.free_bytes) / total_free + 0.5));
    const int64_t first = std::min<int64_t>(1, L - share);
    const StageMemory sm = stage_memory(m, d, first, first + share, o);
    std::snprintf(line, sizeof line, "  %-14s %10s free: holds at most %lld of %lld layers", d.name.c_str(),
                  gb(d.free_bytes).c_str(), (long long)mid, (long long)L);
    out += line;
    if (sm.total() > d.free_bytes)
      out += "; its memory-proportional share of " + std::to_string(share) + " layers needs " + gb(sm.total()) +
             ", short " + gb(sm.total() - d.free_bytes);
    out += "\n";
  }
  const int64_t covered = max_coverable(m, c, o);
  out += "  together: at most " + std::to_string(covered) + " of " + std::to_string(L) + " layers in any order";
  if (static_cast<double>(need_sum) > free_sum)
    out += "; short about " + gb(need_sum - static_cast<uint64_t>(free_sum)) + " in total";
  out += "\nwhat would make it fit:\n";
  int n_fixes = 0;
  // A smaller type (the same hyper-parameters; exact for named shapes, an estimate for a GGUF).
  for (const char* t : {"Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"}) {
    ModelShape alt = shape_from_config(m.config, t);
    if (alt.total_bytes() >= m.total_bytes()) continue;
    if (model_fits(alt, c, o)) {
      out += "  - a smaller type: " + std::string(t) + " (" + gb(alt.total_bytes()) + " of weights) fits\n";
      ++n_fixes;
      break;
    }
  }
  // A shorter context.
  if (o.n_ctx > 256) {
    PlanOptions q = o;
    q.n_ctx = 256;
    if (model_fits(m, c, q)) {
      int64_t lo = 256, hi = o.n_ctx - 1;
      while (lo < hi) {
        q.n_ctx = (lo + hi + 1) / 2;
        if (model_fits(m, c, q)) lo = q.n_ctx;
        else hi = q.n_ctx - 1;
      }
      out += "  - a shorter context: --ctx " + std::to_string(lo) + " fits\n";
      ++n_fixes;
    }
  }
  if (o.kv_elem_bytes > 2) {
    PlanOptions q = o;
    q.kv_elem_bytes = 2;
    q.kv_type = "f16";
    if (model_fits(m, c, q)) out += "  - an f16 KV cache (--kv-type f16) fits\n", ++n_fixes;
  }
  if (o.n_parallel > 1) {
    PlanOptions q = o;
    q.n_parallel = 1;
    if (model_fits(m, c, q)) out += "  - one sequence at a time (--parallel 1) fits\n", ++n_fixes;
  }
  if (!o.stream) {
    PlanOptions q = o;
    q.stream = true;
    if (model_fits(m, c, q)) out += "  - streaming layers from disk (without --no-stream) fits\n", ++n_fixes;
  }
  // Another device: the smallest extra host (CPU, same link as the others) that makes it fit.
  {
    Cluster more = c;
    DeviceProfile extra;
    extra.name = "extra";
    extra.host = "extra";
    extra.kind = DeviceKind::Cpu;
    extra.bandwidth_Bps = 60e9;
    extra.flops = 1e12;
    extra.overhead_bytes = 128ull << 20;
    extra.total_bytes = extra.free_bytes = uint64_t{1} << 50;
    more.devices.push_back(extra);
    if (model_fits(m, more, o)) {
      uint64_t lo = 1ull << 20, hi = uint64_t{1} << 50;
      while (hi - lo > (64ull << 20)) {
        const uint64_t mid = lo + (hi - lo) / 2;
        more.devices.back().free_bytes = more.devices.back().total_bytes = mid;
        if (model_fits(m, more, o)) hi = mid;
        else lo = mid;
      }
      out += "  - another device with at least " + gb(hi) + " free\n";
      ++n_fixes;
    }
  }
  if (n_fixes == 0) out += "  - nothing simple: even one layer does not fit on any device\n";
  return out;
}

}  // namespace herd::partition
