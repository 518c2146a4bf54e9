#include "partition/cost_model.h"
#include "partition/memory_model.h"

#include <algorithm>
#include <cmath>

namespace herd::partition {

double layer_ops(const ModelShape& m, double n_tokens) {
  const auto& c = m.config;
  double ops = kOpsPerLayer + (c.has_qkv_bias ? kOpsBiasQkv : 0) + (c.has_qk_norm ? kOpsQkNorm : 0);
  if (c.is_moe())
    ops += kOpsMoeRouter - kOpsDenseFfn +
           kOpsPerExpert * static_cast<double>(c.n_expert) * m.expert_fraction(n_tokens);
  return ops;
}

double layer_decode_s(const ModelShape& m, const DeviceProfile& d, int64_t l, const PlanOptions& o) {
  const size_t i = static_cast<size_t>(l);
  const double pos = static_cast<double>(o.n_ctx) / 2.0;
  double weight_s = 0;
  uint64_t matrix_bytes = 0;
  if (i < m.layer_matrix_bytes.size())
    for (const auto& tb : m.layer_matrix_bytes[i]) {
      weight_s += static_cast<double>(tb.bytes) / d.matvec_rate(tb.type);
      matrix_bytes += tb.bytes;
    }
  // Norms, biases, and anything a hand-made shape left out of the breakdown: at bw.
  const double other = std::max(0.0, m.layer_read_bytes(l, 1) - static_cast<double>(matrix_bytes));
  weight_s += other / d.bandwidth_Bps;
  const double kv_s = pos * static_cast<double>(m.kv_bytes_per_token_layer(o.kv_elem_bytes)) / d.attention_rate();
  const double flops = m.layer_flops[i] + m.attention_flops(pos);
  return std::max(weight_s + kv_s, flops / d.flops) + layer_ops(m, 1) * d.op_overhead_s;
}

double output_decode_s(const ModelShape& m, const DeviceProfile& d) {
  // The output projection reads output.weight (or the tied token_embd); the rest is the norm.
  const uint64_t all = m.output_bytes + (m.config.tied_embeddings ? m.embd_bytes : 0);
  const uint64_t mat = std::min(m.output_matrix.bytes, all);
  const double bytes_s = static_cast<double>(mat) / d.matvec_rate(m.output_matrix.type) +
                         static_cast<double>(all - mat) / d.bandwidth_Bps;
  return std::max(bytes_s, m.output_flops / d.flops) + kOpsOutput * d.op_overhead_s;
}

double input_decode_s(const ModelShape& m, const DeviceProfile& d) {
  // One embedding row (n_embd values, at most 4 bytes each) and one kernel call.
  return 4.0 * static_cast<double>(m.config.n_embd) / d.bandwidth_Bps + kOpsInput * d.op_overhead_s;
}

double streamed_layer_decode_s(const ModelShape& m, const DeviceProfile& d, int64_t l, const PlanOptions& o) {
  const double compute = layer_decode_s(m, d, l, o);
  return d.disk_Bps > 0 ? std::max(compute, m.layer_read_bytes(l, 1) / d.disk_Bps) : compute;
}

double streamed_output_decode_s(const ModelShape& m, const DeviceProfile& d) {
  const double compute = output_decode_s(m, d);
  return d.disk_Bps > 0 ? std::max(compute, static_cast<double>(m.output_matrix.bytes) / d.disk_Bps) : compute;
}

DeviceCost device_cost(const ModelShape& m, const DeviceProfile& d, const PlanOptions& o) {
  DeviceCost c;
  const int64_t L = m.n_layers();
  c.prefix.assign(static_cast<size_t>(L) + 1, 0.0);
  for (int64_t l = 0; l < L; ++l)
    c.prefix[static_cast<size_t>(l) + 1] = c.prefix[static_cast<size_t>(l)] + layer_decode_s(m, d, l, o);
  c.output_s = output_decode_s(m, d);
  c.stream_output_s = streamed_output_decode_s(m, d);
  c.input_s = input_decode_s(m, d);
  if (o.stream && d.disk_Bps > 0) {
    c.stream_prefix.assign(static_cast<size_t>(L) + 1, 0.0);
    for (int64_t l = 0; l < L; ++l)
      c.stream_prefix[static_cast<size_t>(l) + 1] = c.stream_prefix[static_cast<size_t>(l)] + streamed_layer_decode_s(m, d, l, o);
    c.resident.assign(static_cast<size_t>((L + 1) * (L + 1)), 0);
    for (int64_t f = 0; f <= L; ++f)
      for (int64_t e = f; e <= L; ++e) {
        const StageFit fit = stage_fit(m, d, f, e, o);
        c.resident[static_cast<size_t>(f * (L + 1) + e)] = static_cast<int32_t>(fit.fits ? fit.resident : e - f);
      }
  }
  return c;
}

double stage_decode_s(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end, const PlanOptions& o) {
  double t = 0;
  const StageFit fit = stage_fit(m, d, first, end, o);
  const int64_t split = fit.fits ? first + fit.resident : end;
  for (int64_t l = first; l < end; ++l) t += l < split ? layer_decode_s(m, d, l, o) : streamed_layer_decode_s(m, d, l, o);
  if (end == m.n_layers()) t += split < end ? streamed_output_decode_s(m, d) : output_decode_s(m, d);
  if (first == 0 && end > first) t += input_decode_s(m, d);
  return t;
}

double stage_prefill_s(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end, const PlanOptions& o) {
  const double n = static_cast<double>(o.n_prompt);
  const double nb = static_cast<double>(std::max<int64_t>(o.n_batch, 1));
  const double chunks = std::max(1.0, std::ceil(n / nb));
  // Chunks of nb tokens and a last one of the rest: a chunk reads the experts its tokens route to.
  const double full = std::floor(n / nb), rest = n - full * nb;
  const double chunk_tokens = n <= nb ? std::max(n, 1.0) : nb;
  double flops = 0, bytes = 0, ops = 0;
  for (int64_t l = first; l < end; ++l) {
    flops += n * m.layer_flops[static_cast<size_t>(l)] + m.attention_flops(n / 2.0) * n;  // causal: mean n/2 keys
    if (n <= nb) {
      bytes += m.layer_read_bytes(l, chunk_tokens);
    } else {
      bytes += full * m.layer_read_bytes(l, nb) + (rest > 0 ? m.layer_read_bytes(l, rest) : 0.0);
    }
  }
  if (n <= nb) {
    ops = layer_ops(m, chunk_tokens) * static_cast<double>(end - first);
  } else {
    ops = (full * layer_ops(m, nb) + (rest > 0 ? layer_ops(m, rest) : 0.0)) * static_cast<double>(end - first);
  }
  if (end == m.n_layers()) {
    flops += m.output_flops;  // logits of the last prompt token only
    bytes += chunks * static_cast<double>(m.output_bytes);
    ops += chunks * kOpsOutput;
  }
  if (first == 0) ops += chunks * kOpsInput;
  return std::max(flops / d.flops, bytes / d.bandwidth_Bps) + ops * d.op_overhead_s;
}

double hop_bytes_per_token(const ModelShape& m, const PlanOptions& o) {
  return static_cast<double>(m.config.n_embd) * o.act_bytes;
}

double hop_s(const LinkProfile& l, double bytes) { return l.latency_s + bytes / l.bandwidth_Bps; }
double hop_busy_s(const LinkProfile& l, double bytes) { return bytes / l.bandwidth_Bps; }
double control_s(const LinkProfile& l) { return l.latency_s + 64.0 / l.bandwidth_Bps; }

}  // namespace herd::partition
