#include "cluster/worker_profile.h"

#include <algorithm>
#include <cmath>

namespace herd::cluster {

WorkerProfile worker_profile(const ProbeResult& p, int threads, uint64_t free_bytes) {
  WorkerProfile w;
  w.threads = threads;
  w.free_ram_bytes = free_bytes;
  w.total_ram_bytes = std::max(p.mem_total_bytes, free_bytes);
  // A rate the wire would refuse (NaN, infinite, negative) is sent as "not measured" rather than
  // failing the handshake; one beyond the bound is clamped to it.
  auto rate = [](double x, double max) { return std::isfinite(x) && x > 0 ? std::min(x, max) : 0.0; };
  w.read_bw_Bps = rate(p.read_bw_Bps, kMaxRateBps);
  w.matmul_flops = rate(p.matmul_flops, kMaxFlops);
  w.op_overhead_s = rate(p.op_overhead_s, kMaxSeconds);
  w.attn_Bps = rate(p.attn_Bps, kMaxRateBps);
  w.disk_Bps = rate(p.disk_read_Bps, kMaxRateBps);
  for (const auto& [t, bps] : p.matvec_Bps)
    if (t < kMaxGgufType && rate(bps, kMaxRateBps) > 0 && w.matvec.size() < kMaxProfileTypes)
      w.matvec.push_back({t, rate(bps, kMaxRateBps)});
  return w;
}

}  // namespace herd::cluster
