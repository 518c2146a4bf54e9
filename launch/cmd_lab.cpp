// `herd lab FILE ...`: the lab is the Python script launch/herd-lab (standard library only); this
// finds it and execs it with HERD set to this binary, so the lab's workers, probes, plans and
// benches are this herd. The script is looked up as herd-cluster's herd is: beside this binary
// (build/bin/herd-lab, or the installed one), then in the source tree the binary was built from,
// then on PATH. $HERD_LAB names it explicitly.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "launch/commands.h"

namespace herd::cli {
namespace {

std::string self_exe() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.string();
}

bool executable(const std::string& p) { return !p.empty() && ::access(p.c_str(), X_OK) == 0; }

std::string find_lab_script(const std::string& exe) {
  if (const char* e = std::getenv("HERD_LAB"); e && *e) return e;
  std::vector<std::string> tries;
  if (!exe.empty()) tries.push_back((std::filesystem::path(exe).parent_path() / "herd-lab").string());
  tries.push_back(std::string(HERD_SOURCE_DIR) + "/launch/herd-lab");
  for (const auto& t : tries)
    if (executable(t)) return t;
  if (const char* path = std::getenv("PATH")) {
    std::string dirs = path;
    size_t start = 0;
    while (start <= dirs.size()) {
      size_t end = dirs.find(':', start);
      if (end == std::string::npos) end = dirs.size();
      const std::string d = dirs.substr(start, end - start);
      if (!d.empty() && executable(d + "/herd-lab")) return d + "/herd-lab";
      start = end + 1;
    }
  }
  return "";
}

}  // namespace

int cmd_lab(const Args& args) {
  const std::string exe = self_exe();
  const std::string script = find_lab_script(exe);
  if (script.empty()) {
    std::fprintf(stderr, "herd lab: error: the lab script herd-lab was found neither beside this binary, nor in %s/launch, "
                 "nor on PATH (set HERD_LAB=/path/to/herd-lab)\n", HERD_SOURCE_DIR);
    return 1;
  }
  if (!exe.empty()) ::setenv("HERD", exe.c_str(), 0);  // an explicit $HERD wins
  if (!std::getenv("HERD_MODEL")) {
    const std::string m = default_model_path();
    if (std::filesystem::exists(m)) ::setenv("HERD_MODEL", m.c_str(), 1);
  }
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(script.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv(script.c_str(), argv.data());
  std::fprintf(stderr, "herd lab: error: cannot run %s: %s (it needs python3 on PATH)\n", script.c_str(),
               std::strerror(errno));
  return 1;
}

}  // namespace herd::cli
