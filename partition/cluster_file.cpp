// The cluster file (docs/cluster-file.md): worker, device, link and coordinator lines. One parser
// for `herd plan --cluster`, `herd cluster` and, through it, the herd-cluster launcher.
#include <algorithm>
#include <cstdlib>
#include <cctype>
#include <set>
#include <sstream>

#include "common/file_io.h"
#include "kernels/dtype.h"
#include "partition/profile.h"

namespace herd::partition {
namespace {

std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

const char* kFigureKeys = "mem, free, bw, flops, overhead, probe, op_overhead, attn_bw, disk, matvec_<type>";

// One line's words: directive, positional words, key=value pairs.
struct Line {
  std::string directive;
  std::vector<std::string> pos;
  std::map<std::string, std::string> kv;
};

// A whole number in [lo, hi], or an error naming the key.
int parse_int(const std::string& key, const std::string& v, int lo, int hi) {
  size_t used = 0;
  long x = -1;
  try {
    x = std::stol(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty() || !std::isdigit(static_cast<unsigned char>(v[0])) || x < lo || x > hi)
    throw std::invalid_argument(key + " must be a whole number in " + std::to_string(lo) + "-" + std::to_string(hi) +
                                ", got '" + v + "'");
  return static_cast<int>(x);
}

class Parser {
 public:
  explicit Parser(const std::string& source)
      : source_(source),
        base_dir_(source.find('/') != std::string::npos ? source.substr(0, source.rfind('/') + 1) : "") {}

  Cluster parse(const std::string& text) {
    std::istringstream in(text);
    std::string raw;
    while (std::getline(in, raw)) {
      ++lineno_;
      if (raw.find('\0') != std::string::npos) fail("a NUL byte: this is not a text file");
      Line l = split(raw);
      if (l.directive.empty()) continue;
      try {
        if (l.directive == "device") device_line(l);
        else if (l.directive == "worker") worker_line(l);
        else if (l.directive == "link") link_line(l);
        else if (l.directive == "coordinator") {
          if (l.pos.size() != 1 || !l.kv.empty()) fail("coordinator takes one host name");
          c_.coordinator_host = l.pos[0];
        } else
          fail("unknown directive '" + l.directive + "' (worker, device, link, coordinator; a line of key=value "
               "pairs is a worker)");
      } catch (const std::invalid_argument& e) {
        fail(e.what());
      }
    }
    finish();
    return std::move(c_);
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw ClusterError(source_ + ":" + std::to_string(lineno_) + ": " + what);
  }

  Line split(std::string line) const {
    if (auto h = line.find('#'); h != std::string::npos) line.resize(h);
    std::istringstream ls(line);
    std::vector<std::string> words;
    for (std::string w; ls >> w;) words.push_back(w);
    Line l;
    if (words.empty()) return l;
    size_t i = 1;
    if (words[0].find('=') != std::string::npos) {
      l.directive = "worker";  // host=... port=...: a worker line without its word
      i = 0;
    } else {
      l.directive = lower(words[0]);
    }
    for (; i < words.size(); ++i) {
      auto eq = words[i].find('=');
      if (eq == std::string::npos) {
        if (!l.kv.empty()) fail("'" + words[i] + "' must be key=value");
        l.pos.push_back(words[i]);
        continue;
      }
      const std::string k = lower(words[i].substr(0, eq)), v = words[i].substr(eq + 1);
      if (k.empty()) fail("'" + words[i] + "' must be key=value");
      if (v.empty()) fail(k + " has an empty value");
      if (l.kv.count(k)) fail("key '" + k + "' given twice");
      l.kv[k] = v;
    }
    return l;
  }

  static DeviceKind parse_kind(const std::string& v) {
    const std::string kl = lower(v);
    if (kl == "cpu") return DeviceKind::Cpu;
    if (kl == "cuda" || kl == "gpu") return DeviceKind::Cuda;
    if (kl == "metal") return DeviceKind::Metal;
    throw std::invalid_argument("unknown kind '" + v + "' (cpu, cuda, metal)");
  }

  // The figure keys of a device or worker line (and probe=); true when a probe was read. Keys it
  // does not know are left in `rest`.
  // A CUDA device (gpu >= 0) with probe= takes GPU `gpu` of the probe (its memory and copy
  // bandwidth), not the host's CPU figures.
  bool figures(DeviceProfile& d, const std::map<std::string, std::string>& kv, std::map<std::string, std::string>& rest,
               int gpu = -1) {
    bool from_probe = false;
    if (auto it = kv.find("probe"); it != kv.end()) {
      // Measured values first; every explicit key overrides them.
      const std::string path = it->second[0] != '/' ? base_dir_ + it->second : it->second;
      ProbeResult pr;
      try {
        pr = load_probe(path);
      } catch (const std::runtime_error& e) {
        fail(e.what());
      }
      from_probe = true;
      if (gpu >= 0) {
        const ProbeGpu* g = nullptr;
        for (const auto& pg : pr.gpus)
          if (pg.index == gpu) g = &pg;
        if (!g) {
          std::string listed;
          for (const auto& pg : pr.gpus) listed += (listed.empty() ? "" : ", ") + std::string("cuda:") + std::to_string(pg.index);
          fail("probe " + path + " lists no GPU cuda:" + std::to_string(gpu) + " (it lists " +
               (listed.empty() ? std::string("none: herd probe found no CUDA device there") : listed) +
               "); give mem= and bw= for this GPU instead");
        }
        if (!(g->copy_bw_Bps > 0) && !kv.count("bw"))
          fail("probe " + path + " has no measured bandwidth for cuda:" + std::to_string(gpu) +
               " (a probe file from before GPU bandwidth, or the copy failed): add bw=");
        apply_probe_gpu(d, pr, *g);
      } else {
        apply_probe(d, pr);
      }
      d.probe = path;
      if (pr.loopback_latency_s > 0) probe_loopback_s_ = std::max(probe_loopback_s_, pr.loopback_latency_s);
    }
    for (const auto& [k, v] : kv) {
      if (k == "probe") continue;
      if (k == "mem") d.total_bytes = parse_bytes(v);
      else if (k == "free") d.free_bytes = parse_bytes(v);
      else if (k == "bw") d.bandwidth_Bps = parse_rate(v);
      else if (k == "flops") d.flops = parse_flops(v);
      else if (k == "overhead") d.overhead_bytes = parse_bytes(v);
      else if (k == "op_overhead") d.op_overhead_s = parse_seconds(v);
      else if (k == "attn_bw") d.attn_Bps = parse_rate(v);
      else if (k == "disk") d.disk_Bps = parse_rate(v);
      else if (k.rfind("matvec_", 0) == 0) {
        const auto t = parse_dtype(k.substr(7));
        if (!t) fail("unknown tensor type in '" + k + "' (e.g. matvec_q4_0=20GB/s)");
        d.matvec_Bps[static_cast<uint32_t>(*t)] = parse_rate(v);
        d.matvec_cached_Bps.erase(static_cast<uint32_t>(*t));  // a given rate is the rate: no probe's curve
      } else
        rest[k] = v;
    }
    return from_probe;
  }

  // Defaults and checks once a device's figures are known.
  void finish_device(DeviceProfile& d, const std::map<std::string, std::string>& kv, bool from_probe,
                     const std::string& what) {
    const std::string n = what + " " + d.name;
    for (const auto& [t, r] : d.matvec_Bps)
      if (!(r > 0)) fail(n + ": matvec rates must be positive");
    if (d.total_bytes == 0) fail(n + ": mem must be positive");
    if (!(d.bandwidth_Bps > 0)) fail(n + ": bw must be positive");
    // A probe's MemAvailable is the free memory unless mem= or free= overrides it.
    if (!kv.count("free") && !(from_probe && !kv.count("mem") && d.free_bytes > 0)) {
      // What the OS and display keep: ~0.5 GB on a GPU, 15% (>= 2 GB) of a host's or Mac's RAM.
      const uint64_t keep = d.kind == DeviceKind::Cuda ? (512ull << 20)
                                                       : std::max<uint64_t>(2ull << 30, d.total_bytes / 100 * 15);
      d.free_bytes = d.total_bytes > keep ? d.total_bytes - keep : 0;
    }
    if (d.free_bytes > d.total_bytes) fail(n + ": free is larger than mem");
    if (!kv.count("flops") && !(d.flops > 0)) d.flops = d.bandwidth_Bps * 50;  // a typical FLOP:byte ratio
    default_overhead(d, kv);
  }

  static void default_overhead(DeviceProfile& d, const std::map<std::string, std::string>& kv) {
    if (!kv.count("overhead"))
      d.overhead_bytes = d.kind == DeviceKind::Cuda    ? (400ull << 20)
                         : d.kind == DeviceKind::Metal ? (256ull << 20)
                                                       : (128ull << 20);
  }

  void add_name(const std::string& name) {
    if (!names_.insert(name).second) fail("duplicate name '" + name + "'");
  }

  void device_line(const Line& l) {
    if (!l.pos.empty()) fail("device takes only key=value pairs, got '" + l.pos[0] + "'");
    DeviceProfile d;
    std::map<std::string, std::string> rest;
    // A CUDA device line with probe= takes the probe's first GPU (cuda:0).
    const bool cuda = l.kv.count("kind") && parse_kind(l.kv.at("kind")) == DeviceKind::Cuda;
    const bool from_probe = figures(d, l.kv, rest, cuda ? 0 : -1);
    for (const auto& [k, v] : rest) {
      if (k == "name") d.name = v;
      else if (k == "kind") d.kind = parse_kind(v);
      else if (k == "host") d.host = v;
      else
        fail("unknown device key '" + k + "' (name, kind, host, " + kFigureKeys +
             "; where to start a worker goes on a worker line: docs/cluster-file.md)");
    }
    if (d.name.empty()) fail("device needs name=");
    if (names_.count(d.name)) fail("duplicate device name '" + d.name + "'");
    add_name(d.name);
    if (!l.kv.count("mem") && !from_probe) fail("device " + d.name + " needs mem= (or probe=)");
    if (!l.kv.count("bw") && !from_probe) fail("device " + d.name + " needs bw= (or probe=)");
    finish_device(d, l.kv, from_probe, "device");
    if (d.host.empty()) d.host = d.name;
    c_.devices.push_back(std::move(d));
  }

  void worker_line(const Line& l) {
    if (!l.pos.empty()) fail("worker takes only key=value pairs, got '" + l.pos[0] + "'");
    DeviceProfile d;
    WorkerLine w;
    w.line = lineno_;
    std::map<std::string, std::string> rest;
    if (l.kv.count("device") && l.kv.count("kind")) fail("give device= or kind=, not both");
    if (auto it = l.kv.find("device"); it != l.kv.end()) w.device_arg = parse_device_spec(it->second, &d.kind, &w.cuda_index);
    if (auto it = l.kv.find("kind"); it != l.kv.end()) {
      d.kind = parse_kind(it->second);
      w.cuda_index = d.kind == DeviceKind::Cuda ? 0 : -1;
      w.device_arg = d.kind == DeviceKind::Cuda ? "cuda:0" : device_kind_name(d.kind);
    }
    const bool from_probe = figures(d, l.kv, rest, w.cuda_index);
    bool has_port = false;
    for (const auto& [k, v] : rest) {
      if (k == "host") w.host = v;
      else if (k == "port") w.port = parse_int("port", v, 1, 65535), has_port = true;
      else if (k == "threads") w.threads = parse_int("threads", v, 0, 4096);
      else if (k == "cpu") {  // herd lab's CPU quota (launch/herd-lab): cores, 0.01-1024
        char* end = nullptr;
        w.cpu = std::strtod(v.c_str(), &end);
        if (v.empty() || !end || *end != '\0' || !(w.cpu >= 0.01 && w.cpu <= 1024))
          fail("cpu must be a number of cores in 0.01-1024 (herd lab's CPU quota), got '" + v + "'");
      }
      else if (k == "ssh") w.ssh = v;
      else if (k == "model") w.model = v;
      else if (k == "bind") w.bind = v;
      else if (k == "herd") w.herd = v;
      else if (k == "name") d.name = v;
      else if (k == "device" || k == "kind") continue;  // read above, before the figures
      else
        fail("unknown key '" + k + "' on a worker line (host, port, threads, cpu, ssh, model, bind, herd, name, device, " +
             kFigureKeys + ")");
    }
    if (w.host.empty()) fail("worker needs host= (the address the coordinator connects to)");
    if (!has_port) fail("worker " + w.host + " needs port=");
    d.host = w.host;
    d.address = (w.host.find(':') != std::string::npos ? "[" + w.host + "]" : w.host) + ":" + std::to_string(w.port);
    if (d.name.empty()) d.name = d.address;
    if (!addresses_.insert(d.address).second) fail("two workers at " + d.address);
    add_name(d.name);
    const bool mem = l.kv.count("mem") != 0, bw = l.kv.count("bw") != 0;
    const bool any = std::any_of(l.kv.begin(), l.kv.end(), [&](const auto& kv) { return !rest.count(kv.first); });
    if (from_probe || (mem && bw)) {
      finish_device(d, l.kv, from_probe, "worker");
    } else if (any) {
      fail("worker " + d.name + " states some figures but not " + std::string(!mem && !bw ? "mem= and bw=" : !mem ? "mem=" : "bw=") +
           ": give mem= and bw= (or probe=FILE), or none to have it measured");
    } else {
      d.figures = false;  // measured when it starts (or probed by `herd plan` on this host)
      default_overhead(d, l.kv);
    }
    w.device = c_.devices.size();
    c_.devices.push_back(std::move(d));
    c_.workers.push_back(std::move(w));
  }

  void link_line(const Line& l) {
    LinkProfile lp;
    bool has_lat = false, has_bw = false;
    for (const auto& [k, v] : l.kv) {
      if (k == "latency") lp.latency_s = parse_seconds(v), has_lat = true;
      else if (k == "bw") lp.bandwidth_Bps = parse_rate(v), has_bw = true;
      else fail("unknown link key '" + k + "' (latency, bw)");
    }
    if (!has_lat || !has_bw) fail("link needs latency= and bw=");
    if (!(lp.bandwidth_Bps > 0)) fail("link bw must be positive");
    const auto& pos = l.pos;
    if (pos.size() == 1 && lower(pos[0]) == "default") c_.default_link = lp;
    else if (pos.size() == 1 && lower(pos[0]) == "local") c_.local_link = lp, explicit_local_ = c_.local_link_given = true;
    else if (pos.size() == 2) {
      if (pos[0] == pos[1]) fail("link from '" + pos[0] + "' to itself (use 'link local')");
      c_.links[pos[0] < pos[1] ? std::make_pair(pos[0], pos[1]) : std::make_pair(pos[1], pos[0])] = lp;
    } else
      fail("link takes 'default', 'local' or two host names, then latency= bw=");
  }

  void finish() {
    // A measured loopback message latency beats the 10 us guess for devices sharing a host.
    if (!explicit_local_ && probe_loopback_s_ > 0) c_.local_link.latency_s = probe_loopback_s_;
    if (c_.devices.empty())
      throw ClusterError(source_ + ": no devices or workers (add a line like: worker host=127.0.0.1 port=7101)");
    // Every host a link names must exist, so a typo does not silently fall back to the default link.
    std::set<std::string> known;
    for (const auto& d : c_.devices) known.insert(d.host), known.insert(d.name);
    for (const auto& [k, l] : c_.links)
      for (const auto& h : {k.first, k.second})
        if (!known.count(h)) throw ClusterError(source_ + ": link names '" + h + "', which is no worker, device or host");
    if (!c_.coordinator_host.empty() && !known.count(c_.coordinator_host))
      throw ClusterError(source_ + ": coordinator host '" + c_.coordinator_host + "' is no worker, device or host");
    for (const auto& d : c_.devices)
      if (d.name == c_.coordinator_host) c_.coordinator_host = d.host;  // a device name means its host
  }

  std::string source_, base_dir_;
  int lineno_ = 0;
  Cluster c_;
  std::set<std::string> names_, addresses_;
  bool explicit_local_ = false;
  double probe_loopback_s_ = 0;
};

}  // namespace

void apply_probe(DeviceProfile& d, const ProbeResult& pr, int sharing) {
  d.total_bytes = pr.mem_total_bytes;
  d.free_bytes = pr.mem_available_bytes / static_cast<uint64_t>(std::max(1, sharing));
  d.bandwidth_Bps = pr.read_bw_Bps;
  d.flops = pr.matmul_flops;
  d.matvec_Bps = pr.matvec_Bps;
  d.matvec_bytes = pr.matvec_bytes;
  d.matvec_cached_Bps = pr.matvec_cached_Bps;
  d.attn_Bps = pr.attn_Bps;
  d.op_overhead_s = pr.op_overhead_s;
  d.disk_Bps = pr.disk_read_Bps;  // 0 unless probed with --disk: the device then never streams
  d.figures = true;
}

void apply_probe_gpu(DeviceProfile& d, const ProbeResult& pr, const ProbeGpu& g) {
  d.total_bytes = g.total_bytes;
  d.free_bytes = g.free_bytes;
  d.bandwidth_Bps = g.copy_bw_Bps;  // 0 when not measured: the line's bw= must say it
  d.flops = 0;                      // not measured on a GPU yet: flops= or the default ratio
  d.matvec_Bps.clear();             // the host's CPU kernel rates say nothing about the GPU
  d.matvec_cached_Bps.clear();
  d.attn_Bps = 0;
  d.op_overhead_s = 0;
  d.disk_Bps = pr.disk_read_Bps;    // the host's disk, which the GPU's worker reads too
  d.figures = true;
}

std::string parse_device_spec(const std::string& v, DeviceKind* kind, int* cuda_index) {
  const std::string s = lower(v);
  *cuda_index = -1;
  if (s == "cpu") return *kind = DeviceKind::Cpu, "cpu";
  if (s == "metal") return *kind = DeviceKind::Metal, "metal";
  if (s == "cuda" || s.rfind("cuda:", 0) == 0) {
    int n = 0;
    if (s.size() > 4) {
      const std::string num = s.substr(5);
      bool ok = !num.empty() && num.size() <= 4;
      for (char c : num) ok = ok && std::isdigit(static_cast<unsigned char>(c));
      if (ok) n = std::stoi(num);
      if (!ok || n > 1023)
        throw std::invalid_argument("device '" + v + "': cuda:N needs N a whole number 0-1023 (the CUDA device index)");
    }
    *kind = DeviceKind::Cuda;
    *cuda_index = n;
    return "cuda:" + std::to_string(n);
  }
  throw std::invalid_argument("unknown device '" + v + "' (cpu, cuda:N, metal)");
}

std::vector<std::string> devices_herd_cannot_run(const Cluster& c, bool cuda_built) {
  std::vector<std::string> out;
  for (const auto& d : c.devices) {
    if (d.kind == DeviceKind::Metal)
      out.push_back("device " + d.name + " (metal): modelled only: herd has no Metal backend yet");
    else if (d.kind == DeviceKind::Cuda && !cuda_built)
      out.push_back("device " + d.name + " (cuda): modelled only: this herd was built without CUDA (HERD_CUDA)");
  }
  return out;
}

bool is_loopback_host(const std::string& host) {
  return host.rfind("127.", 0) == 0 || host == "localhost" || host == "::1" || host == "[::1]";
}

std::vector<size_t> workers_without_figures(const Cluster& c) {
  std::vector<size_t> out;
  for (size_t i = 0; i < c.workers.size(); ++i)
    if (!c.devices[c.workers[i].device].figures) out.push_back(i);
  return out;
}

void require_figures(const Cluster& c, const std::string& source) {
  const auto missing = workers_without_figures(c);
  if (missing.empty()) return;
  std::string msg = std::to_string(missing.size()) + " worker" + (missing.size() == 1 ? "" : "s") +
                    " without figures to plan with:";
  for (size_t i : missing) {
    const WorkerLine& w = c.workers[i];
    msg += "\n  " + source + ":" + std::to_string(w.line) + ": worker " + c.devices[w.device].name +
           " states no mem= and bw=";
  }
  msg += "\nadd mem= and bw= (flops= optional) to each, or probe=FILE from `herd probe -t THREADS --out FILE` run on "
         "that host; workers on 127.0.0.1 are probed here. A run (herd-cluster FILE -- run ...) measures every "
         "worker itself.";
  throw ClusterError(msg);
}

Cluster parse_cluster(const std::string& text, const std::string& source) { return Parser(source).parse(text); }

Cluster load_cluster(const std::string& path) {
  std::string text;
  if (!read_whole_file(path, text)) throw ClusterError(path + ": cannot open cluster file");
  return parse_cluster(text, path);
}

}  // namespace herd::partition
