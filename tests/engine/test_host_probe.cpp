// engine/host_probe's /proc/meminfo reader in a process whose descriptors are all taken: a worker
// under a flood of silent connections ([trust] item 4) answers a Hello with MemAvailable, and a
// failed open used to report "0 bytes free", so the planner refused a worker with gigabytes free.
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "engine/host_probe.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/dtype.h"
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

// The probe's matrices span beyond the last-level cache, or it times the cache, not the DRAM a
// large model's decode reads.
TEST(HostProbe, WorkingSetsSpanTwiceTheLastLevelCacheWithinAFloorAndACap) {
  constexpr uint64_t MiB = 1ull << 20, GiB = 1ull << 30;
  HostProbeOptions full, quick, startup;
  quick.quick = true;
  startup.startup = true;
  EXPECT_EQ(probe_working_set_bytes(full, 32 * MiB, 16 * GiB, false), 96 * MiB);     // the floor
  EXPECT_EQ(probe_working_set_bytes(full, 480 * MiB, 22 * GiB, false), 960 * MiB);   // 2 x LLC
  EXPECT_EQ(probe_working_set_bytes(full, 480 * MiB, 22 * GiB, true), 960 * MiB);
  EXPECT_EQ(probe_working_set_bytes(full, 0, 22 * GiB, true), 512 * MiB);            // LLC unknown
  EXPECT_EQ(probe_working_set_bytes(quick, 480 * MiB, 22 * GiB, false), 600 * MiB);  // 1.25 x LLC
  EXPECT_EQ(probe_working_set_bytes(full, 480 * MiB, 1200 * MiB, false), 200 * MiB); // MemAvailable / 6
  EXPECT_EQ(probe_working_set_bytes(full, 480 * MiB, 120 * MiB, false), 96 * MiB);   // never under the floor
  EXPECT_EQ(probe_working_set_bytes(full, 4 * GiB, 64 * GiB, false), 2 * GiB);       // the absolute cap
  EXPECT_EQ(probe_working_set_bytes(startup, 480 * MiB, 22 * GiB, false), 24 * MiB); // startup: fixed
  EXPECT_EQ(probe_working_set_bytes(startup, 480 * MiB, 22 * GiB, true), 64 * MiB);
}

TEST(HostProbe, TheLastLevelCacheIsTheLargestCacheSysfsOrSysconfReports) {
  const uint64_t llc = last_level_cache_bytes();
  std::ifstream f("/sys/devices/system/cpu/cpu0/cache/index0/size");
  if (f) {
    EXPECT_GT(llc, 0u) << "sysfs lists caches but none was read";
  }
  for (int i = 0; i < 8; ++i) {
    std::ifstream g("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size");
    std::string v;
    if (!(g >> v)) continue;
    const uint64_t n = std::stoull(v) << (v.back() == 'K' ? 10 : v.back() == 'M' ? 20 : 0);
    EXPECT_GE(llc, n) << "index" << i << " = " << v;
  }
}

// herd probe --disk: a file's sequential read from storage; errors name the file.
TEST(HostProbe, DiskReadSpeedOfAFileAndItsErrors) {
  const std::string path = std::filesystem::temp_directory_path() / ("herd-disk-" + std::to_string(::getpid()));
  {
    std::ofstream f(path, std::ios::binary);
    std::string block(1 << 20, 'x');
    for (int i = 0; i < 8; ++i) f << block;
  }
  EXPECT_GT(disk_read_bps(path), 0.0);
  EXPECT_GT(disk_read_bps(path, 2 << 20), 0.0);  // a cap under the file's size
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << "small";
  }
  try {
    disk_read_bps(path);
    ADD_FAILURE() << "a 5-byte file was timed";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("too little to time a disk"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
  try {
    disk_read_bps(path);
    ADD_FAILURE() << "a missing file was timed";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

// The cache curve: a full probe also times each matvec type over the curve's sizes under two
// thirds of its main matrices (ascending, each a positive rate); --quick and the startup profile
// leave it out.
TEST(HostProbe, AFullProbeTimesTheCacheCurveUnderItsMainMatrices) {
  auto be = make_cpu_backend();
  be->set_threads(1);
  HostProbeOptions o;
  o.types = {static_cast<uint32_t>(DType::Q4_0)};
  const size_t main_bytes = size_t{40} << 20;  // 8, 16 (x 1.5 <= 40) but not 32 or more MiB
  const ProbeResult r = probe_device(*be, o, main_bytes);
  EXPECT_EQ(r.matvec_bytes, main_bytes);
  ASSERT_EQ(r.matvec_cached_Bps.size(), 1u);
  const auto& pts = r.matvec_cached_Bps.at(static_cast<uint32_t>(DType::Q4_0));
  ASSERT_EQ(pts.size(), 2u);
  EXPECT_EQ(pts[0].first, uint64_t{8} << 20);
  EXPECT_EQ(pts[1].first, uint64_t{16} << 20);
  for (const auto& [bytes, rate] : pts) EXPECT_GT(rate, 0.0) << bytes;
  o.quick = true;
  EXPECT_TRUE(probe_device(*be, o, main_bytes).matvec_cached_Bps.empty());
  o.quick = false;
  o.startup = true;
  EXPECT_TRUE(probe_device(*be, o, main_bytes).matvec_cached_Bps.empty());
}

TEST(HostProbe, AKeyThatIsNotInMeminfoIsZero) { EXPECT_EQ(meminfo_bytes("NoSuchField"), 0u); }

}  // namespace
}  // namespace herd
