#include "common/busy_poll.h"

#include <algorithm>
#include <cstdlib>

namespace herd {

std::chrono::microseconds busy_poll_window() {
  static const std::chrono::microseconds w = [] {
    const char* e = std::getenv("HERD_BUSY_POLL_US");
    if (!e || !*e) return std::chrono::microseconds(20000);
    char* end = nullptr;
    const long long v = std::strtoll(e, &end, 10);
    return std::chrono::microseconds(end && *end == '\0' && v > 0 ? std::min<long long>(v, 10'000'000) : 0);
  }();
  return w;
}

}  // namespace herd
