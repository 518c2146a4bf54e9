#include <gtest/gtest.h>

#include "partition/profile.h"

namespace herd::partition {
namespace {

TEST(ClusterUnits, Bytes) {
  EXPECT_EQ(parse_bytes("24GB"), 24000000000ull);
  EXPECT_EQ(parse_bytes("24GiB"), 24ull << 30);
  EXPECT_EQ(parse_bytes("512MB"), 512000000ull);
  EXPECT_EQ(parse_bytes("1.5TB"), 1500000000000ull);
  EXPECT_EQ(parse_bytes("100"), 100ull);
  EXPECT_THROW(parse_bytes("24GX"), std::invalid_argument);
  EXPECT_THROW(parse_bytes("GB"), std::invalid_argument);
  EXPECT_THROW(parse_bytes("-1GB"), std::invalid_argument);
}

TEST(ClusterUnits, Rates) {
  EXPECT_DOUBLE_EQ(parse_rate("900GB/s"), 900e9);
  EXPECT_DOUBLE_EQ(parse_rate("1Gbit"), 125e6);
  EXPECT_DOUBLE_EQ(parse_rate("10Gbit/s"), 1.25e9);
  EXPECT_DOUBLE_EQ(parse_rate("40Gbps"), 5e9);
  EXPECT_DOUBLE_EQ(parse_rate("100Mbit"), 12.5e6);
  EXPECT_DOUBLE_EQ(parse_rate("1GiB/s"), 1073741824.0);
  EXPECT_THROW(parse_rate("900GB/h"), std::invalid_argument);
  EXPECT_THROW(parse_rate("fast"), std::invalid_argument);
}

TEST(ClusterUnits, FlopsAndTime) {
  EXPECT_DOUBLE_EQ(parse_flops("71T"), 71e12);
  EXPECT_DOUBLE_EQ(parse_flops("800GFLOPS"), 800e9);
  EXPECT_DOUBLE_EQ(parse_seconds("0.2ms"), 0.2e-3);
  EXPECT_DOUBLE_EQ(parse_seconds("15us"), 15e-6);
  EXPECT_DOUBLE_EQ(parse_seconds("1s"), 1.0);
  EXPECT_THROW(parse_flops("71X"), std::invalid_argument);
  EXPECT_THROW(parse_seconds("3 parsecs"), std::invalid_argument);
}

TEST(ClusterFile, ParsesDevicesLinksAndDefaults) {
  const Cluster c = parse_cluster(
      "# two boxes\n"
      "device name=gpu0 kind=cuda mem=24GB free=23GB bw=900GB/s flops=70T host=box1\n"
      "device name=gpu1 kind=cuda mem=24GB bw=900GB/s host=box1   # free defaults\n"
      "\n"
      "device name=mac kind=metal mem=64GB bw=400GB/s\n"
      "link default latency=0.5ms bw=1Gbit\n"
      "link local latency=5us bw=20GB/s\n"
      "link box1 mac latency=0.1ms bw=10Gbit\n"
      "coordinator mac\n");
  ASSERT_EQ(c.devices.size(), 3u);
  EXPECT_EQ(c.devices[0].free_bytes, 23000000000ull);
  EXPECT_EQ(c.devices[1].free_bytes, 24000000000ull - (512ull << 20));
  EXPECT_EQ(c.devices[2].host, "mac");
  EXPECT_EQ(c.devices[2].kind, DeviceKind::Metal);
  EXPECT_DOUBLE_EQ(c.devices[1].flops, 900e9 * 50);
  EXPECT_DOUBLE_EQ(c.link(0, 1).bandwidth_Bps, 20e9);   // same host
  EXPECT_DOUBLE_EQ(c.link(0, 2).bandwidth_Bps, 1.25e9);  // named link
  EXPECT_DOUBLE_EQ(c.link(2, 1).latency_s, 0.1e-3);
  EXPECT_DOUBLE_EQ(c.link(-1, 2).latency_s, 5e-6);       // coordinator on the mac
  EXPECT_DOUBLE_EQ(c.link(-1, 0).latency_s, 0.1e-3);
}

void expect_error(const std::string& text, const std::string& needle) {
  try {
    parse_cluster(text, "c.txt");
    FAIL() << "no error for:\n" << text;
  } catch (const ClusterError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(ClusterFile, MalformedInputNamesTheLine) {
  const std::string ok = "device name=a mem=8GB bw=50GB/s\n";
  expect_error(ok + "device name=b mem=8GB bw=fast\n", "c.txt:2: 'fast'");
  expect_error(ok + "\n\ndevice name=a mem=8GB bw=50GB/s\n", "c.txt:4: duplicate device name 'a'");
  expect_error(ok + "device name=b bw=50GB/s\n", "c.txt:2: device b needs mem=");
  expect_error(ok + "device name=b mem=8GB\n", "c.txt:2: device b needs bw=");
  expect_error(ok + "device name=b mem=8GB free=9GB bw=1GB/s\n", "c.txt:2: device b: free is larger than mem");
  expect_error(ok + "device name=b mem=8GB bw=1GB/s colour=red\n", "c.txt:2: unknown device key 'colour'");
  expect_error(ok + "device name=b kind=tpu mem=8GB bw=1GB/s\n", "c.txt:2: unknown kind 'tpu'");
  expect_error(ok + "gpu name=b\n", "c.txt:2: unknown directive 'gpu'");
  expect_error(ok + "link default bw=1Gbit\n", "c.txt:2: link needs latency= and bw=");
  expect_error(ok + "link a latency=1ms bw=1Gbit\n", "c.txt:2: link takes");
  expect_error(ok + "link a nowhere latency=1ms bw=1Gbit\n", "link names 'nowhere'");
  expect_error(ok + "device name=b mem=8GB bw=1GB/s mem=9GB\n", "c.txt:2: key 'mem' given twice");
  expect_error(ok + "coordinator mars\n", "coordinator host 'mars'");
  expect_error("# nothing\n", "no devices");
}

}  // namespace
}  // namespace herd::partition
