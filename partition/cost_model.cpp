#include "partition/cost_model.h"

#include <algorithm>
#include <cmath>

namespace herd::partition {

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
  const uint64_t other = m.layer_bytes[i] > matrix_bytes ? m.layer_bytes[i] - matrix_bytes : 0;
  weight_s += static_cast<double>(other) / d.bandwidth_Bps;
  const double kv_s = pos * static_cast<double>(m.kv_bytes_per_token_layer(o.kv_elem_bytes)) / d.attention_rate();
  const double flops = m.layer_flops[i] + m.attention_flops(pos);
  const int ops = kOpsPerLayer + (m.config.has_qkv_bias ? kOpsBiasQkv : 0);
  return std::max(weight_s + kv_s, flops / d.flops) + ops * d.op_overhead_s;
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

DeviceCost device_cost(const ModelShape& m, const DeviceProfile& d, const PlanOptions& o) {
  DeviceCost c;
  c.prefix.assign(static_cast<size_t>(m.n_layers()) + 1, 0.0);
  for (int64_t l = 0; l < m.n_layers(); ++l)
    c.prefix[static_cast<size_t>(l) + 1] = c.prefix[static_cast<size_t>(l)] + layer_decode_s(m, d, l, o);
  c.output_s = output_decode_s(m, d);
  c.input_s = input_decode_s(m, d);
  return c;
}

double stage_decode_s(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end, const PlanOptions& o) {
  double t = 0;
  for (int64_t l = first; l < end; ++l) t += layer_decode_s(m, d, l, o);
  if (end == m.n_layers()) t += output_decode_s(m, d);
  if (first == 0 && end > first) t += input_decode_s(m, d);
  return t;
}

double stage_prefill_s(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end, const PlanOptions& o) {
  const double n = static_cast<double>(o.n_prompt);
  const double chunks = std::max(1.0, std::ceil(n / static_cast<double>(std::max<int64_t>(o.n_batch, 1))));
  double flops = 0, bytes = static_cast<double>(m.prefix_bytes[static_cast<size_t>(end)] - m.prefix_bytes[static_cast<size_t>(first)]);
  for (int64_t l = first; l < end; ++l)
    flops += n * m.layer_flops[static_cast<size_t>(l)] + m.attention_flops(n / 2.0) * n;  // causal: mean n/2 keys
  if (end == m.n_layers()) {
    flops += m.output_flops;  // logits of the last prompt token only
    bytes += static_cast<double>(m.output_bytes);
  }
  const int ops = (kOpsPerLayer + (m.config.has_qkv_bias ? kOpsBiasQkv : 0)) * static_cast<int>(end - first) +
                  (end == m.n_layers() ? kOpsOutput : 0) + (first == 0 ? kOpsInput : 0);
  return std::max(flops / d.flops, chunks * bytes / d.bandwidth_Bps) + chunks * ops * d.op_overhead_s;
}

double hop_bytes_per_token(const ModelShape& m, const PlanOptions& o) {
  return static_cast<double>(m.config.n_embd) * o.act_bytes;
}

double hop_s(const LinkProfile& l, double bytes) { return l.latency_s + bytes / l.bandwidth_Bps; }
double hop_busy_s(const LinkProfile& l, double bytes) { return bytes / l.bandwidth_Bps; }
double control_s(const LinkProfile& l) { return l.latency_s + 64.0 / l.bandwidth_Bps; }

}  // namespace herd::partition
