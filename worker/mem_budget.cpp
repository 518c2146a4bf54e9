#include "worker/mem_budget.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/host_probe.h"

namespace herd {
namespace {

// The first number in the file; 0 for "max", a missing or unreadable file.
uint64_t read_limit(const std::string& path) {
  std::ifstream in(path);
  std::string v;
  if (!(in >> v) || v == "max") return 0;
  try {
    return std::stoull(v);
  } catch (const std::exception&) {
    return 0;
  }
}

// Lines "ID:CONTROLLERS:PATH" of /proc/self/cgroup: the v1 memory controller's path, or v2's ("0::").
void cgroup_paths(std::string& v1, std::string& v2) {
  std::ifstream in("/proc/self/cgroup");
  for (std::string line; std::getline(in, line);) {
    const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string ctl = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (ctl == "") v2 = path;
    std::stringstream ss(ctl);
    for (std::string c; std::getline(ss, c, ',');)
      if (c == "memory") v1 = path;
  }
}

// The lowest limit in `file` under root/path and each of its ancestors up to root.
uint64_t lowest_along(const std::string& root, const std::string& path, const char* file, std::string* where) {
  uint64_t best = 0;
  std::filesystem::path p = std::filesystem::path(path.empty() ? "/" : path).lexically_normal();
  for (;;) {
    const std::string f = root + (p.string() == "/" ? "" : p.string()) + "/" + file;
    // v1's "no limit" is a huge page-rounded number (9223372036854771712): anything above 2^60 is none.
    if (const uint64_t v = read_limit(f); v > 0 && v < (uint64_t{1} << 60) && (best == 0 || v < best)) {
      best = v;
      if (where) *where = f;
    }
    if (p == p.root_path() || p.empty()) break;
    p = p.parent_path();
  }
  return best;
}

}  // namespace

uint64_t cgroup_memory_limit(std::string* where) {
  std::string v1, v2;
  cgroup_paths(v1, v2);
  uint64_t best = 0;
  auto take = [&](uint64_t v, const std::string& w) {
    if (v > 0 && (best == 0 || v < best)) {
      best = v;
      if (where) *where = w;
    }
  };
  std::string w;
  if (!v1.empty()) {
    const uint64_t v = lowest_along("/sys/fs/cgroup/memory", v1, "memory.limit_in_bytes", &w);
    take(v, w);
  }
  if (!v2.empty()) {
    for (const char* root : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
      const uint64_t v = lowest_along(root, v2, "memory.max", &w);
      take(v, w);
    }
  }
  return best;
}

uint64_t resident_bytes() { return proc_status_bytes("VmRSS"); }

uint64_t auto_mem_budget(std::string* how) {
  const uint64_t free_now = meminfo_bytes("MemAvailable") + resident_bytes();
  std::string where;
  const uint64_t cg = cgroup_memory_limit(&where);
  if (cg > 0 && (free_now == 0 || cg < free_now)) {
    if (how) *how = "the memory cgroup limit (" + where + ")";
    return cg;
  }
  if (how) *how = "free memory (MemAvailable + this worker's resident memory)";
  return free_now;
}

}  // namespace herd
