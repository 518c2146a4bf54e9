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

double cached_rate(const std::vector<std::pair<uint64_t, double>>& points, uint64_t beyond_bytes, double beyond_rate,
                   double bytes) {
  if (points.empty() || beyond_bytes == 0 || !(bytes < static_cast<double>(beyond_bytes))) return beyond_rate;
  if (bytes <= static_cast<double>(points.front().first)) return points.front().second;
  for (size_t i = 0; i < points.size(); ++i) {
    const uint64_t b1 = i + 1 < points.size() ? points[i + 1].first : beyond_bytes;
    const double r1 = i + 1 < points.size() ? points[i + 1].second : beyond_rate;
    if (bytes > static_cast<double>(b1) || b1 <= points[i].first) continue;
    const double t = std::log(bytes / static_cast<double>(points[i].first)) /
                     std::log(static_cast<double>(b1) / static_cast<double>(points[i].first));
    return points[i].second + t * (r1 - points[i].second);
  }
  return beyond_rate;
}

double DeviceProfile::matvec_rate(uint32_t type) const {
  auto it = matvec_Bps.find(type);
  if (it == matvec_Bps.end()) return bandwidth_Bps;
  if (working_set_bytes > 0)
    if (auto c = matvec_cached_Bps.find(type); c != matvec_cached_Bps.end())
      return cached_rate(c->second, matvec_bytes, it->second, working_set_bytes);
  return it->second;
}

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
  if (!(x * m < 9.2e18)) throw std::invalid_argument("'" + v + "' is too large a size");
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

}  // namespace herd::partition
