// engine/host_probe's /proc/meminfo reader in a process whose descriptors are all taken: a worker
// under a flood of silent connections ([trust] item 4) answers a Hello with MemAvailable, and a
// failed open used to report "0 bytes free", so the planner refused a worker with gigabytes free.
#include <gtest/gtest.h>

#include "engine/host_probe.h"
#include "tests/no_free_descriptors.h"

namespace herd {
namespace {

using test::with_no_free_descriptors;

TEST(HostProbe, MeminfoIsReadWhenNoDescriptorIsFreeOnceItWasReadBefore) {
  const uint64_t total = meminfo_bytes("MemTotal");
  ASSERT_GT(total, 0u);
  const int rc = with_no_free_descriptors([] { (void)meminfo_bytes("MemAvailable"); },
                                          [total](int) {
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
