#include "partition/piped_ring.h"

#include <algorithm>

#include "partition/cost_model.h"
#include "partition/memory_model.h"
#include "partition/tp_model.h"

namespace herd::partition {
namespace {

// Device d holding [f, e) in a ring of k cycles: false when it cannot (too few layers for k
// ranges, or not even streaming every layer leaves room for a range's window); else its resident
// layers and read seconds per token (what it streams, as the plan's disk_s counts it).
bool ring_fit(const ModelShape& m, const DeviceProfile& d, int64_t f, int64_t e, int k, const PlanOptions& o,
              RingShare* out) {
  const int64_t n = e - f;
  if (n < k) return false;
  out->first = f;
  out->end = e;
  if (fits(stage_memory(m, d, f, e, o), d)) {
    out->resident = n;
    out->disk_s = 0;
    return true;
  }
  if (!o.stream || !(d.disk_Bps > 0)) return false;
  for (int64_t r = n - 1; r >= 0; --r) {
    const StreamedRead sr = streamed_read(m, f, e, r);
    if (stream_window_room(m, d, f, e, r, o) < sr.bytes / static_cast<uint64_t>(k) + sr.widest) continue;
    double bytes = 0;
    for (int64_t l = f + r; l < e; ++l) bytes += m.layer_read_bytes(l, 1);
    if (e == m.n_layers()) bytes += static_cast<double>(m.output_matrix.bytes);
    out->resident = r;
    out->disk_s = bytes / d.disk_Bps;
    return true;
  }
  return false;
}

// Shares of the layers over `devs` in order, each device taking the most layers it holds with at
// most `limit` seconds of reads (and at least k, or none); empty when they do not cover the model.
std::vector<RingShare> shares_within(const ModelShape& m, const Cluster& c, const std::vector<int>& devs, int k,
                                     double limit, const PlanOptions& o) {
  std::vector<RingShare> out;
  int64_t pos = 0;
  const int64_t L = m.n_layers();
  for (size_t i = 0; i < devs.size() && pos < L; ++i) {
    const DeviceProfile& d = c.devices[static_cast<size_t>(devs[i])];
    RingShare best, s;
    bool any = false;
    // More layers only add KV cache and reads: the first e that does not fit, or reads too long, ends it.
    for (int64_t e = pos + k; e <= L; ++e) {
      if (!ring_fit(m, d, pos, e, k, o, &s) || s.disk_s > limit) break;
      best = s;
      any = true;
    }
    if (!any) continue;
    best.device = devs[i];
    out.push_back(best);
    pos = best.end;
  }
  if (pos < L) out.clear();
  return out;
}

}  // namespace

PipedRing piped_ring(const Plan& p, const ModelShape& m, const Cluster& c, const PlanOptions& o) {
  PipedRing best;
  if (p.stages.size() < 2 || o.n_parallel > 1) return best;
  bool streams = false;
  std::vector<int> devs;
  for (const StagePlan& s : p.stages) {
    if (s.tp() > 1) return best;
    streams = streams || s.streamed > 0;
    devs.push_back(s.device);
  }
  if (!streams) return best;
  const double hb = hop_bytes_per_token(m, o);
  double all_bytes = static_cast<double>(m.output_matrix.bytes), slowest_disk = 0;
  for (int64_t l = 0; l < m.n_layers(); ++l) all_bytes += m.layer_read_bytes(l, 1);
  for (int d : devs) {
    const double disk = c.devices[static_cast<size_t>(d)].disk_Bps;
    if (disk > 0 && (slowest_disk == 0 || disk < slowest_disk)) slowest_disk = disk;
  }
  if (!(slowest_disk > 0)) return best;
  for (int k = 2; k <= kMaxRingCycles; ++k) {
    // The least read time per token that lets the devices cover the model: bisection between
    // nothing and the slowest disk reading every layer (no cover needs more).
    double hi = all_bytes / slowest_disk;
    std::vector<RingShare> shares = shares_within(m, c, devs, k, hi, o);
    if (shares.size() < 2) continue;  // (one device alone overlaps its reads with nobody's compute)
    double lo = 0;
    for (int it = 0; it < 40; ++it) {  // to 1e-12 of that
      const double mid = (lo + hi) / 2;
      auto s = shares_within(m, c, devs, k, mid, o);
      if (s.size() < 2) lo = mid;
      else hi = mid, shares = std::move(s);
    }
    PipedRing r;
    r.cycles = k;
    r.shares = shares;
    double compute = 0, forward = 0;
    for (size_t i = 0; i < shares.size(); ++i) {
      const RingShare& s = shares[i];
      const DeviceProfile& d = c.devices[static_cast<size_t>(s.device)];
      for (int64_t l = s.first; l < s.end; ++l) compute += layer_decode_s(m, d, l, o);
      if (s.end == m.n_layers()) compute += output_decode_s(m, d);
      if (s.first == 0) compute += input_decode_s(m, d);
      if (i + 1 < shares.size()) forward += hop_s(c.link(s.device, shares[i + 1].device), hb);
      r.disk_s = std::max(r.disk_s, s.disk_s);
    }
    const double wrap = shares.size() > 1 ? hop_s(c.link(shares.back().device, shares.front().device), hb) : 0;
    const double coord = control_in_s(c, {shares.front().device}) + control_s(c.link(shares.back().device, -1));
    r.path_s = compute + k * forward + (k - 1) * wrap + coord;
    r.token_s = std::max(r.path_s, r.disk_s);
    if (best.cycles == 0 || r.token_s < best.token_s) best = r;
  }
  return best;
}

}  // namespace herd::partition
