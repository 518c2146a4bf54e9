// A worker's profile as it travels in its Hello: what the planner's cost model needs to know about
// the host (partition/profile.h DeviceProfile), in a versioned, bounded wire form. The one
// conversion from a measurement (engine/probe_profile.h ProbeResult) to this form lives here; the
// one conversion from it to the planner's DeviceProfile is the coordinator's (coordinator/plan_adapter.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cluster/wire.h"
#include "engine/probe_profile.h"

namespace herd::cluster {

// What a worker tells the coordinator about itself. v1: threads and free RAM (v3: its memory budget,
// worker/mem_budget.h, which is what it will hold). v2 adds what the
// planner's cost model needs (partition/profile.h DeviceProfile), measured at the worker's start
// (engine/host_probe.h, `herd probe --quick` figures) or loaded from `herd worker --profile`.
// A v1 profile (all rates 0) still loads; the coordinator then assumes default rates.
struct MatvecRate {
  uint32_t type = 0;    // GGUF tensor type id
  double bytes_per_s = 0;
};
struct WorkerProfile {
  int32_t threads = 0;
  uint64_t free_ram_bytes = 0;
  // v2:
  uint64_t total_ram_bytes = 0;  // >= free_ram_bytes when both are known
  double read_bw_Bps = 0;        // streaming read bandwidth (0: not measured)
  double matmul_flops = 0;       // prefill matmul FLOP/s
  double op_overhead_s = 0;      // fixed cost of one kernel call
  double attn_Bps = 0;           // KV-cache bytes/s of decode attention
  std::vector<MatvecRate> matvec;  // weight bytes/s of a 1-token matvec, per type (each type once)
  std::string source;            // "measured at startup", "file /path/probe.json" (logs)
  // v3: sequential read speed of the disk the worker's model file is on (0: not measured): its
  // --profile's `herd probe --disk`, or a short uncached read of its -m file at startup. The
  // coordinator's planner prices the layers it streams there by it (an assumed speed when 0).
  double disk_Bps = 0;
  // v3: the worker process's own resident memory when it answered (0: unknown): the planner's
  // overhead for it, instead of a CPU device's 128 MiB default that alone exceeds a small budget.
  uint64_t process_bytes = 0;
  // v3: whether it streams a stage over its budget from disk (false: --no-stream, or an older worker).
  bool streams = false;
  template <class A> void serialize(A& ar, uint32_t v) {
    detail::check_version<A>(v, 3, "WorkerProfile");
    ar(threads, free_ram_bytes);
    if (v < 2) return;
    ar(total_ram_bytes);
    if constexpr (A::is_loading::value)
      if (total_ram_bytes != 0 && free_ram_bytes > total_ram_bytes)
        throw ProtocolError("WorkerProfile: free RAM " + std::to_string(free_ram_bytes) + " exceeds total " +
                            std::to_string(total_ram_bytes));
    detail::bounded_number(ar, read_bw_Bps, kMaxRateBps, "WorkerProfile.read_bw_Bps");
    detail::bounded_number(ar, matmul_flops, kMaxFlops, "WorkerProfile.matmul_flops");
    detail::bounded_number(ar, op_overhead_s, kMaxSeconds, "WorkerProfile.op_overhead_s");
    detail::bounded_number(ar, attn_Bps, kMaxRateBps, "WorkerProfile.attn_Bps");
    uint64_t n = matvec.size();
    ar(n);
    if constexpr (A::is_loading::value) {
      if (n > kMaxProfileTypes)
        throw ProtocolError("WorkerProfile.matvec has " + std::to_string(n) + " entries (max " +
                            std::to_string(kMaxProfileTypes) + ")");
      matvec.resize(n);
    }
    for (size_t i = 0; i < matvec.size(); ++i) {
      auto& e = matvec[i];
      ar(e.type);
      detail::bounded_number(ar, e.bytes_per_s, kMaxRateBps, "WorkerProfile.matvec rate");
      if constexpr (A::is_loading::value) {
        if (e.type >= kMaxGgufType) throw ProtocolError("WorkerProfile.matvec: tensor type " + std::to_string(e.type));
        if (!(e.bytes_per_s > 0)) throw ProtocolError("WorkerProfile.matvec: rate of type " + std::to_string(e.type) + " is 0");
        for (size_t j = 0; j < i; ++j)
          if (matvec[j].type == e.type) throw ProtocolError("WorkerProfile.matvec: type " + std::to_string(e.type) + " twice");
      }
    }
    detail::bounded_string(ar, source, 1024, "WorkerProfile.source");
    if (v < 3) return;
    detail::bounded_number(ar, disk_Bps, kMaxRateBps, "WorkerProfile.disk_Bps");
    ar(process_bytes);
    if constexpr (A::is_loading::value)
      if (total_ram_bytes != 0 && process_bytes > total_ram_bytes)
        throw ProtocolError("WorkerProfile: process memory " + std::to_string(process_bytes) + " exceeds total " +
                            std::to_string(total_ram_bytes));
    detail::boolean(ar, streams, "WorkerProfile.streams");
  }
};

// The Hello profile of a worker running `threads` threads: `p`'s rates (non-finite or negative ones
// become 0 = not measured; each clamped to its wire bound), `free_bytes` free.
WorkerProfile worker_profile(const ProbeResult& p, int threads, uint64_t free_bytes);

}  // namespace herd::cluster

CEREAL_CLASS_VERSION(herd::cluster::WorkerProfile, 3)
