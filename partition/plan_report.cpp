#include "partition/plan_report.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>

#include "kernels/dtype.h"
#include "partition/piped_ring.h"
#include "partition/strategies.h"
#include "partition/tp_model.h"

namespace herd::partition {
namespace {

std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

double gbf(uint64_t b) { return static_cast<double>(b) / 1e9; }

std::string layers_str(const StagePlan& s) {
  return fmt("%lld-%lld (%lld)", (long long)s.first, (long long)s.end - 1, (long long)s.size());
}

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') o += '\\', o += ch;
    else if (ch == '\n') o += "\\n";
    else if (static_cast<unsigned char>(ch) < 0x20) o += fmt("\\u%04x", ch);
    else o += ch;
  }
  return o + "\"";
}

std::string xml(const std::string& s) {
  std::string o;
  for (char ch : s) {
    if (ch == '<') o += "&lt;";
    else if (ch == '>') o += "&gt;";
    else if (ch == '&') o += "&amp;";
    else if (ch == '"') o += "&quot;";
    else o += ch;
  }
  return o;
}

const char* kColors[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
                         "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#17becf"};
const char* color(int i) { return kColors[static_cast<size_t>(i) % (sizeof kColors / sizeof kColors[0])]; }

// A mixture of experts: what a decode token reads of the weights (the cost model's bytes).
std::string experts_line(const ModelShape& m) {
  const auto& k = m.config;
  if (!k.is_moe()) return "";
  return fmt("experts: %lld per layer, %lld per token: a decode token reads %.2f GB of the %.2f GB of weights\n",
             (long long)k.n_expert, (long long)k.n_expert_used, m.decode_read_bytes() / 1e9, gbf(m.total_bytes()));
}

std::string header_line(const ModelShape& m, const Cluster& c, const PlanOptions& o) {
  return fmt("model: %s (%lld layers, %.2f GB of weights), %zu devices, context %lld x %lld sequence%s, KV %s, prompt %lld\n",
             m.name.c_str(), (long long)m.n_layers(), gbf(m.total_bytes()), c.devices.size(), (long long)o.n_ctx,
             (long long)o.n_parallel, o.n_parallel == 1 ? "" : "s", o.kv_type.c_str(), (long long)o.n_prompt);
}

std::string header(const ModelShape& m, const Cluster& c, const PlanOptions& o) {
  return header_line(m, c, o) + experts_line(m);
}

std::string stage_name(const StagePlan& s, const Cluster& c) {
  if (s.ranks.empty()) return c.devices[static_cast<size_t>(s.device)].name;
  std::string n = "{";
  for (size_t i = 0; i < s.ranks.size(); ++i) n += (i ? "," : "") + c.devices[static_cast<size_t>(s.ranks[i])].name;
  return n + "}";
}

std::string range_str(const ShardRange& r) { return fmt("%lld-%lld", (long long)r.begin, (long long)r.end - 1); }

// A tensor-parallel stage's ranks and its sync, under its row of the table.
std::string tp_lines(const StagePlan& s, const ModelShape& m, const Cluster& c, const PlanOptions& o, double latency_s) {
  std::string out;
  const int64_t gqa = m.config.n_heads / m.config.n_kv_heads;
  for (size_t q = 0; q < s.ranks.size(); ++q) {
    const DeviceProfile& d = c.devices[static_cast<size_t>(s.ranks[q])];
    const ShardRange& kv = s.shards.kv_heads[q];
    out += fmt("     rank %zu %-14s KV heads %s (%lld query heads), FFN rows %s, vocab %s: %.2f GB, %.2f GB free after\n", q,
               d.name.c_str(), range_str(kv).c_str(), (long long)(kv.size() * gqa), range_str(s.shards.ffn_rows[q]).c_str(),
               range_str(s.shards.vocab[q]).c_str(), gbf(s.rank_mem[q].total()),
               (static_cast<double>(d.free_bytes) - static_cast<double>(s.rank_mem[q].total())) / 1e9);
  }
  out += fmt("     sync (%s): %d all-reduces%s per token, %d hops each; the busiest rank sends %.1f KB/token; %.3f ms/token "
             "(%.1f%% of the token)\n",
             tp_sync_name(o.tp_sync), s.n_all_reduce, s.end == m.n_layers() ? " + a logits gather" : "",
             2 * (s.tp() - 1), s.sync_bytes / 1e3, s.sync_s * 1e3, 100.0 * s.sync_s / latency_s);
  return out;
}

}  // namespace

std::string format_plan(const Plan& p, const ModelShape& m, const Cluster& c, const PlanOptions& o) {
  std::string out = header(m, c, o) + "strategy: " + p.strategy + "\n\n";
  out += fmt("  %-2s %-14s %-5s %-14s %9s %8s %10s %11s %7s\n", "#", "device", "kind", "layers", "weights", "KV",
             "other", "free after", "time");
  const Prediction& r = p.pred;
  for (size_t i = 0; i < p.stages.size(); ++i) {
    const StagePlan& s = p.stages[i];
    const DeviceProfile& d = c.devices[static_cast<size_t>(s.device)];
    const uint64_t other = s.mem.scratch + s.mem.overhead + s.mem.margin;
    out += fmt("  %-2zu %-14s %-5s %-14s %6.2f GB %5.2f GB %7.2f GB %8.2f GB %6.1f%%\n", i, stage_name(s, c).c_str(),
               device_kind_name(d.kind), layers_str(s).c_str(), gbf(s.mem.weights), gbf(s.mem.kv), gbf(other),
               (static_cast<double>(d.free_bytes) - static_cast<double>(s.mem.total())) / 1e9, 100.0 * s.decode_s / r.latency_s);
    if (s.tp() > 1) out += tp_lines(s, m, c, o, r.latency_s);
    if (s.working_set_bytes > 0) {
      // Priced on the probe's cache curve (plan_working_sets): the rate at this working set
      // against the rate beyond the caches, for the output matrix's type.
      DeviceProfile at = d;
      at.working_set_bytes = s.working_set_bytes;
      const uint32_t t = m.output_matrix.type;
      out += fmt("     caches: its host reads %.0f MB per token; matvec %s at %.1f GB/s there (probe's curve; %.1f GB/s "
                 "beyond the caches)\n",
                 s.working_set_bytes / 1e6, (dtype_traits(t) ? std::string(dtype_traits(t)->name) : std::to_string(t)).c_str(), at.matvec_rate(t) / 1e9, d.matvec_rate(t) / 1e9);
    }
    if (s.streamed > 0) {
      // Compute of the streamed layers alone, to say which of compute and disk bounds them.
      double compute = 0;
      for (int64_t l = s.end - s.streamed; l < s.end; ++l) compute += layer_decode_s(m, d, l, o);
      const bool out_streams = s.end == m.n_layers();
      if (out_streams) compute += output_decode_s(m, d);
      out += fmt("     streams %lld of its %lld layers%s from disk (%lld resident): %.2f GB/token at %.2f GB/s, %.1f ms/token "
                 "of reads beside %.1f ms of their compute\n",
                 (long long)s.streamed, (long long)s.size(), out_streams ? " and the output matrix" : "",
                 (long long)(s.size() - s.streamed),
                 s.disk_s * d.disk_Bps / 1e9, d.disk_Bps / 1e9, s.disk_s * 1e3, compute * 1e3);
      if (s.disk_s > compute)
        out += fmt("     warning: %s's disk is too slow for its compute: at %.2f GB/s its reads bound this stage at %.1f "
                   "ms/token (a disk of %.2f GB/s or more, or more memory, would not)\n",
                   d.name.c_str(), d.disk_Bps / 1e9, s.disk_s * 1e3, s.disk_s * d.disk_Bps / std::max(compute, 1e-12) / 1e9);
    }
    if (i < r.hops.size()) {
      const HopPrediction& h = r.hops[i];
      out += fmt("     -> hop %s -> %s: %.1f KB/token, %.3f ms/token (%.1f%%)\n", d.name.c_str(),
                 c.devices[static_cast<size_t>(h.to)].name.c_str(), h.bytes_per_token / 1e3, h.decode_s * 1e3,
                 100.0 * h.decode_s / r.latency_s);
    }
  }
  for (const auto& e : p.excluded)
    out += fmt("  -  %-14s %s\n", c.devices[static_cast<size_t>(e.device)].name.c_str(), e.reason.c_str());
  out += "\n(other = scratch + runtime overhead + safety margin; time = share of one token's latency";
  if (p.tp() > 1) out += "; a {group}'s columns are its first rank's";
  out += ")\n";
  out += fmt("predicted decode:  %.2f tok/s (%.1f ms/token; one token's latency %.1f ms, busiest stage or link %.1f ms",
             r.decode_tok_s, r.token_s * 1e3, r.latency_s * 1e3, r.bottleneck_s * 1e3);
  if (o.n_parallel > 1) out += fmt(", %lld in flight, pipeline idle %.0f%%", (long long)o.n_parallel, 100.0 * r.bubble);
  out += ")\n";
  out += fmt("predicted prefill: %.1f tok/s, time to first token %.3f s (%lld-token prompt)\n", r.prefill_tok_s,
             r.ttft_s, (long long)o.n_prompt);
  const PipedRing ring = piped_ring(p, m, c, o);
  if (ring.cycles > 0 && ring.token_s < r.token_s) {
    out += fmt("piped ring:        %.1f ms/token as prima.cpp's ring of %d cycles (each device's layers in %d ranges, the "
               "next range read while the others compute; the path %.1f ms, the slowest disk %.1f ms):",
               ring.token_s * 1e3, ring.cycles, ring.cycles, ring.path_s * 1e3, ring.disk_s * 1e3);
    for (size_t i = 0; i < ring.shares.size(); ++i) {
      const RingShare& s = ring.shares[i];
      out += fmt("%s %s %lld-%lld (%lld resident)", i ? "," : "", c.devices[static_cast<size_t>(s.device)].name.c_str(),
                 (long long)s.first, (long long)s.end - 1, (long long)s.resident);
    }
    out += ". herd's workers do not run rings yet: the plan above is what they run\n";
  }
  for (const auto& n : p.notes) out += "note: " + n + "\n";
  return out;
}

namespace {

// Why the fastest tensor-parallel option wins or loses against the fastest pipeline, in the
// model's own numbers: the all-reduces per token x hops x per-hop latency, and the compute saved.
std::string r_name(const Plan& p) { return p.strategy; }

std::string tp_verdict(const std::vector<StrategyOutcome>& rs, const ModelShape& m, const Cluster& c) {
  const Plan* pp = nullptr;
  const Plan* tp = nullptr;
  for (const auto& r : rs) {
    if (!r.plan) continue;
    const Plan* p = &*r.plan;
    if (p->tp() == 1 && (!pp || p->pred.token_s < pp->pred.token_s)) pp = p;
    if (p->tp() > 1 && (!tp || p->pred.token_s < tp->pred.token_s)) tp = p;
  }
  if (!pp || !tp) return "";
  double sync = 0, lat = 0, link_lat = 0;
  int n_ar = 0, hops = 0;
  for (const auto& s : tp->stages) {
    if (s.tp() < 2) continue;
    const LinkProfile l = make_tp_group(m, c, s.ranks).link;
    sync += s.sync_s;
    n_ar += s.n_all_reduce;
    hops = std::max(hops, 2 * (s.tp() - 1));
    link_lat = std::max(link_lat, l.latency_s);
    lat += s.n_all_reduce * 2 * (s.tp() - 1) * l.latency_s;
  }
  const double without = tp->pred.token_s - sync;  // what the TP option would cost with free sync
  std::string out = fmt("\n%s %s the fastest pipeline (%s, %.2f ms/token) with %.2f ms/token: ", r_name(*tp).c_str(),
                        tp->pred.token_s < pp->pred.token_s ? "beats" : "loses to", r_name(*pp).c_str(),
                        pp->pred.token_s * 1e3, tp->pred.token_s * 1e3);
  out += fmt("splitting every layer leaves %.2f ms/token of compute and hops, and the sync adds %.2f ms/token: "
             "a per-hop latency of %.3g ms x %d all-reduces per token (%d hops each) of a %lld-layer model is %.2f ms, "
             "the rest is bytes / bandwidth and the logits gather.\n",
             without * 1e3, sync * 1e3, link_lat * 1e3, n_ar, hops, (long long)m.n_layers(), lat * 1e3);
  if (tp->pred.token_s >= pp->pred.token_s)
    out += "tensor parallelism loses when the links' latency x 2 x layers outweighs the compute it splits: "
           "on faster links (or for fewer, wider layers) it wins.\n";
  return out;
}

}  // namespace

std::string format_compare(const std::vector<StrategyOutcome>& rs, const ModelShape& m, const Cluster& c, const PlanOptions& o) {
  std::string out = header(m, c, o) + "\n";
  int w = 10;
  for (const auto& r : rs) w = std::max(w, static_cast<int>(r.strategy.size()));
  out += fmt("  %-*s %10s %9s %10s %8s %7s %8s %9s  %s\n", w, "strategy", "decode t/s", "ms/token", "prefill t/s", "TTFT s",
             "stages", "sync ms", "sync KB", "layers per stage");
  for (const auto& r : rs) {
    if (!r.plan) {
      std::string first = r.error.substr(0, r.error.find('\n'));
      // The line that names the first overfull stage says the most.
      auto nl = r.error.find('\n');
      if (nl != std::string::npos) first = r.error.substr(nl + 1, r.error.find('\n', nl + 1) - nl - 1);
      first.erase(0, first.find_first_not_of(' '));
      out += fmt("  %-*s does not fit: %s\n", w, r.strategy.c_str(), first.c_str());
      continue;
    }
    const Plan& p = *r.plan;
    std::string split;
    double sync = 0, bytes = 0;
    for (const auto& s : p.stages) {
      if (!split.empty()) split += ' ';  // piecewise: GCC 12 -Wrestrict misreads "" + std::string here
      split += stage_name(s, c);
      split += ':';
      split += std::to_string(s.size());
      sync += s.sync_s;
      bytes = std::max(bytes, s.sync_bytes);
    }
    const std::string sync_ms = p.tp() > 1 ? fmt("%8.2f", sync * 1e3) : fmt("%8s", "-");
    const std::string sync_kb = p.tp() > 1 ? fmt("%9.1f", bytes / 1e3) : fmt("%9s", "-");
    out += fmt("  %-*s %10.2f %9.1f %11.1f %8.3f %7zu %s %s  %s\n", w, r.strategy.c_str(), p.pred.decode_tok_s,
               p.pred.token_s * 1e3, p.pred.prefill_tok_s, p.pred.ttft_s, p.stages.size(), sync_ms.c_str(), sync_kb.c_str(),
               split.c_str());
  }
  bool any_tp = false;
  for (const auto& r : rs) any_tp |= r.strategy.rfind("tp ", 0) == 0;
  if (any_tp)
    out += fmt("\n(tp rows: groups of consecutive devices, tensor-parallel within a group, --tp-sync %s; sync ms = "
               "all-reduces + logits gather per token; sync KB = what the busiest rank sends per token)\n",
               tp_sync_name(o.tp_sync));
  if (o.max_tp >= 2 && c.devices.size() >= 2 && max_tp_ranks(m) < 2) {
    std::string why;
    try {
      tp_shard_shape(m);
      why = "its layers cannot be cut in two";
    } catch (const std::invalid_argument& e) {
      why = e.what();
    }
    out += "\n(no tensor-parallel rows: " + why + ")\n";
  }
  return out + tp_verdict(rs, m, c);
}

std::string plan_json(const std::vector<StrategyOutcome>& rs, const ModelShape& m, const Cluster& c, const PlanOptions& o) {
  std::string j = "{\n";
  j += "  \"model\": {\"name\": " + json_str(m.name) +
       fmt(", \"layers\": %lld, \"weight_bytes\": %llu, \"experts\": %lld, \"experts_used\": %lld, "
           "\"decode_read_bytes\": %.0f},\n",
           (long long)m.n_layers(), (unsigned long long)m.total_bytes(), (long long)m.config.n_expert,
           (long long)m.config.n_expert_used, m.decode_read_bytes());
  j += fmt("  \"model_config\": {\"arch\": %s, \"n_embd\": %lld, \"n_heads\": %lld, \"n_kv_heads\": %lld, \"n_vocab\": %lld},\n",
           json_str(m.config.arch).c_str(), (long long)m.config.n_embd, (long long)m.config.n_heads,
           (long long)m.config.n_kv_heads, (long long)m.config.n_vocab);
  j += fmt("  \"options\": {\"ctx\": %lld, \"parallel\": %lld, \"kv_type\": %s, \"prompt\": %lld, \"max_tp\": %lld, "
           "\"tp_sync\": %s},\n",
           (long long)o.n_ctx, (long long)o.n_parallel, json_str(o.kv_type).c_str(), (long long)o.n_prompt,
           (long long)o.max_tp, json_str(tp_sync_name(o.tp_sync)).c_str());
  j += "  \"devices\": [";
  for (size_t i = 0; i < c.devices.size(); ++i) {
    const auto& d = c.devices[i];
    j += std::string(i ? ", " : "") + "{\"name\": " + json_str(d.name) + ", \"kind\": " + json_str(device_kind_name(d.kind)) +
         fmt(", \"free_bytes\": %llu, \"bandwidth_Bps\": %.6g", (unsigned long long)d.free_bytes, d.bandwidth_Bps) +
         ", \"host\": " + json_str(d.host) + (d.address.empty() ? "" : ", \"address\": " + json_str(d.address)) + "}";
  }
  j += "],\n  \"plans\": [\n";
  for (size_t k = 0; k < rs.size(); ++k) {
    const auto& r = rs[k];
    j += "    {\"strategy\": " + json_str(r.strategy);
    if (!r.plan) {
      j += ", \"fits\": false, \"error\": " + json_str(r.error) + "}";
    } else {
      const Plan& p = *r.plan;
      j += ", \"fits\": true, \"stages\": [";
      for (size_t i = 0; i < p.stages.size(); ++i) {
        const auto& s = p.stages[i];
        j += std::string(i ? ", " : "") + "{\"device\": " + json_str(c.devices[static_cast<size_t>(s.device)].name) +
             fmt(", \"first\": %lld, \"end\": %lld, \"weight_bytes\": %llu, \"kv_bytes\": %llu, \"total_bytes\": %llu, "
                 "\"free_after_bytes\": %lld, \"decode_s\": %.6g, \"prefill_s\": %.6g",
                 (long long)s.first, (long long)s.end, (unsigned long long)s.mem.weights, (unsigned long long)s.mem.kv,
                 (unsigned long long)s.mem.total(),
                 (long long)c.devices[static_cast<size_t>(s.device)].free_bytes - (long long)s.mem.total(), s.decode_s, s.prefill_s);
        j += fmt(", \"tp\": %d, \"streamed_layers\": %lld, \"resident_layers\": %lld, \"disk_s\": %.6g, "
                 "\"working_set_bytes\": %.6g", s.tp(),
                 (long long)s.streamed, (long long)(s.size() - s.streamed), s.disk_s, s.working_set_bytes);
        if (s.tp() > 1) {
          j += fmt(", \"sync_s\": %.6g, \"sync_bytes_per_token\": %.6g, \"all_reduces_per_token\": %d, \"ranks\": [", s.sync_s,
                   s.sync_bytes, s.n_all_reduce);
          for (size_t q = 0; q < s.ranks.size(); ++q) {
            const auto& kv = s.shards.kv_heads[q];
            const auto& ff = s.shards.ffn_rows[q];
            const auto& vo = s.shards.vocab[q];
            j += std::string(q ? ", " : "") + "{\"device\": " + json_str(c.devices[static_cast<size_t>(s.ranks[q])].name) +
                 fmt(", \"weight\": %.6g, \"kv_heads\": [%lld, %lld], \"ffn_rows\": [%lld, %lld], \"vocab\": [%lld, %lld], "
                     "\"total_bytes\": %llu, \"free_after_bytes\": %lld}",
                     s.rank_weights[q], (long long)kv.begin, (long long)kv.end, (long long)ff.begin, (long long)ff.end,
                     (long long)vo.begin, (long long)vo.end, (unsigned long long)s.rank_mem[q].total(),
                     (long long)c.devices[static_cast<size_t>(s.ranks[q])].free_bytes - (long long)s.rank_mem[q].total());
          }
          j += "]";
        }
        j += "}";
      }
      j += "], \"hops\": [";
      for (size_t i = 0; i < p.pred.hops.size(); ++i) {
        const auto& h = p.pred.hops[i];
        j += std::string(i ? ", " : "") + "{\"from\": " + json_str(c.devices[static_cast<size_t>(h.from)].name) +
             ", \"to\": " + json_str(c.devices[static_cast<size_t>(h.to)].name) +
             fmt(", \"bytes_per_token\": %.6g, \"decode_s\": %.6g}", h.bytes_per_token, h.decode_s);
      }
      j += "], \"excluded\": [";
      for (size_t i = 0; i < p.excluded.size(); ++i)
        j += std::string(i ? ", " : "") + "{\"device\": " + json_str(c.devices[static_cast<size_t>(p.excluded[i].device)].name) +
             ", \"reason\": " + json_str(p.excluded[i].reason) + "}";
      j += "], \"tp\": " + std::to_string(p.tp()) + ", \"shape\": " + json_str(plan_shape(p, c));
      // prima.cpp's piped ring (partition/piped_ring.h), when one applies: herd does not run it.
      const PipedRing ring = piped_ring(p, m, c, o);
      if (ring.cycles > 0) {
        j += fmt(", \"piped_ring\": {\"cycles\": %d, \"token_s\": %.6g, \"path_s\": %.6g, \"disk_s\": %.6g, "
                 "\"runs\": false, \"shares\": [", ring.cycles, ring.token_s, ring.path_s, ring.disk_s);
        for (size_t i = 0; i < ring.shares.size(); ++i) {
          const RingShare& s = ring.shares[i];
          j += std::string(i ? ", " : "") + "{\"device\": " + json_str(c.devices[static_cast<size_t>(s.device)].name) +
               fmt(", \"first\": %lld, \"end\": %lld, \"resident_layers\": %lld, \"disk_s\": %.6g}", (long long)s.first,
                   (long long)s.end, (long long)s.resident, s.disk_s);
        }
        j += "]}";
      }
      j += fmt(", \"decode_tok_s\": %.6g, \"token_s\": %.6g, \"latency_s\": %.6g, \"bottleneck_s\": %.6g, "
               "\"prefill_tok_s\": %.6g, \"ttft_s\": %.6g, \"coordinator_in_s\": %.6g, \"coordinator_out_s\": %.6g}",
               p.pred.decode_tok_s, p.pred.token_s, p.pred.latency_s, p.pred.bottleneck_s, p.pred.prefill_tok_s, p.pred.ttft_s,
               p.pred.coord_in_s, p.pred.coord_out_s);
    }
    j += k + 1 < rs.size() ? ",\n" : "\n";
  }
  return j + "  ]\n}\n";
}

std::vector<TimelineBox> simulate_timeline(const Plan& p, const Cluster& c, const PlanOptions& o, int rounds) {
  std::vector<TimelineBox> boxes;
  const size_t n = p.stages.size();
  const int k = static_cast<int>(std::max<int64_t>(o.n_parallel, 1));
  std::vector<double> stage_free(n, 0), link_free(n, 0), ready(static_cast<size_t>(k), 0);
  const double ctl_in = control_s(c.link(-1, p.stages.front().device));
  const double ctl_out = control_s(c.link(p.stages.back().device, -1));
  for (int r = 0; r < rounds; ++r)
    for (int s = 0; s < k; ++s) {
      double t = ready[static_cast<size_t>(s)] + ctl_in;
      for (size_t i = 0; i < n; ++i) {
        const double start = std::max(t, stage_free[i]);
        t = start + p.stages[i].decode_s;
        stage_free[i] = t;
        boxes.push_back({static_cast<int>(i), s, start, t});
        if (i + 1 < n) {
          const HopPrediction& h = p.pred.hops[i];
          const double hs = std::max(t, link_free[i]);
          link_free[i] = hs + h.busy_s;
          t = hs + h.decode_s;
          boxes.push_back({static_cast<int>(n + i), s, hs, t});
        }
      }
      ready[static_cast<size_t>(s)] = t + ctl_out;
    }
  return boxes;
}

std::string plan_svg(const std::vector<StrategyOutcome>& rs, const ModelShape& m, const Cluster& c, const PlanOptions& o) {
  const double W = 960, left = 130, bar_w = W - left - 20;
  std::string body;
  double y = 40;
  body += fmt("<text x='10' y='22' font-size='15' font-weight='bold'>%s</text>\n",
              xml(m.name + fmt(" — %lld layers, ctx %lld x %lld", (long long)m.n_layers(), (long long)o.n_ctx,
                                (long long)o.n_parallel)).c_str());
  // Legend: devices.
  double lx = 10;
  for (size_t d = 0; d < c.devices.size(); ++d) {
    body += fmt("<rect x='%.0f' y='%.0f' width='12' height='12' fill='%s'/>", lx, y - 10, color(static_cast<int>(d)));
    const std::string label = c.devices[d].name + " (" + device_kind_name(c.devices[d].kind) + ")";
    body += fmt("<text x='%.0f' y='%.0f' font-size='11'>%s</text>\n", lx + 16, y, xml(label).c_str());
    lx += 24 + 6.5 * static_cast<double>(label.size());
    if (lx > W - 150) lx = 10, y += 18;
  }
  y += 20;
  body += fmt("<text x='10' y='%.0f' font-size='13' font-weight='bold'>Layer map (layer 0 at the left)</text>\n", y);
  y += 10;
  const double L = static_cast<double>(m.n_layers());
  const Plan* first_fit = nullptr;
  for (const auto& r : rs) {
    body += fmt("<text x='10' y='%.0f' font-size='12'>%s</text>\n", y + 16, xml(r.strategy).c_str());
    if (!r.plan) {
      body += fmt("<rect x='%.0f' y='%.0f' width='%.0f' height='22' fill='#eee' stroke='#c00'/>", left, y + 2, bar_w);
      body += fmt("<text x='%.0f' y='%.0f' font-size='11' fill='#c00'>does not fit</text>\n", left + 8, y + 17);
    } else {
      if (!first_fit || r.strategy == "optimal") first_fit = &*r.plan;
      for (const auto& s : r.plan->stages) {
        const double x0 = left + bar_w * static_cast<double>(s.first) / L, w = bar_w * static_cast<double>(s.size()) / L;
        body += fmt("<rect x='%.1f' y='%.0f' width='%.1f' height='22' fill='%s' stroke='white'><title>%s: layers %s</title></rect>",
                    x0, y + 2, w, color(s.device), xml(c.devices[static_cast<size_t>(s.device)].name).c_str(),
                    layers_str(s).c_str());
        if (w > 24)
          body += fmt("<text x='%.1f' y='%.0f' font-size='10' fill='white'>%lld</text>", x0 + 3, y + 17, (long long)s.size());
      }
      body += fmt("<text x='%.0f' y='%.0f' font-size='10' text-anchor='end'>%.2f tok/s</text>\n", W - 10, y - 1,
                  r.plan->pred.decode_tok_s);
    }
    y += 30;
  }
  if (first_fit) {
    const Plan& p = *first_fit;
    const int rounds = 2;
    const auto boxes = simulate_timeline(p, c, o, rounds);
    double t_end = 0;
    for (const auto& b : boxes) t_end = std::max(t_end, b.end);
    y += 16;
    body += fmt("<text x='10' y='%.0f' font-size='13' font-weight='bold'>%s</text>\n", y,
                xml("Per-token timeline (" + p.strategy + ", " + std::to_string(rounds) + " tokens x " +
                    std::to_string(o.n_parallel) + " sequence" + (o.n_parallel > 1 ? "s" : "") + "; colour = sequence)").c_str());
    y += 8;
    const size_t n = p.stages.size();
    const size_t rows = 2 * n - 1;
    auto row_y = [&](int row) {  // stages and hops interleaved: stage i, hop i, stage i+1, ...
      const int r = row < static_cast<int>(n) ? 2 * row : 2 * (row - static_cast<int>(n)) + 1;
      return y + 18.0 * r;
    };
    for (size_t i = 0; i < n; ++i) {
      body += fmt("<text x='10' y='%.0f' font-size='11'>%s</text>", row_y(static_cast<int>(i)) + 12,
                  xml(c.devices[static_cast<size_t>(p.stages[i].device)].name).c_str());
      if (i + 1 < n)
        body += fmt("<text x='22' y='%.0f' font-size='10' fill='#666'>link</text>", row_y(static_cast<int>(n + i)) + 12);
    }
    for (const auto& b : boxes) {
      const double x0 = left + bar_w * b.start / t_end, w = std::max(0.8, bar_w * (b.end - b.start) / t_end);
      body += fmt("<rect x='%.1f' y='%.1f' width='%.1f' height='14' fill='%s' opacity='%s'/>", x0, row_y(b.row), w,
                  color(b.seq), b.row >= static_cast<int>(n) ? "0.5" : "0.9");
    }
    const double axis_y = y + 18.0 * static_cast<double>(rows) + 4;
    for (int t = 0; t <= 4; ++t) {
      const double x = left + bar_w * t / 4.0;
      body += fmt("<line x1='%.1f' y1='%.0f' x2='%.1f' y2='%.0f' stroke='#999'/><text x='%.1f' y='%.0f' font-size='10' "
                  "text-anchor='middle'>%.1f ms</text>",
                  x, axis_y, x, axis_y + 4, x, axis_y + 16, t_end * 1e3 * t / 4.0);
    }
    y = axis_y + 28;
    body += fmt("<text x='10' y='%.0f' font-size='11'>%s</text>\n", y,
                xml(fmt("predicted: decode %.2f tok/s, prefill %.1f tok/s, time to first token %.2f s", p.pred.decode_tok_s,
                        p.pred.prefill_tok_s, p.pred.ttft_s)).c_str());
  }
  y += 14;
  return fmt("<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' font-family='sans-serif'>\n"
             "<rect width='100%%' height='100%%' fill='white'/>\n",
             W, y) +
         body + "</svg>\n";
}

}  // namespace herd::partition
