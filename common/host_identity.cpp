#include "common/host_identity.h"

#include <unistd.h>

#include <fstream>
#include <string>

namespace herd {

uint64_t host_identity() {
  char name[256] = {};
  ::gethostname(name, sizeof(name) - 1);
  std::string boot;
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::getline(f, boot);
  const std::string s = std::string(name) + "\n" + boot;
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h ? h : 1;
}

}  // namespace herd
