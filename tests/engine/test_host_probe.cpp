// engine/host_probe's /proc/meminfo reader in a process whose descriptors are all taken: a worker
// under a flood of silent connections ([trust] item 4) answers a Hello with MemAvailable, and a
// failed open used to report "0 bytes free", so the planner refused a worker with gigabytes free.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <vector>

#include "engine/host_probe.h"

namespace herd {
namespace {

// Runs `body` in a child whose descriptors are exhausted after `before` ran; the child's exit code.
template <class Before, class Body>
int with_no_free_descriptors(Before before, Body body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    before();
    rlimit l{256, 256};
    if (::setrlimit(RLIMIT_NOFILE, &l) != 0) _exit(90);
    while (::open("/dev/null", O_RDONLY) >= 0) {
    }
    if (::open("/dev/null", O_RDONLY) >= 0) _exit(91);  // really none left
    _exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(HostProbe, MeminfoIsReadWhenNoDescriptorIsFreeOnceItWasReadBefore) {
  const uint64_t total = meminfo_bytes("MemTotal");
  ASSERT_GT(total, 0u);
  const int rc = with_no_free_descriptors([] { (void)meminfo_bytes("MemAvailable"); },
                                          [total] {
                                            // Twice: each read is a fresh pread, not a cached value.
                                            for (int i = 0; i < 2; ++i) {
                                              const uint64_t a = meminfo_bytes("MemAvailable");
                                              if (a == 0) return 1;
                                              if (a > total) return 2;
                                              if (meminfo_bytes("MemTotal") != total) return 3;
                                            }
                                            return 0;
                                          });
  EXPECT_EQ(rc, 0) << "1: 0 bytes available, 2: more than MemTotal, 3: MemTotal changed, 9x: setup";
}

TEST(HostProbe, AKeyThatIsNotInMeminfoIsZero) { EXPECT_EQ(meminfo_bytes("NoSuchField"), 0u); }

}  // namespace
}  // namespace herd
