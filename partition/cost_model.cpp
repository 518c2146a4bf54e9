#include "partition/cost_model.h"

#include <algorithm>
#include <cmath>

namespace herd::partition {
namespace {

double layer_decode_s(const ModelShape& m, const DeviceProfile& d, int64_t l, const PlanOptions& o) {
  const double pos = static_cast<double>(o.n_ctx) / 2.0;
  const double bytes = static_cast<double>(m.layer_bytes[static_cast<size_t>(l)]) +
                       pos * static_cast<double>(m.kv_bytes_per_token_layer(o.kv_elem_bytes));
  const double flops = m.layer_flops[static_cast<size_t>(l)] + m.attention_flops(pos);
  return std::max(bytes / d.bandwidth_Bps, flops / d.flops);
}

double output_decode_s(const ModelShape& m, const DeviceProfile& d) {
  const double bytes = static_cast<double>(m.output_bytes + (m.config.tied_embeddings ? m.embd_bytes : 0));
  return std::max(bytes / d.bandwidth_Bps, m.output_flops / d.flops);
}

}  // namespace

DeviceCost device_cost(const ModelShape& m, const DeviceProfile& d, const PlanOptions& o) {
  DeviceCost c;
  c.prefix.assign(static_cast<size_t>(m.n_layers()) + 1, 0.0);
  for (int64_t l = 0; l < m.n_layers(); ++l)
    c.prefix[static_cast<size_t>(l) + 1] = c.prefix[static_cast<size_t>(l)] + layer_decode_s(m, d, l, o);
  c.output_s = output_decode_s(m, d);
  return c;
}

double stage_decode_s(const ModelShape& m, const DeviceProfile& d, int64_t first, int64_t end, const PlanOptions& o) {
  double t = 0;
  for (int64_t l = first; l < end; ++l) t += layer_decode_s(m, d, l, o);
  if (end == m.n_layers()) t += output_decode_s(m, d);
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
  return std::max(flops / d.flops, chunks * bytes / d.bandwidth_Bps);
}

double hop_bytes_per_token(const ModelShape& m, const PlanOptions& o) {
  return static_cast<double>(m.config.n_embd) * o.act_bytes;
}

double hop_s(const LinkProfile& l, double bytes) { return l.latency_s + bytes / l.bandwidth_Bps; }
double hop_busy_s(const LinkProfile& l, double bytes) { return bytes / l.bandwidth_Bps; }
double control_s(const LinkProfile& l) { return l.latency_s + 64.0 / l.bandwidth_Bps; }

}  // namespace herd::partition
