// herd cluster FILE: checks a cluster file (docs/cluster-file.md) and says what it describes; with
// --launch, prints its workers for the herd-cluster script (one parser for both). Also the probe
// `herd plan` runs for worker lines on this host that state no figures.
#include <algorithm>
#include <cstdio>
#include <map>

#include "engine/host_probe.h"
#include "launch/args.h"
#include "launch/cluster_figures.h"
#include "launch/commands.h"

namespace herd::cli {

void fill_local_figures(partition::Cluster& c, const std::vector<uint32_t>& types, const char* who) {
  std::vector<size_t> local;
  for (size_t i : partition::workers_without_figures(c))
    if (partition::is_loopback_host(c.workers[i].host)) local.push_back(i);
  if (local.empty()) return;
  size_t sharing = 0;  // every worker on this host shares its memory
  for (const auto& w : c.workers) sharing += partition::is_loopback_host(w.host) ? 1 : 0;
  std::map<int, ProbeResult> by_threads;
  double loopback_s = 0;
  for (size_t i : local) {
    const int t = c.workers[i].threads;
    if (!by_threads.count(t)) {
      HostProbeOptions o;
      o.threads = t;
      o.quick = true;
      o.types = types;
      by_threads[t] = probe_host(o);
      const ProbeResult& r = by_threads[t];
      std::fprintf(stderr, "%s: probed this host for its workers with threads=%d: %.2f GB/s read, %.1f GFLOP/s, "
                   "%.2f GB available (shared by %zu workers), %.1f us loopback\n", who, t, r.read_bw_Bps / 1e9,
                   r.matmul_flops / 1e9, static_cast<double>(r.mem_available_bytes) / 1e9, sharing,
                   r.loopback_latency_s * 1e6);
    }
    const ProbeResult& r = by_threads[t];
    partition::apply_probe(c.devices[c.workers[i].device], r, static_cast<int>(sharing));
    loopback_s = std::max(loopback_s, r.loopback_latency_s);
  }
  // Workers of one host talk over loopback: its measured latency, unless the file says `link local`.
  if (!c.local_link_given && loopback_s > 0) c.local_link.latency_s = loopback_s;
}

namespace {

const char kSep = '\x1f';  // between the fields of a --launch line (values hold no whitespace)

std::string figures_text(const partition::DeviceProfile& d) {
  if (!d.figures) return "figures measured when it starts";
  char b[160];
  std::snprintf(b, sizeof b, "%s, %.2f GB free, %.1f GB/s, %.2f TFLOP/s%s%s", partition::device_kind_name(d.kind),
                static_cast<double>(d.free_bytes) / 1e9, d.bandwidth_Bps / 1e9, d.flops / 1e12,
                d.probe.empty() ? "" : ", probe ", d.probe.c_str());
  return b;
}

}  // namespace

int cmd_cluster(const Args& args) {
  std::vector<std::string> files;
  bool launch = false;
  ArgParser p("herd cluster FILE [--launch]",
              "Checks a cluster file (docs/cluster-file.md) and lists its workers (where each runs, how it starts, "
              "its figures), devices and links; errors name the line and the field. herd-cluster reads its "
              "workers through --launch.");
  p.positional("FILE", "the cluster file", &files);
  p.add("--launch", "", "one line per worker for launch/herd-cluster (fields separated by 0x1f: line, host, port, "
        "threads, ssh, model, bind, herd, device: cpu, metal or cuda:N); a device line is an error with the worker line to write instead",
        &launch);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  if (files.size() != 1) throw UsageError("give one cluster file (see --help)");
  const partition::Cluster c = partition::load_cluster(files[0]);
  if (launch) {
    if (c.workers.size() != c.devices.size()) {
      for (const auto& d : c.devices) {
        if (!d.address.empty()) continue;
        throw partition::ClusterError(
            files[0] + ": device " + d.name + " is a `device` line: it says what a device is, not where to start "
            "a worker. Write it as: worker name=" + d.name + " host=" + d.host + " port=PORT device=" +
            (d.kind == partition::DeviceKind::Cuda ? std::string("cuda:0") : partition::device_kind_name(d.kind)) + " ... (its figures as before; docs/cluster-file.md)");
      }
    }
    for (const auto& w : c.workers) {
      std::printf("%d%c%s%c%d%c%d%c%s%c%s%c%s%c%s%c%s\n", w.line, kSep, w.host.c_str(), kSep, w.port, kSep, w.threads,
                  kSep, w.ssh.c_str(), kSep, w.model.c_str(), kSep, w.bind.c_str(), kSep, w.herd.c_str(), kSep,
                  w.device_arg.c_str());
    }
    return 0;
  }
  std::printf("%s: %zu worker%s, %zu device line%s\n", files[0].c_str(), c.workers.size(), c.workers.size() == 1 ? "" : "s",
              c.devices.size() - c.workers.size(), c.devices.size() - c.workers.size() == 1 ? "" : "s");
  for (const auto& w : c.workers) {
    const auto& d = c.devices[w.device];
    std::printf("  line %d: worker %s at %s, threads %d, %s%s%s: %s\n", w.line, d.name.c_str(), d.address.c_str(),
                w.threads, w.ssh.empty() ? "started here" : ("started over ssh " + w.ssh).c_str(),
                w.model.empty() ? "" : ", model ", w.model.c_str(), figures_text(d).c_str());
  }
  for (const auto& d : c.devices)
    if (d.address.empty()) std::printf("  device %s on host %s: %s\n", d.name.c_str(), d.host.c_str(), figures_text(d).c_str());
  std::printf("  links: default %.3f ms %.3f GB/s, local %.3f ms %.3f GB/s", c.default_link.latency_s * 1e3,
              c.default_link.bandwidth_Bps / 1e9, c.local_link.latency_s * 1e3, c.local_link.bandwidth_Bps / 1e9);
  for (const auto& [k, l] : c.links)
    std::printf(", %s-%s %.3f ms %.3f GB/s", k.first.c_str(), k.second.c_str(), l.latency_s * 1e3, l.bandwidth_Bps / 1e9);
  std::printf("\n  coordinator on %s\n", c.coordinator().c_str());
  return 0;
}

}  // namespace herd::cli
