#pragma once
// Opening files when descriptors are scarce. A worker under the descriptor attack of [trust]
// item 4 (silent TCP connections, each holding a descriptor until ZeroMQ's handshake deadline)
// may have none free at the moment an Assign needs its model file, its hash cache or its weight
// cache. ::open then fails with EMFILE; these wait for a descriptor instead, up to
// kDescriptorWaitMs (over two handshake intervals, transport::kHandshakeTimeoutMs = 3 s), so the
// request is served late rather than refused, and a cache read never mistakes "no descriptor" for
// "no file" (and then writes back less than was there).
#include <sys/types.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <thread>

namespace herd {

constexpr int kDescriptorWaitMs = 7000;

// Calls `attempt()` (true: done) again every 10 ms while it fails with errno EMFILE or ENFILE, for at
// most `wait_ms`. Its last result, with errno as that attempt left it.
template <class Attempt>
bool retry_while_no_descriptor(Attempt attempt, int wait_ms = kDescriptorWaitMs) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  for (;;) {
    if (attempt()) return true;
    const int e = errno;
    if ((e != EMFILE && e != ENFILE) || std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    errno = e;
  }
}

// ::open(path, flags, mode), retried every 10 ms while it fails with EMFILE or ENFILE, for at most
// `wait_ms`. Returns the descriptor, or -1 with errno set (EMFILE still, after the wait).
int open_waiting(const std::string& path, int flags, mode_t mode = 0, int wait_ms = kDescriptorWaitMs);

// The whole file into `out`. False, with errno set, when it cannot be opened or read (ENOENT:
// absent; EFBIG: over `max_bytes`).
bool read_whole_file(const std::string& path, std::string& out, size_t max_bytes = size_t(1) << 30);

// Writes `data` to `path` (created 0644 or truncated). False, with errno set, on any failure.
bool write_whole_file(const std::string& path, const std::string& data);

}  // namespace herd
