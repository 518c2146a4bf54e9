// Measuring this host the way the planner models it (partition/cost_model.h): what `herd probe`
// prints and writes, and the quick profile a `herd worker` sends in its Hello. It runs the CPU
// kernels, so it lives in engine/; partition/ only reads the figures (engine/probe_profile.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/probe_profile.h"
#include "kernels/backend.h"

namespace herd {

struct HostProbeOptions {
  int threads = 0;            // threads per kernel; 0 = all hardware threads
  bool quick = false;         // `herd probe --quick`: 1.25x the LLC, 3 runs, the widest read pattern
  bool startup = false;       // a worker's startup profile (<~1 s): quick sizes, fewer types, no loopback latency
  std::string isa = "auto";   // CPU kernels: auto, avx512, avx2, scalar
  std::vector<uint32_t> types;  // matvec types (GGUF ids) to measure; empty = every supported type
                                // (startup: the common decode types, see kStartupTypes in host_probe.cpp)
};

// The largest CPU cache (sysconf, else sysfs of cpu0) in bytes; 0 when unknown.
uint64_t last_level_cache_bytes();

// Bytes each matvec matrix (plain_read: the read-bandwidth buffer) of a probe spans: beyond the
// last-level cache (2x; --quick 1.25x) and never under the fixed floors (96 MiB / 512 MiB; --quick
// 40 / 192 MiB), capped at a sixth of MemAvailable and 2 GiB. A startup profile keeps 24 / 64 MiB.
size_t probe_working_set_bytes(const HostProbeOptions& o, uint64_t llc_bytes, uint64_t mem_available_bytes,
                               bool plain_read);

// The matrix sizes of a full probe's cache curve (ProbeResult::matvec_cached_Bps): those under
// two thirds of its main matrices. A decode whose working set fits a cache runs faster than the
// main rate says (this project's VM: stories110M's 65 MB per token at 19 GB/s on one thread
// where 600 MB read at 14.5); the planner reads the rate at a working set off this curve
// (partition/profile.h cached_rate). The sizes are close together where caches end (tens to a
// few hundred MiB), as a cache's cliff is steep.
inline constexpr uint64_t kCacheCurveBytes[] = {uint64_t{8} << 20,  uint64_t{16} << 20, uint64_t{32} << 20,
                                                uint64_t{48} << 20, uint64_t{64} << 20, uint64_t{96} << 20,
                                                uint64_t{128} << 20, uint64_t{192} << 20};

// Sequential read speed of `path` from storage, bytes/s: up to max_bytes read in 64 MiB requests
// with O_DIRECT (the page cache bypassed), or, where the file system refuses O_DIRECT (tmpfs), after
// posix_fadvise(DONTNEED) drops its cached pages; the better of one reader and of four reading a
// quarter each (the requests a streaming reader with readahead keeps in flight). Throws std::runtime_error naming the path when
// it cannot be opened or read, or holds under 1 MiB.
// The median of `rounds` such measurements (each reads the range twice).
double disk_read_bps(const std::string& path, size_t max_bytes = size_t(1) << 30, int rounds = 3);

// Measures memory, read bandwidth, matvec bytes/s per type, matmul FLOP/s, attention, per-call
// overhead and (not at startup) the loopback latency. GPUs are not listed here (cmd_probe adds them).
ProbeResult probe_host(const HostProbeOptions& o);

// The kernel rates (matvec per type, prefill FLOP/s, per-call overhead, decode attention) of any
// backend, measured through the Backend seam with its operands in the backend's memory and each
// timed call waited for (copy_out): what a worker computing on a device (--device cuda:N) reports
// in its Hello. Matrices span mat_bytes (probe_working_set_bytes). Memory, read bandwidth and the
// device's name are the caller's to fill (the host's figures mean nothing for a GPU).
ProbeResult probe_device(Backend& be, const HostProbeOptions& o, size_t mat_bytes);

// The startup profile of this process for `threads` (0 = all), measured once and cached for the
// process lifetime (in-process workers of a test share it). Thread-safe.
const ProbeResult& cached_startup_profile(int threads, const std::vector<uint32_t>& types = {});

// /proc/meminfo value of `key` ("MemTotal", "MemAvailable") in bytes; 0 when unknown. Reads through
// a descriptor kept open from the first call (call it once at startup in a process that may run out
// of descriptors); a failed read answers the last value read.
uint64_t meminfo_bytes(const std::string& key);

// A "Key:   N kB" line of /proc/PID/status ("VmRSS", "VmHWM") in bytes; pid 0: this process.
// 0 when absent or unreadable.
uint64_t proc_status_bytes(const std::string& key, int pid = 0);

}  // namespace herd
