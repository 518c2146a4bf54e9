// What `herd probe` measured on one host, as written to (and read back from) its JSON file. A
// cluster file refers to it with `device name=X probe=FILE.json`: the device then takes its
// memory, bandwidths, FLOP/s and per-op overhead from the measurement (explicit keys override).
//
// The file is a flat JSON object (numbers in SI units: bytes, bytes/s, FLOP/s, seconds):
//   { "herd_probe": 1, "host": "box", "cpu": "AMD EPYC 7B13", "isa": "avx2", "threads": 1,
//     "hw_threads": 2, "mem_total_bytes": 25e9, "mem_available_bytes": 23e9,
//     "read_bw_Bps": 9.1e9, "matmul_flops": 6.2e10, "op_overhead_s": 2e-7, "attn_Bps": 5e9,
//     "loopback_latency_s": 2.5e-5,
//     "matvec_Bps": { "q4_0": 6.1e9, "q4_K": 5.2e9, ... }, "matvec_bytes": 1.0e9,
//     "matvec_cached_Bps": { "q4_0": [[8388608, 21e9], [25165824, 19e9], ...], ... },
//     "gpus": [ { "index": 0, "name": "...", "total_bytes": ..., "free_bytes": ..., "copy_bw_Bps": ... } ] }
// (copy_bw_Bps: the device-to-device copy bandwidth `herd probe` measured, 2 x bytes per copy / time;
// absent in files from before it, read as 0 = not measured).
// (matvec_bytes: the size of the matrices matvec_Bps was timed on; matvec_cached_Bps: the same
// kernels timed on smaller matrices, [bytes, bytes/s] by size, which the caches may hold — a
// decode whose weights fit there runs at those rates. Both absent in files from before them.)
// Partition depends on no kernel code: types are keyed by their GGUF type id (kernels/dtype.h).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace herd {

struct ProbeGpu {
  int index = 0;
  std::string name;
  uint64_t total_bytes = 0, free_bytes = 0;
  double copy_bw_Bps = 0;  // measured device-to-device copy bandwidth (0: not measured)
};

struct ProbeResult {
  int version = 1;
  std::string host, cpu, isa;
  int threads = 1;       // threads every timed kernel used (what a worker with -t threads gets)
  int hw_threads = 1;    // hardware threads of the host
  uint64_t mem_total_bytes = 0;      // /proc/meminfo MemTotal
  uint64_t mem_available_bytes = 0;  // /proc/meminfo MemAvailable
  double read_bw_Bps = 0;            // streaming read of a buffer much larger than the caches
  double matmul_flops = 0;           // FLOP/s of a 128-token matmul (prefill)
  double op_overhead_s = 0;          // fixed cost of one kernel call (a tiny matvec)
  double attn_Bps = 0;               // KV-cache bytes/s of decode attention
  double loopback_latency_s = 0;     // one-way TCP message latency over 127.0.0.1 (0: not measured)
  double disk_read_Bps = 0;          // sequential read of `herd probe --disk FILE`, uncached (0: not measured)
  std::map<uint32_t, double> matvec_Bps;  // GGUF type id -> weight bytes/s of a 1-token matmul
  uint64_t matvec_bytes = 0;              // bytes of each matrix matvec_Bps was timed on (0: not recorded)
  // GGUF type id -> (matrix bytes, weight bytes/s) of the same matvec over smaller matrices, by
  // size ascending: where a working set that fits the caches runs (host_probe.h kCacheCurveBytes).
  std::map<uint32_t, std::vector<std::pair<uint64_t, double>>> matvec_cached_Bps;
  std::vector<ProbeGpu> gpus;        // empty without CUDA (or without a GPU)
};

std::string probe_to_json(const ProbeResult& p);
// Throws std::runtime_error "<source>: ..." for malformed JSON, an unknown type name, a missing
// field the planner needs (mem_total_bytes, read_bw_Bps) or a negative / non-finite number.
ProbeResult probe_from_json(const std::string& text, const std::string& source = "probe");
ProbeResult load_probe(const std::string& path);

}  // namespace herd
