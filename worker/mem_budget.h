// How much memory a worker may keep resident (--mem-budget): given, or "auto" = what this host can
// give it — the memory it holds now plus MemAvailable, or its memory cgroup's limit when that is
// lower (cgroup v1 memory.limit_in_bytes, v2 memory.max, the lowest along the path to the root).
#pragma once

#include <cstdint>
#include <string>

namespace herd {

// The lowest memory cgroup limit over this process's cgroup and its ancestors, in bytes; 0 when
// there is none (or it cannot be read). `where` (optional) names the file it came from.
uint64_t cgroup_memory_limit(std::string* where = nullptr);

// The "auto" budget described above; `how` (optional) says where it came from.
uint64_t auto_mem_budget(std::string* how = nullptr);

// /proc/self/status "VmRSS" (what this process holds resident now), in bytes; 0 when unknown.
uint64_t resident_bytes();

}  // namespace herd
