// The worker profile in Hello (WorkerProfile v3), the measured link in Ready (v2) and Ping/Pong:
// round trips, the older WorkerProfile v1 and v2 still load, and out-of-range numbers are rejected.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <sstream>

#include "transport/codec.h"
#include "transport/inproc_link.h"
#include "cluster/link_measure.h"
#include "cluster/protocol.h"
#include "cluster/worker_profile.h"
#include "tests/cluster/round_trip.h"

namespace herd::cluster {

// A Hello as a build with WorkerProfile v1 wrote it.
struct WorkerProfileV1 {
  int32_t threads = 0;
  uint64_t free_ram_bytes = 0;
  template <class A> void serialize(A& ar, uint32_t) { ar(threads, free_ram_bytes); }
};
struct HelloV1 {
  static constexpr MsgType kType = MsgType::Hello;
  uint32_t protocol_version = 2;
  uint8_t role = 1;
  WorkerProfileV1 profile;
  std::string name;
  template <class A> void serialize(A& ar, uint32_t) {
    ar(protocol_version, role, profile);
    detail::bounded_string(ar, name, 256, "name");
  }
};

// A Hello as a build with WorkerProfile v2 (no disk speed) wrote it: v3's fields before disk_Bps.
struct WorkerProfileV2 {
  WorkerProfile p;
  template <class A> void serialize(A& ar, uint32_t) {
    ar(p.threads, p.free_ram_bytes, p.total_ram_bytes, p.read_bw_Bps, p.matmul_flops, p.op_overhead_s, p.attn_Bps);
    uint64_t n = p.matvec.size();
    ar(n);
    for (auto& e : p.matvec) ar(e.type, e.bytes_per_s);
    detail::bounded_string(ar, p.source, 1024, "source");
  }
};
struct HelloV2 {
  static constexpr MsgType kType = MsgType::Hello;
  uint32_t protocol_version = kProtocolVersion;
  uint8_t role = 1;
  WorkerProfileV2 profile;
  std::string name;
  template <class A> void serialize(A& ar, uint32_t) {
    ar(protocol_version, role, profile);
    detail::bounded_string(ar, name, 256, "name");
  }
};

}  // namespace herd::cluster

CEREAL_CLASS_VERSION(herd::cluster::WorkerProfileV1, 1)
CEREAL_CLASS_VERSION(herd::cluster::HelloV1, 1)
CEREAL_CLASS_VERSION(herd::cluster::WorkerProfileV2, 2)
CEREAL_CLASS_VERSION(herd::cluster::HelloV2, 1)

namespace herd::cluster {
namespace {

using namespace transport;


WorkerProfile full_profile() {
  WorkerProfile p;
  p.threads = 4;
  p.free_ram_bytes = 8'000'000'000ull;
  p.total_ram_bytes = 16'000'000'000ull;
  p.read_bw_Bps = 12.5e9;
  p.matmul_flops = 3e11;
  p.op_overhead_s = 1.5e-6;
  p.attn_Bps = 9e9;
  p.matvec = {{2, 11e9}, {12, 9.5e9}, {8, 14e9}};
  p.source = "measured at startup";
  p.disk_Bps = 2.5e9;
  p.process_bytes = 20'000'000;
  p.streams = true;
  return p;
}

Hello worker_hello(const WorkerProfile& p) {
  Hello h;
  h.role = Role::Worker;
  h.profile = p;
  h.name = "box:1";
  return h;
}

TEST(ProtocolProfile, WorkerProfileV3RoundTripsInHello) {
  const Hello h = round_trip(worker_hello(full_profile()));
  EXPECT_EQ(h.protocol_version, kProtocolVersion);
  EXPECT_EQ(h.profile.threads, 4);
  EXPECT_EQ(h.profile.free_ram_bytes, 8'000'000'000ull);
  EXPECT_EQ(h.profile.total_ram_bytes, 16'000'000'000ull);
  EXPECT_EQ(h.profile.read_bw_Bps, 12.5e9);
  EXPECT_EQ(h.profile.matmul_flops, 3e11);
  EXPECT_EQ(h.profile.op_overhead_s, 1.5e-6);
  EXPECT_EQ(h.profile.attn_Bps, 9e9);
  ASSERT_EQ(h.profile.matvec.size(), 3u);
  EXPECT_EQ(h.profile.matvec[1].type, 12u);
  EXPECT_EQ(h.profile.matvec[1].bytes_per_s, 9.5e9);
  EXPECT_EQ(h.profile.source, "measured at startup");
  EXPECT_EQ(h.profile.disk_Bps, 2.5e9);
  EXPECT_EQ(h.profile.process_bytes, 20'000'000u);
  EXPECT_TRUE(h.profile.streams);
  EXPECT_EQ(h.name, "box:1");
}

TEST(ProtocolProfile, AVersion2ProfileStillLoadsWithoutADisk) {
  HelloV2 old;
  old.profile.p = full_profile();
  old.name = "v2";
  const Hello got = unpack<Hello>(decode_frames(encode_frames(pack(old))));
  EXPECT_EQ(got.profile.read_bw_Bps, 12.5e9);
  ASSERT_EQ(got.profile.matvec.size(), 3u);
  EXPECT_EQ(got.profile.source, "measured at startup");
  EXPECT_EQ(got.profile.disk_Bps, 0) << "a v2 worker said nothing about its disk";
  EXPECT_EQ(got.profile.process_bytes, 0u);
  EXPECT_FALSE(got.profile.streams) << "an older worker is not planned to stream";
  EXPECT_EQ(got.name, "v2");
}

TEST(ProtocolProfile, AProbedDiskTravelsAndAnUnmeasuredOneIsZero) {
  ProbeResult pr;
  pr.disk_read_Bps = 1.3e9;
  EXPECT_EQ(round_trip(worker_hello(worker_profile(pr, 2, 1 << 30))).profile.disk_Bps, 1.3e9);
  pr.disk_read_Bps = std::numeric_limits<double>::quiet_NaN();  // sent as "not measured", not a failed handshake
  EXPECT_EQ(round_trip(worker_hello(worker_profile(pr, 2, 1 << 30))).profile.disk_Bps, 0);
}

TEST(ProtocolProfile, AVersion1ProfileStillLoadsWithoutRates) {
  HelloV1 old;
  old.profile = {3, 123456};
  old.name = "old";
  const Hello got = unpack<Hello>(decode_frames(encode_frames(pack(old))));
  EXPECT_EQ(got.protocol_version, 2u);
  EXPECT_EQ(got.role, Role::Worker);
  EXPECT_EQ(got.profile.threads, 3);
  EXPECT_EQ(got.profile.free_ram_bytes, 123456u);
  EXPECT_EQ(got.profile.read_bw_Bps, 0);
  EXPECT_TRUE(got.profile.matvec.empty());
  EXPECT_EQ(got.name, "old");
}

TEST(ProtocolProfile, OutOfRangeProfilesAreRejected) {
  auto rejects = [](const WorkerProfile& p, const std::string& what) {
    const Message m = pack(worker_hello(p));
    try {
      unpack<Hello>(m);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  WorkerProfile p = full_profile();
  p.read_bw_Bps = nan;
  rejects(p, "read_bw_Bps");
  p = full_profile();
  p.read_bw_Bps = inf;
  rejects(p, "read_bw_Bps");
  p = full_profile();
  p.matmul_flops = -1;
  rejects(p, "matmul_flops");
  p = full_profile();
  p.op_overhead_s = 3600;
  rejects(p, "op_overhead_s");
  p = full_profile();
  p.attn_Bps = 1e20;
  rejects(p, "attn_Bps");
  p = full_profile();
  p.free_ram_bytes = p.total_ram_bytes + 1;
  rejects(p, "exceeds total");
  p = full_profile();
  p.matvec.push_back({2, 1e9});
  rejects(p, "twice");
  p = full_profile();
  p.matvec.push_back({5000, 1e9});
  rejects(p, "tensor type 5000");
  p = full_profile();
  p.matvec[0].bytes_per_s = 0;
  rejects(p, "is 0");
  p = full_profile();
  p.matvec.assign(kMaxProfileTypes + 1, {1, 1e9});
  rejects(p, "entries");
  p = full_profile();
  p.source = std::string(2000, 'x');
  rejects(p, "WorkerProfile.source");
  p = full_profile();
  p.disk_Bps = -1;
  rejects(p, "WorkerProfile.disk_Bps");
  p = full_profile();
  p.disk_Bps = inf;
  rejects(p, "WorkerProfile.disk_Bps");
  p = full_profile();
  p.process_bytes = p.total_ram_bytes + 1;
  rejects(p, "process memory");
}

TEST(ProtocolProfile, ReadyCarriesTheMeasuredNextLink) {
  const Ready plain = round_trip(Ready{"layers 0-3"});
  EXPECT_EQ(plain.info, "layers 0-3");
  EXPECT_FALSE(plain.has_next_link);
  Ready r{"layers 0-1"};
  r.has_next_link = true;
  r.next_link = {42e-6, 2.5e9};
  const Ready r2 = round_trip(r);
  EXPECT_TRUE(r2.has_next_link);
  EXPECT_EQ(r2.next_link.latency_s, 42e-6);
  EXPECT_EQ(r2.next_link.bandwidth_Bps, 2.5e9);
  for (const LinkStats bad : {LinkStats{-1, 1e9}, LinkStats{std::nan(""), 1e9}, LinkStats{1e-5, 1e16},
                              LinkStats{1e-5, -5}, LinkStats{120, 1e9}}) {
    r.next_link = bad;
    EXPECT_THROW(unpack<Ready>(pack(r)), ProtocolError) << bad.latency_s << " " << bad.bandwidth_Bps;
  }
}

TEST(ProtocolProfile, PingAndPongRoundTripAndAreBounded) {
  Tensor t;
  t.dtype = WireDType::U8;
  t.shape = {1000};
  t.data.assign(1000, 'a');
  const Message m = decode_frames(encode_frames(pack(Ping{7, 1000}, {t})));
  const Ping p = unpack<Ping>(m);
  EXPECT_EQ(p.seq, 7u);
  EXPECT_EQ(p.bytes, 1000u);
  EXPECT_NO_THROW(check_echo_payload(m, p.bytes));
  EXPECT_THROW(check_echo_payload(m, 999), ProtocolError);
  EXPECT_THROW(check_echo_payload(m, 0), ProtocolError);
  EXPECT_THROW(check_echo_payload(pack(Ping{1, 1000}), 1000), ProtocolError) << "no tensor";
  const Pong q = round_trip(Pong{9, 0});
  EXPECT_EQ(q.seq, 9u);
  EXPECT_EQ(q.bytes, 0u);
  EXPECT_THROW(unpack<Ping>(pack(Ping{1, kMaxPingBytes + 1})), ProtocolError);
  EXPECT_THROW(unpack<Pong>(pack(Pong{1, kMaxPingBytes + 1})), ProtocolError);
  EXPECT_STREQ(msg_type_name(static_cast<uint16_t>(MsgType::Ping)), "Ping");
  EXPECT_STREQ(msg_type_name(static_cast<uint16_t>(MsgType::Pong)), "Pong");
}

}  // namespace
}  // namespace herd::cluster
