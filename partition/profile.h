// Device and link profiles: what the planner assumes about hardware it may never have seen.
// A cluster file describes them (format: docs/planner.md, "Cluster files"):
//
//   # comment
//   device name=rtx3090-a kind=cuda mem=24GB free=23.5GB bw=900GB/s flops=71T host=box1
//   device name=m2max kind=metal mem=32GB bw=400GB/s flops=27T host=mac
//   link default latency=0.3ms bw=1Gbit       # between any two hosts not named below
//   link local latency=10us bw=12GB/s         # between devices of the same host (PCIe / shared RAM)
//   link box1 mac latency=0.1ms bw=10Gbit     # between two named hosts (or devices)
//   coordinator box1                          # host of the coordinator (default: first device's)
//   device name=w0 probe=box.json host=box     # measured by `herd probe --out box.json` (keys override)
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

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
  std::string probe;          // the probe file it came from ("" when hand-written)

  // Weight bytes/s a matvec of `type` achieves here: the measured rate, else bandwidth_Bps.
  double matvec_rate(uint32_t type) const {
    auto it = matvec_Bps.find(type);
    return it != matvec_Bps.end() ? it->second : bandwidth_Bps;
  }
  double attention_rate() const { return attn_Bps > 0 ? attn_Bps : bandwidth_Bps; }
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
// directives, bad numbers or units, duplicate device names, missing mem/bw, free > mem, a probe
// file that cannot be read. A relative probe= path is relative to the directory of `source`.
Cluster parse_cluster(const std::string& text, const std::string& source = "cluster");
Cluster load_cluster(const std::string& path);

// Unit parsers (exposed for tests): "24GB" "24GiB" "512MB" -> bytes; "900GB/s" "1Gbit" "10Gbit/s"
// "40Gbps" "1.2TB/s" -> bytes/s; "70T" "70TFLOPS" "800G" -> FLOP/s; "0.2ms" "15us" "1s" -> s.
// Throw std::invalid_argument on anything else.
uint64_t parse_bytes(const std::string& v);
double parse_rate(const std::string& v);
double parse_flops(const std::string& v);
double parse_seconds(const std::string& v);

}  // namespace herd::partition
