#include "partition/tp_model.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace herd::partition {
namespace {

constexpr double kChunk = static_cast<double>(kChainChunkValues);

// Kernel calls of each half of a layer (cost_model.h kOpsPerLayer = 15): attention: rmsnorm, q, k,
// v, o, 2 rope, attention, residual add (+ bias adds, q/k norms); FFN: rmsnorm, gate, up, down,
// silu_mul, residual add.
constexpr double kOpsFfnHalf = 6;

double frac(const ShardRange& r, int64_t total) { return static_cast<double>(r.size()) / static_cast<double>(total); }

// A layer's matrices split into the attention and FFN parts, by type.
struct LayerParts {
  std::vector<ModelShape::TypeBytes> attn, ffn;
  double attn_bytes = 0, ffn_bytes = 0;
  double other_read = 0;  // bytes a token reads outside the matrices (norms): replicated
  double other_held = 0;  // bytes held outside the matrices
};

LayerParts layer_parts(const ModelShape& m, int64_t l) {
  const size_t i = static_cast<size_t>(l);
  LayerParts p;
  if (i < m.layer_matrix_bytes.size()) p.attn = m.layer_matrix_bytes[i];
  if (i < m.layer_ffn_matrix_bytes.size()) p.ffn = m.layer_ffn_matrix_bytes[i];
  for (auto& a : p.attn)
    for (const auto& f : p.ffn)
      if (a.type == f.type) a.bytes -= std::min(a.bytes, f.bytes);
  for (const auto& a : p.attn) p.attn_bytes += static_cast<double>(a.bytes);
  for (const auto& f : p.ffn) p.ffn_bytes += static_cast<double>(f.bytes);
  p.other_read = std::max(0.0, m.layer_read_bytes(l, 1) - p.attn_bytes - p.ffn_bytes);
  p.other_held = std::max(0.0, static_cast<double>(m.layer_bytes[i]) - p.attn_bytes - p.ffn_bytes);
  return p;
}

double read_s(const std::vector<ModelShape::TypeBytes>& v, double share, const DeviceProfile& d) {
  double s = 0;
  for (const auto& tb : v) s += static_cast<double>(tb.bytes) * share / d.matvec_rate(tb.type);
  return s;
}

// FLOPs per token of the dense FFN's three matrices; the rest of layer_flops is attention's.
double ffn_flops(const ModelShape& m) {
  return 6.0 * static_cast<double>(m.config.n_ff) * static_cast<double>(m.config.n_embd);
}

struct Halves {
  double attn = 0, ffn = 0;
};

// Rank r's time for each half of layer l at decode.
Halves rank_layer_s(const ModelShape& m, const DeviceProfile& d, const LayerParts& parts, int64_t l, double a,
                    double f, const PlanOptions& o) {
  const double pos = static_cast<double>(o.n_ctx) / 2.0;
  const double ops = layer_ops(m, 1);
  Halves h;
  const double kv_s = pos * static_cast<double>(m.kv_bytes_per_token_layer(o.kv_elem_bytes)) * a / d.attention_rate();
  const double ff = std::min(ffn_flops(m), m.layer_flops[static_cast<size_t>(l)]);
  const double attn_flops = (m.layer_flops[static_cast<size_t>(l)] - ff + m.attention_flops(pos)) * a;
  h.attn = std::max(read_s(parts.attn, a, d) + parts.other_read / 2 / d.bandwidth_Bps + kv_s, attn_flops / d.flops) +
           (ops - kOpsFfnHalf) * d.op_overhead_s;
  h.ffn = std::max(read_s(parts.ffn, f, d) + parts.other_read / 2 / d.bandwidth_Bps, ff * f / d.flops) +
          kOpsFfnHalf * d.op_overhead_s;
  return h;
}

// Rank r's output projection: its vocabulary rows, the final norm in full.
double rank_output_s(const ModelShape& m, const DeviceProfile& d, double v) {
  const uint64_t all = m.output_bytes + (m.config.tied_embeddings ? m.embd_bytes : 0);
  const uint64_t mat = std::min(m.output_matrix.bytes, all);
  const double bytes_s = static_cast<double>(mat) * v / d.matvec_rate(m.output_matrix.type) +
                         static_cast<double>(all - mat) / d.bandwidth_Bps;
  return std::max(bytes_s, m.output_flops * v / d.flops) + kOpsOutput * d.op_overhead_s;
}

int64_t widest(const std::vector<ShardRange>& v) {
  int64_t w = 0;
  for (const auto& r : v) w = std::max(w, r.size());
  return w;
}

}  // namespace

double sync_value_bytes(TpSync s) {
  switch (s) {
    case TpSync::F32: return 4.0;
    case TpSync::F16: return 2.0;
    case TpSync::Q8: return 34.0 / 32.0;
  }
  return 4.0;
}

ShardShape tp_shard_shape(const ModelShape& m) {
  const auto& c = m.config;
  if (c.is_moe())
    throw std::invalid_argument("tensor parallelism does not split mixture-of-experts models yet (" +
                                std::to_string(c.n_expert) + " experts)");
  if (c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads != 0)
    throw std::invalid_argument("tensor parallelism: " + std::to_string(c.n_heads) + " query heads are not whole groups of " +
                                std::to_string(c.n_kv_heads) + " KV heads");
  // As engine/tp_shard.cpp: the fewest KV-head groups whose attn_output columns are whole blocks.
  const int64_t group_cols = c.n_heads / c.n_kv_heads * c.head_dim;
  const int64_t kv_unit = m.wo_block / std::gcd(m.wo_block, group_cols);
  if (c.n_kv_heads % kv_unit != 0)
    throw std::invalid_argument("tensor parallelism: attn_output's blocks of " + std::to_string(m.wo_block) +
                                " columns do not fall on KV-head groups of " + std::to_string(group_cols) + " columns");
  return ShardShape{c.n_heads, c.n_kv_heads, kv_unit, c.n_ff, m.ffn_down_block, c.n_vocab};
}

int max_tp_ranks(const ModelShape& m) {
  try {
    const ShardShape s = tp_shard_shape(m);
    if (s.ffn_block <= 0 || s.n_ff % s.ffn_block != 0) return 1;
    return static_cast<int>(std::min({s.n_head_kv / s.kv_unit, s.n_ff / s.ffn_block, s.n_vocab, int64_t{1} << 20}));
  } catch (const std::invalid_argument&) {
    return 1;
  }
}

CollectiveCost chain_all_reduce(int n, double values, double bytes_per_value, const LinkProfile& l) {
  CollectiveCost c;
  if (n <= 1 || values <= 0) return c;
  c.hops = 2 * (n - 1);
  const double bytes = values * bytes_per_value;
  const double K = std::max(1.0, std::ceil(values / static_cast<double>(kChunk)));
  const double pipelined = c.hops * l.latency_s + (c.hops + K - 1) * (bytes / K) / l.bandwidth_Bps;
  c.busiest_rank_bytes = (n == 2 ? 1.0 : 2.0) * bytes;  // ranks 0..n-3 send the partial and the result
  c.s = std::max(pipelined, c.busiest_rank_bytes / l.bandwidth_Bps);
  return c;
}

CollectiveCost ring_all_gather(int n, double values_per_rank, const LinkProfile& l, double bytes_per_value) {
  CollectiveCost c;
  if (n <= 1 || values_per_rank <= 0) return c;
  const double bytes = values_per_rank * bytes_per_value;
  // The ring moves f32 words (encoded f16 / Q8_0 bytes ride in them) in chunks of kChainChunkValues.
  const double K = std::max(1.0, std::ceil(std::ceil(bytes / 4.0) / static_cast<double>(kChainChunkValues)));
  const double chunk = bytes / K;
  c.hops = static_cast<int>((n - 1) * K);
  c.s = c.hops * (l.latency_s + chunk / l.bandwidth_Bps);
  c.busiest_rank_bytes = (n - 1) * bytes;
  return c;
}

CollectiveCost sync_all_reduce(int n, double values, TpSync s, const LinkProfile& l) {
  if (s == TpSync::F32 && !f32_sync_gathers(n, static_cast<size_t>(values))) return chain_all_reduce(n, values, 4.0, l);
  return ring_all_gather(n, values, l, sync_value_bytes(s));
}

TpGroup make_tp_group(const ModelShape& m, const Cluster& c, const std::vector<int>& devices) {
  TpGroup g;
  g.devices = devices;
  // Weights: each device's speed on this model (1 / its time for every layer alone), so a device
  // with twice the matvec rate gets about twice the heads and rows.
  PlanOptions plain;
  for (int d : devices) {
    double s = 0;
    for (int64_t l = 0; l < m.n_layers(); ++l) s += layer_decode_s(m, c.devices[static_cast<size_t>(d)], l, plain);
    g.weights.push_back(s > 0 ? 1.0 / s : 1.0);
  }
  g.weights = same_speed_weights(g.weights);  // as the coordinator does with measured rates
  g.shards = plan_shards(tp_shard_shape(m), g.weights);
  // The chain crosses every link r -> r+1 and n-1 -> 0 (the result's way back): the slowest counts.
  const int n = static_cast<int>(devices.size());
  g.link = {0, INFINITY};
  for (int r = 0; r < n && n > 1; ++r) {
    const LinkProfile l = c.link(devices[static_cast<size_t>(r)], devices[static_cast<size_t>((r + 1) % n)]);
    g.link.latency_s = std::max(g.link.latency_s, l.latency_s);
    g.link.bandwidth_Bps = std::min(g.link.bandwidth_Bps, l.bandwidth_Bps);
  }
  return g;
}

namespace {

// One layer on the group: the slowest rank of each half, then that half's all-reduce.
TpStageCost layer_part(const ModelShape& m, const Cluster& c, const TpGroup& g, const ShardShape& sh,
                       const CollectiveCost& ar, int64_t l, const PlanOptions& o) {
  TpStageCost t;
  const LayerParts parts = layer_parts(m, l);
  Halves worst;
  for (size_t r = 0; r < g.devices.size(); ++r) {
    const Halves h = rank_layer_s(m, c.devices[static_cast<size_t>(g.devices[r])], parts, l,
                                  frac(g.shards.kv_heads[r], sh.n_head_kv), frac(g.shards.ffn_rows[r], sh.n_ff), o);
    worst.attn = std::max(worst.attn, h.attn);
    worst.ffn = std::max(worst.ffn, h.ffn);
  }
  t.compute_s = worst.attn + worst.ffn;
  t.sync_s = 2 * ar.s;
  t.sync_bytes = 2 * ar.busiest_rank_bytes;
  t.n_all_reduce = 2;
  return t;
}

// The output projection on the group: the slowest rank's vocabulary rows, then the logits gather.
TpStageCost output_part(const ModelShape& m, const Cluster& c, const TpGroup& g, const ShardShape& sh) {
  TpStageCost t;
  for (size_t r = 0; r < g.devices.size(); ++r)
    t.compute_s = std::max(t.compute_s, rank_output_s(m, c.devices[static_cast<size_t>(g.devices[r])],
                                                      frac(g.shards.vocab[r], sh.n_vocab)));
  const CollectiveCost ga =
      ring_all_gather(static_cast<int>(g.devices.size()), static_cast<double>(widest(g.shards.vocab)), g.link);
  t.sync_s = ga.s;
  t.sync_bytes = ga.busiest_rank_bytes;
  return t;
}

double input_part(const ModelShape& m, const Cluster& c, const TpGroup& g) {
  double w = 0;
  for (int d : g.devices) w = std::max(w, input_decode_s(m, c.devices[static_cast<size_t>(d)]));
  return w;
}

void add(TpStageCost& a, const TpStageCost& b) {
  a.compute_s += b.compute_s;
  a.sync_s += b.sync_s;
  a.sync_bytes += b.sync_bytes;
  a.n_all_reduce += b.n_all_reduce;
}

}  // namespace

TpStageCost tp_stage_decode(const ModelShape& m, const Cluster& c, const TpGroup& g, int64_t first, int64_t end,
                            const PlanOptions& o) {
  TpStageCost t;
  if (end <= first) return t;
  const ShardShape sh = tp_shard_shape(m);
  const CollectiveCost ar =
      sync_all_reduce(static_cast<int>(g.devices.size()), static_cast<double>(m.config.n_embd), o.tp_sync, g.link);
  for (int64_t l = first; l < end; ++l) add(t, layer_part(m, c, g, sh, ar, l, o));
  if (end == m.n_layers()) add(t, output_part(m, c, g, sh));
  if (first == 0) t.compute_s += input_part(m, c, g);
  return t;
}

double tp_stage_prefill_s(const ModelShape& m, const Cluster& c, const TpGroup& g, int64_t first, int64_t end,
                          const PlanOptions& o) {
  const int n = static_cast<int>(g.devices.size());
  const ShardShape sh = tp_shard_shape(m);
  const double np = static_cast<double>(o.n_prompt);
  const double nb = static_cast<double>(std::max<int64_t>(o.n_batch, 1));
  const double chunks = std::max(1.0, std::ceil(np / nb));
  double worst = 0;
  for (int r = 0; r < n; ++r) {
    const DeviceProfile& d = c.devices[static_cast<size_t>(g.devices[static_cast<size_t>(r)])];
    const double a = frac(g.shards.kv_heads[static_cast<size_t>(r)], sh.n_head_kv);
    const double f = frac(g.shards.ffn_rows[static_cast<size_t>(r)], sh.n_ff);
    double flops = 0, bytes = 0, ops = 0;
    for (int64_t l = first; l < end; ++l) {
      const LayerParts parts = layer_parts(m, l);
      const double ff = std::min(ffn_flops(m), m.layer_flops[static_cast<size_t>(l)]);
      flops += np * ((m.layer_flops[static_cast<size_t>(l)] - ff) * a + ff * f) + m.attention_flops(np / 2.0) * np * a;
      bytes += chunks * (parts.attn_bytes * a + parts.ffn_bytes * f + parts.other_read);
      ops += chunks * layer_ops(m, std::min(np, nb));
    }
    if (end == m.n_layers()) {
      const double v = frac(g.shards.vocab[static_cast<size_t>(r)], sh.n_vocab);
      flops += m.output_flops * v;
      bytes += chunks * static_cast<double>(m.output_bytes) * v;
      ops += chunks * kOpsOutput;
    }
    if (first == 0) ops += chunks * kOpsInput;
    worst = std::max(worst, std::max(flops / d.flops, bytes / d.bandwidth_Bps) + ops * d.op_overhead_s);
  }
  // Every chunk of up to n_batch tokens all-reduces [tokens, n_embd] twice per layer.
  double sync = 0;
  const double full = std::floor(np / nb), rest = np - full * nb;
  const double E = static_cast<double>(m.config.n_embd);
  const double layers = static_cast<double>(end - first);
  if (np <= nb) {
    sync = 2 * layers * sync_all_reduce(n, np * E, o.tp_sync, g.link).s;
  } else {
    sync = 2 * layers * (full * sync_all_reduce(n, nb * E, o.tp_sync, g.link).s +
                         (rest > 0 ? sync_all_reduce(n, rest * E, o.tp_sync, g.link).s : 0));
  }
  if (end == m.n_layers()) sync += ring_all_gather(n, static_cast<double>(widest(g.shards.vocab)), g.link).s;
  return worst + sync;
}

HopCost group_hop(const Cluster& c, int from, const std::vector<int>& to, double bytes) {
  HopCost h;
  for (size_t r = 0; r < to.size(); ++r) {
    const LinkProfile l = c.link(from, to[r]);
    h.decode_s = std::max(h.decode_s, l.latency_s + static_cast<double>(r + 1) * bytes / l.bandwidth_Bps);
    h.busy_s += hop_busy_s(l, bytes);
  }
  return h;
}

double control_in_s(const Cluster& c, const std::vector<int>& ranks) {
  double s = 0;
  for (int d : ranks) s = std::max(s, control_s(c.link(-1, d)));
  return s;
}

DeviceCost tp_group_cost(const ModelShape& m, const Cluster& c, const TpGroup& g, const PlanOptions& o) {
  DeviceCost dc;
  const int64_t L = m.n_layers();
  const ShardShape sh = tp_shard_shape(m);
  const CollectiveCost ar =
      sync_all_reduce(static_cast<int>(g.devices.size()), static_cast<double>(m.config.n_embd), o.tp_sync, g.link);
  dc.prefix.assign(static_cast<size_t>(L) + 1, 0.0);
  for (int64_t l = 0; l < L; ++l)
    dc.prefix[static_cast<size_t>(l) + 1] = dc.prefix[static_cast<size_t>(l)] + layer_part(m, c, g, sh, ar, l, o).total_s();
  dc.output_s = output_part(m, c, g, sh).total_s();
  dc.input_s = input_part(m, c, g);
  return dc;
}

StageMemory tp_rank_memory(const ModelShape& m, const DeviceProfile& d, const ShardPlan& p, int rank, int64_t first,
                           int64_t end, const PlanOptions& o) {
  const auto& cfg = m.config;
  const ShardShape sh = tp_shard_shape(m);
  const size_t r = static_cast<size_t>(rank);
  const double a = frac(p.kv_heads[r], sh.n_head_kv), f = frac(p.ffn_rows[r], sh.n_ff), v = frac(p.vocab[r], sh.n_vocab);
  StageMemory s;
  double w = 0;
  for (int64_t l = first; l < end; ++l) {
    const LayerParts parts = layer_parts(m, l);
    w += parts.attn_bytes * a + parts.ffn_bytes * f + parts.other_held;
  }
  if (end > first) w += static_cast<double>(m.per_stage_bytes);
  if (first == 0) w += static_cast<double>(m.embd_bytes);  // every rank looks tokens up
  if (end == m.n_layers()) {
    // output_norm in full; its rows of output.weight (or of the tied token_embd, unless it holds
    // the whole table already as the first stage).
    const double norm = static_cast<double>(m.output_bytes) - (cfg.tied_embeddings ? 0.0 : static_cast<double>(m.output_matrix.bytes));
    w += std::max(0.0, norm);
    if (!cfg.tied_embeddings || first != 0) w += static_cast<double>(m.output_matrix.bytes) * v;
  }
  s.weights = static_cast<uint64_t>(std::llround(w));
  const double kv_all = static_cast<double>(m.kv_bytes_per_token_layer(o.kv_elem_bytes)) * static_cast<double>(end - first) *
                        static_cast<double>(o.n_ctx) * static_cast<double>(o.n_parallel);
  s.kv = static_cast<uint64_t>(std::ceil(kv_all * a));
  const uint64_t nb = static_cast<uint64_t>(std::min(o.n_batch, std::max<int64_t>(o.n_ctx, 1)));
  const int64_t heads = p.kv_heads[r].size() * (cfg.n_heads / cfg.n_kv_heads);
  if (end > first)
    s.scratch = 4ull * nb *
                static_cast<uint64_t>(2 * cfg.n_embd + 2 * heads * cfg.head_dim + 2 * p.kv_heads[r].size() * cfg.head_dim +
                                      2 * p.ffn_rows[r].size());
  if (end == m.n_layers())  // its logits rows, every rank's (gathered, padded), the model's
    s.scratch += 4ull * static_cast<uint64_t>(o.n_parallel) *
                 static_cast<uint64_t>(cfg.n_vocab + (static_cast<int64_t>(p.vocab.size()) + 1) * widest(p.vocab));
  s.overhead = d.overhead_bytes;
  s.margin = safety_margin(d, s.weights + s.kv + s.scratch, o);
  return s;
}

int64_t tp_max_layers_from(const ModelShape& m, const Cluster& c, const TpGroup& g, int64_t first, const PlanOptions& o) {
  auto fits_all = [&](int64_t end) {
    for (size_t r = 0; r < g.devices.size(); ++r) {
      const DeviceProfile& d = c.devices[static_cast<size_t>(g.devices[r])];
      if (!fits(tp_rank_memory(m, d, g.shards, static_cast<int>(r), first, end, o), d)) return false;
    }
    return true;
  };
  int64_t lo = first, hi = m.n_layers();
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (fits_all(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo - first;
}

}  // namespace herd::partition
