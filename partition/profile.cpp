#include "partition/profile.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "kernels/dtype.h"
#include "engine/probe_profile.h"

namespace herd::partition {
namespace {

std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// Splits "12.5GB/s" into 12.5 and "gb/s" (lower-cased). Throws when there is no number.
std::pair<double, std::string> number_unit(const std::string& v) {
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (const std::exception&) {
    throw std::invalid_argument("'" + v + "' is not a number with a unit");
  }
  if (!std::isfinite(x) || x < 0) throw std::invalid_argument("'" + v + "' must be a non-negative number");
  std::string unit = lower(v.substr(used));
  return {x, unit};
}

double scale(const std::string& prefix, bool binary) {
  if (prefix.empty()) return 1;
  const double k = binary ? 1024.0 : 1000.0;
  switch (prefix[0]) {
    case 'k': return k;
    case 'm': return k * k;
    case 'g': return k * k * k;
    case 't': return k * k * k * k;
    default: return 0;
  }
}

}  // namespace

const char* device_kind_name(DeviceKind k) {
  switch (k) {
    case DeviceKind::Cuda: return "cuda";
    case DeviceKind::Metal: return "metal";
    default: return "cpu";
  }
}

uint64_t parse_bytes(const std::string& v) {
  auto [x, u] = number_unit(v);
  double m = 0;
  if (u == "b" || u.empty()) m = 1;
  else if (u.size() == 2 && u[1] == 'b') m = scale(u.substr(0, 1), false);
  else if (u.size() == 3 && u.substr(1) == "ib") m = scale(u.substr(0, 1), true);
  if (m == 0) throw std::invalid_argument("'" + v + "': unknown size unit (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)");
  return static_cast<uint64_t>(std::llround(x * m));
}

double parse_rate(const std::string& v) {
  // Not a structured binding: the lambda below captures u, which clang 14 (the sanitizer build's
  // compiler) does not allow for bindings.
  const auto parsed = number_unit(v);
  const double x = parsed.first;
  std::string u = parsed.second;
  // bytes: "gb/s" "gib/s" "b/s"; bits: "gbit" "gbit/s" "gbps" "gb" is bytes.
  auto strip = [&](const std::string& suffix) {
    if (u.size() >= suffix.size() && u.compare(u.size() - suffix.size(), suffix.size(), suffix) == 0) {
      u = u.substr(0, u.size() - suffix.size());
      return true;
    }
    return false;
  };
  strip("/s");
  if (strip("bit") || strip("bps")) {
    double m = scale(u, false);
    if (m == 0 || u.size() > 1) throw std::invalid_argument("'" + v + "': unknown rate unit");
    return x * m / 8.0;
  }
  if (strip("ib")) {
    double m = scale(u, true);
    if (m == 0 || u.size() != 1) throw std::invalid_argument("'" + v + "': unknown rate unit");
    return x * m;
  }
  if (strip("b")) {
    double m = scale(u, false);
    if (m == 0 || u.size() > 1) throw std::invalid_argument("'" + v + "': unknown rate unit");
    return x * m;
  }
  throw std::invalid_argument("'" + v + "': unknown rate unit (use GB/s, MB/s, GiB/s, Gbit, Mbit, Gbps)");
}

double parse_flops(const std::string& v) {
  auto [x, u] = number_unit(v);
  for (const char* suffix : {"flop/s", "flops", "flop"})
    if (u.size() >= std::string(suffix).size() && u.ends_with(suffix)) {
      u = u.substr(0, u.size() - std::string(suffix).size());
      break;
    }
  if (u.size() > 1) throw std::invalid_argument("'" + v + "': unknown FLOP/s unit (use e.g. 70T or 800GFLOPS)");
  const double m = scale(u, false);
  if (m == 0) throw std::invalid_argument("'" + v + "': unknown FLOP/s unit (use e.g. 70T or 800GFLOPS)");
  return x * m;
}

double parse_seconds(const std::string& v) {
  auto [x, u] = number_unit(v);
  if (u == "s") return x;
  if (u == "ms") return x * 1e-3;
  if (u == "us" || u == "µs") return x * 1e-6;
  if (u == "ns") return x * 1e-9;
  throw std::invalid_argument("'" + v + "': unknown time unit (use s, ms, us, ns)");
}

LinkProfile Cluster::link_hosts(const std::string& ha, const std::string& hb) const {
  if (ha == hb) return local_link;
  auto key = ha < hb ? std::make_pair(ha, hb) : std::make_pair(hb, ha);
  if (auto it = links.find(key); it != links.end()) return it->second;
  return default_link;
}

const std::string& Cluster::coordinator() const {
  static const std::string none;
  if (!coordinator_host.empty()) return coordinator_host;
  return devices.empty() ? none : devices[0].host;
}

LinkProfile Cluster::link(int a, int b) const {
  const std::string& ha = a < 0 ? coordinator() : devices[static_cast<size_t>(a)].host;
  const std::string& hb = b < 0 ? coordinator() : devices[static_cast<size_t>(b)].host;
  // A link line may name devices instead of hosts.
  if (a >= 0 && b >= 0) {
    const auto& na = devices[static_cast<size_t>(a)].name;
    const auto& nb = devices[static_cast<size_t>(b)].name;
    auto key = na < nb ? std::make_pair(na, nb) : std::make_pair(nb, na);
    if (auto it = links.find(key); it != links.end()) return it->second;
  }
  return link_hosts(ha, hb);
}

Cluster Cluster::without(int i) const {
  Cluster c = *this;
  if (c.coordinator_host.empty()) c.coordinator_host = coordinator();  // keep the coordinator where it was
  c.devices.erase(c.devices.begin() + i);
  return c;
}

Cluster parse_cluster(const std::string& text, const std::string& source) {
  Cluster c;
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  std::set<std::string> names;
  bool explicit_local = false;
  double probe_loopback_s = 0;
  const std::string base_dir = source.find('/') != std::string::npos ? source.substr(0, source.rfind('/') + 1) : "";
  auto fail = [&](const std::string& what) { throw ClusterError(source + ":" + std::to_string(lineno) + ": " + what); };
  while (std::getline(in, line)) {
    ++lineno;
    if (auto h = line.find('#'); h != std::string::npos) line.resize(h);
    std::istringstream ls(line);
    std::vector<std::string> words;
    for (std::string w; ls >> w;) words.push_back(w);
    if (words.empty()) continue;
    const std::string directive = lower(words[0]);
    // key=value pairs after the positional words.
    std::vector<std::string> pos;
    std::map<std::string, std::string> kv;
    for (size_t i = 1; i < words.size(); ++i) {
      auto eq = words[i].find('=');
      if (eq == std::string::npos) {
        if (!kv.empty()) fail("'" + words[i] + "' must be key=value");
        pos.push_back(words[i]);
        continue;
      }
      const std::string k = lower(words[i].substr(0, eq)), v = words[i].substr(eq + 1);
      if (k.empty() || v.empty()) fail("'" + words[i] + "' must be key=value");
      if (kv.count(k)) fail("key '" + k + "' given twice");
      kv[k] = v;
    }
    try {
      if (directive == "device") {
        if (!pos.empty()) fail("device takes only key=value pairs, got '" + pos[0] + "'");
        DeviceProfile d;
        bool from_probe = false;
        if (auto it = kv.find("probe"); it != kv.end()) {
          // Measured values first; every explicit key below overrides them.
          const std::string path = !it->second.empty() && it->second[0] != '/' ? base_dir + it->second : it->second;
          ProbeResult pr;
          try {
            pr = load_probe(path);
          } catch (const std::runtime_error& e) {
            fail(e.what());
          }
          from_probe = true;
          d.probe = path;
          d.total_bytes = pr.mem_total_bytes;
          d.free_bytes = pr.mem_available_bytes;
          d.bandwidth_Bps = pr.read_bw_Bps;
          d.flops = pr.matmul_flops;
          d.matvec_Bps = pr.matvec_Bps;
          d.attn_Bps = pr.attn_Bps;
          d.op_overhead_s = pr.op_overhead_s;
          if (pr.loopback_latency_s > 0) probe_loopback_s = std::max(probe_loopback_s, pr.loopback_latency_s);
        }
        for (const auto& [k, v] : kv) {
          if (k == "probe") continue;
          if (k == "name") d.name = v;
          else if (k == "kind") {
            const std::string kl = lower(v);
            if (kl == "cpu") d.kind = DeviceKind::Cpu;
            else if (kl == "cuda" || kl == "gpu") d.kind = DeviceKind::Cuda;
            else if (kl == "metal") d.kind = DeviceKind::Metal;
            else fail("unknown kind '" + v + "' (cpu, cuda, metal)");
          } else if (k == "mem") d.total_bytes = parse_bytes(v);
          else if (k == "free") d.free_bytes = parse_bytes(v);
          else if (k == "bw") d.bandwidth_Bps = parse_rate(v);
          else if (k == "flops") d.flops = parse_flops(v);
          else if (k == "overhead") d.overhead_bytes = parse_bytes(v);
          else if (k == "host") d.host = v;
          else if (k == "op_overhead") d.op_overhead_s = parse_seconds(v);
          else if (k == "attn_bw") d.attn_Bps = parse_rate(v);
          else if (k.rfind("matvec_", 0) == 0) {
            const auto t = parse_dtype(k.substr(7));
            if (!t) fail("unknown tensor type in '" + k + "' (e.g. matvec_q4_0=20GB/s)");
            d.matvec_Bps[static_cast<uint32_t>(*t)] = parse_rate(v);
          } else
            fail("unknown device key '" + k +
                 "' (name, kind, mem, free, bw, flops, overhead, host, probe, op_overhead, attn_bw, matvec_<type>)");
        }
        if (d.name.empty()) fail("device needs name=");
        if (!names.insert(d.name).second) fail("duplicate device name '" + d.name + "'");
        if (!kv.count("mem") && !from_probe) fail("device " + d.name + " needs mem= (or probe=)");
        if (!kv.count("bw") && !from_probe) fail("device " + d.name + " needs bw= (or probe=)");
        for (const auto& [t, r] : d.matvec_Bps)
          if (!(r > 0)) fail("device " + d.name + ": matvec rates must be positive");
        if (d.total_bytes == 0) fail("device " + d.name + ": mem must be positive");
        if (!(d.bandwidth_Bps > 0)) fail("device " + d.name + ": bw must be positive");
        // A probe's MemAvailable is the free memory unless mem= or free= overrides it.
        if (!kv.count("free") && !(from_probe && !kv.count("mem") && d.free_bytes > 0)) {
          // What the OS and display keep: ~0.5 GB on a GPU, 15% (≥ 2 GB) of a host's or Mac's RAM.
          const uint64_t keep = d.kind == DeviceKind::Cuda
                                    ? (512ull << 20)
                                    : std::max<uint64_t>(2ull << 30, d.total_bytes / 100 * 15);
          d.free_bytes = d.total_bytes > keep ? d.total_bytes - keep : 0;
        }
        if (d.free_bytes > d.total_bytes) fail("device " + d.name + ": free is larger than mem");
        if (!kv.count("flops") && !(d.flops > 0)) d.flops = d.bandwidth_Bps * 50;  // a typical FLOP:byte ratio
        if (!kv.count("overhead"))
          d.overhead_bytes = d.kind == DeviceKind::Cuda ? (400ull << 20) : d.kind == DeviceKind::Metal ? (256ull << 20) : (128ull << 20);
        if (d.host.empty()) d.host = d.name;
        c.devices.push_back(std::move(d));
      } else if (directive == "link") {
        LinkProfile l;
        bool has_lat = false, has_bw = false;
        for (const auto& [k, v] : kv) {
          if (k == "latency") l.latency_s = parse_seconds(v), has_lat = true;
          else if (k == "bw") l.bandwidth_Bps = parse_rate(v), has_bw = true;
          else fail("unknown link key '" + k + "' (latency, bw)");
        }
        if (!has_lat || !has_bw) fail("link needs latency= and bw=");
        if (!(l.bandwidth_Bps > 0)) fail("link bw must be positive");
        if (pos.size() == 1 && lower(pos[0]) == "default") c.default_link = l;
        else if (pos.size() == 1 && lower(pos[0]) == "local") c.local_link = l, explicit_local = true;
        else if (pos.size() == 2) {
          if (pos[0] == pos[1]) fail("link from '" + pos[0] + "' to itself (use 'link local')");
          c.links[pos[0] < pos[1] ? std::make_pair(pos[0], pos[1]) : std::make_pair(pos[1], pos[0])] = l;
        } else fail("link takes 'default', 'local' or two host names, then latency= bw=");
      } else if (directive == "coordinator") {
        if (pos.size() != 1 || !kv.empty()) fail("coordinator takes one host name");
        c.coordinator_host = pos[0];
      } else {
        fail("unknown directive '" + words[0] + "' (device, link, coordinator)");
      }
    } catch (const std::invalid_argument& e) {
      fail(e.what());
    }
  }
  // A measured loopback message latency beats the 10 us guess for devices sharing a host.
  if (!explicit_local && probe_loopback_s > 0) c.local_link.latency_s = probe_loopback_s;
  if (c.devices.empty()) throw ClusterError(source + ": no devices (add a line like: device name=gpu0 kind=cuda mem=24GB bw=900GB/s)");
  // Every host a link names must exist, so a typo does not silently fall back to the default link.
  std::set<std::string> known;
  for (const auto& d : c.devices) known.insert(d.host), known.insert(d.name);
  for (const auto& [k, l] : c.links)
    for (const auto& h : {k.first, k.second})
      if (!known.count(h)) throw ClusterError(source + ": link names '" + h + "', which is no device or host");
  if (!c.coordinator_host.empty() && !known.count(c.coordinator_host))
    throw ClusterError(source + ": coordinator host '" + c.coordinator_host + "' is no device or host");
  for (const auto& d : c.devices)
    if (d.name == c.coordinator_host) c.coordinator_host = d.host;  // a device name means its host
  return c;
}

Cluster load_cluster(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw ClusterError(path + ": cannot open cluster file");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_cluster(ss.str(), path);
}

}  // namespace herd::partition
