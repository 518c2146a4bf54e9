// Device and link profiles: what the planner assumes about hardware it may never have seen, and
// the workers of a cluster (where each runs, how herd-cluster starts it). One cluster file says
// both (format: docs/cluster-file.md):
//
//   # comment
//   worker host=127.0.0.1 port=7101 threads=2                    # figures measured: probe / Hello
//   worker host=box2 port=7000 ssh=me@box2 model=/m/x.gguf mem=64GB bw=60GB/s flops=1.5T
//   worker name=mac host=mac.lan port=7000 ssh=mac probe=mac.json  # `herd probe --out mac.json` there
//   link default latency=0.3ms bw=1Gbit       # between any two hosts not named below
//   link local latency=10us bw=12GB/s         # between workers/devices of the same host
//   link box2 mac.lan latency=0.1ms bw=10Gbit # between two named hosts (or worker/device names)
//   coordinator box2                          # host of the coordinator (default: the first one's)
//
// A line that starts with key=value is a worker line (the `worker` word may be left out: the
// herd-cluster files of before). `device name=...` lines (hardware only, nowhere to start it) are
// still read by `herd plan`: what-if clusters of GPUs and Macs.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/probe_profile.h"

namespace herd::partition {

enum class DeviceKind { Cpu, Cuda, Metal };
const char* device_kind_name(DeviceKind k);

struct DeviceProfile {
  std::string name;
  DeviceKind kind = DeviceKind::Cpu;
  uint64_t total_bytes = 0;     // physical memory of the device
  uint64_t free_bytes = 0;      // what herd may use (defaults to total minus what the OS keeps)
  double bandwidth_Bps = 0;     // achievable memory bandwidth for matvec, bytes/s
  double flops = 0;             // achievable matmul throughput, FLOP/s (prefill)
  uint64_t overhead_bytes = 0;  // runtime overhead (CUDA context, worker process), bytes
  std::string host;             // devices on the same host talk over the `local` link
  // Calibration (from `herd probe`, or the keys matvec_<type>=, attn_bw=, op_overhead=):
  std::map<uint32_t, double> matvec_Bps;  // GGUF type id -> achievable weight bytes/s of a 1-token matvec
  double attn_Bps = 0;        // KV-cache bytes/s of decode attention; 0: bandwidth_Bps
  double op_overhead_s = 0;   // fixed cost per kernel call (dispatch, thread-pool sync); 0 for hand-written profiles
  // Sequential read speed of the disk holding the model (disk=), bytes/s; 0: unknown, and then the
  // device never streams layers from disk (partition/memory_model.h stage_fit).
  double disk_Bps = 0;
  std::string probe;          // the probe file it came from ("" when hand-written)
  std::string address;        // a worker line's HOST:PORT (what --workers names); "" for a device line
  bool figures = true;        // false: a worker line that states no figures (measured when it starts;
                              // `herd plan` probes it when it is this host, else says what is missing)

  // The cache curve (from a probe; engine/probe_profile.h): matvec_Bps was timed on matrices of
  // matvec_bytes, and matvec_cached_Bps[type] the same kernel on smaller ones, (bytes, bytes/s)
  // ascending. An explicit matvec_<type>= key drops that type's curve.
  uint64_t matvec_bytes = 0;
  std::map<uint32_t, std::vector<std::pair<uint64_t, double>>> matvec_cached_Bps;
  // Bytes this device's host reads per token in the plan being priced (finish_plan sets it:
  // partition/plan.h plan_working_sets); 0 = unknown, the rates beyond the caches.
  double working_set_bytes = 0;
  // Weight bytes/s a matvec of `type` achieves here: the measured rate, else bandwidth_Bps; with a
  // working set and a curve for the type, the curve's rate at that size (cached_rate).
  double matvec_rate(uint32_t type) const;
  double attention_rate() const { return attn_Bps > 0 ? attn_Bps : bandwidth_Bps; }
};

// The rate at `bytes` on a cache curve: the points (bytes, rate) ascending, then (beyond_bytes,
// beyond_rate); interpolated linearly in log(bytes) between the points around it, the first
// point's rate below the first, beyond_rate from beyond_bytes on.
double cached_rate(const std::vector<std::pair<uint64_t, double>>& points, uint64_t beyond_bytes, double beyond_rate,
                   double bytes);

// Where a worker runs and how `herd-cluster` starts it: one worker line.
struct WorkerLine {
  int line = 0;               // in the cluster file
  std::string host;           // what the coordinator connects to (and the worker's host for links)
  int port = 0;
  int threads = 0;            // 0: all cores
  std::string ssh;            // [USER@]BOX: started there over ssh; "": here
  std::string model;          // path of the GGUF on that host ("": sent by the coordinator)
  std::string bind;           // what it listens on ("": herd-cluster's default)
  std::string herd;           // path of herd on that host ("": herd on its PATH)
  size_t device = 0;          // its DeviceProfile in Cluster::devices
  // device= as herd-cluster passes it to `herd worker --device`: "cpu", "metal" or "cuda:N" (a bare
  // `cuda` is cuda:0); "cpu" when the line says none.
  std::string device_arg = "cpu";
  int cuda_index = -1;        // N of cuda:N; -1 for a CPU or Metal worker
  double cpu = 0;             // `herd lab`'s CPU quota in cores (cpu=0.5); 0: none. Nothing else uses it.
};

struct LinkProfile {
  double latency_s = 0;
  double bandwidth_Bps = 0;  // bytes/s
};

struct Cluster {
  std::vector<DeviceProfile> devices;
  LinkProfile default_link{300e-6, 125e6};  // 1 GbE
  LinkProfile local_link{10e-6, 12e9};      // same host: PCIe-class copy (latency: a probe's loopback
                                            // latency when a device has one and no `link local` is given)
  std::map<std::pair<std::string, std::string>, LinkProfile> links;  // key: (a, b) with a < b
  std::string coordinator_host;             // empty: the first device's host
  std::vector<WorkerLine> workers;          // the worker lines, in file order (device lines have none)
  bool local_link_given = false;            // a `link local` line (else a probe's loopback latency may set it)

  // The link between two devices (or a device and the coordinator's host when b < 0).
  LinkProfile link(int a, int b) const;
  LinkProfile link_hosts(const std::string& ha, const std::string& hb) const;
  const std::string& coordinator() const;
  // The same cluster without device `i` (links kept).
  Cluster without(int i) const;
};

class ClusterError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws ClusterError "<source>:<line>: <what is wrong>" for anything malformed: unknown keys or
// directives, bad numbers or units, duplicate names or addresses, a device line without mem/bw, a
// worker line with some figures but not mem and bw, free > mem, a probe file that cannot be read.
// A relative probe= path is relative to the directory of `source` (partition/cluster_file.cpp).
Cluster parse_cluster(const std::string& text, const std::string& source = "cluster");
Cluster load_cluster(const std::string& path);

// The worker lines without figures (DeviceProfile::figures false), as indices into c.workers.
std::vector<size_t> workers_without_figures(const Cluster& c);
// Throws ClusterError naming every worker line without figures and what to add ("<source>:<line>:
// worker HOST:PORT states no figures: add mem= and bw= (or probe=FILE ...)"); nothing when all have them.
void require_figures(const Cluster& c, const std::string& source);
// Whether `host` names this machine's loopback (127.x, localhost, ::1).
bool is_loopback_host(const std::string& host);
// Fills a device's figures from a probe (memory, bandwidth, FLOP/s, kernel rates). free_bytes:
// the probe's available memory divided by `sharing` (workers of one host share it).
void apply_probe(DeviceProfile& d, const herd::ProbeResult& p, int sharing = 1);
// A CUDA device's figures from one GPU of a probe: its memory and free memory, its measured copy
// bandwidth as bandwidth_Bps (0 when the probe has none), the host's disk; no CPU kernel rates.
void apply_probe_gpu(DeviceProfile& d, const herd::ProbeResult& p, const herd::ProbeGpu& g);

// A worker's device= value: "cpu", "metal", "cuda" (= cuda:0) or "cuda:N" (N a whole number 0-1023),
// case-insensitive. Sets kind and *cuda_index (-1 unless CUDA) and returns the normalised form
// ("cpu", "metal", "cuda:N"); throws std::invalid_argument naming the value otherwise.
std::string parse_device_spec(const std::string& v, DeviceKind* kind, int* cuda_index);

// One line per device herd cannot run in this build, for `herd plan`'s report: Metal devices
// always, CUDA devices when cuda_built is false (herd without HERD_CUDA). Empty when all can run.
std::vector<std::string> devices_herd_cannot_run(const Cluster& c, bool cuda_built);

// Unit parsers (exposed for tests): "24GB" "24GiB" "512MB" -> bytes; "900GB/s" "1Gbit" "10Gbit/s"
// "40Gbps" "1.2TB/s" -> bytes/s; "70T" "70TFLOPS" "800G" -> FLOP/s; "0.2ms" "15us" "1s" -> s.
// Throw std::invalid_argument on anything else.
uint64_t parse_bytes(const std::string& v);
double parse_rate(const std::string& v);
double parse_flops(const std::string& v);
double parse_seconds(const std::string& v);

}  // namespace herd::partition
