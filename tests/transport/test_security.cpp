// Cluster keys, the sealed lane framing and the authenticated ZeroMQ links (transport/security.h,
// cluster_key.h, tcp_lane.h). Each attack here worked before protocol 7: a socket without the
// cluster's key delivered messages, and lane bytes could be altered or replayed unnoticed.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <zmq.hpp>

#include "cluster/protocol.h"
#include "transport/cluster_key.h"
#include "transport/codec.h"
#include "transport/security.h"
#include "transport/tcp_lane.h"
#include "transport/zmq_link.h"

namespace herd::transport {
namespace {

using namespace herd::cluster;
using Clock = std::chrono::steady_clock;

std::string temp_dir() {
  char tmpl[] = "/tmp/herd-sec-XXXXXX";
  return mkdtemp(tmpl);
}

// Each test gets its own key file (not the user's ~/.config/herd/cluster.key).
class Secure : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_dir();
    configure_security({false, dir_ + "/cluster.key"});
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(Secure, KeygenWritesMode0600AndRefusesToOverwrite) {
  const std::string p = dir_ + "/sub/dir/k";
  const ClusterKey k = generate_cluster_key();
  write_cluster_key(p, k, false);
  struct stat st{};
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const ClusterKey back = read_cluster_key(p);
  EXPECT_EQ(back.public_z85, k.public_z85);
  EXPECT_EQ(back.secret_z85, k.secret_z85);
  try {
    write_cluster_key(p, generate_cluster_key(), false);
    FAIL() << "overwrote a key";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("exists"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_cluster_key(p).secret_z85, k.secret_z85);
  const ClusterKey k2 = generate_cluster_key();
  write_cluster_key(p, k2, true);
  EXPECT_EQ(read_cluster_key(p).secret_z85, k2.secret_z85);
  EXPECT_NE(k2.secret_z85, k.secret_z85);
}

TEST_F(Secure, BadKeyFilesAreNamed) {
  auto expect_bad = [&](const std::string& text, const std::string& what) {
    const std::string p = dir_ + "/bad";
    std::ofstream(p) << text;
    try {
      read_cluster_key(p);
      FAIL() << "accepted: " << text;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  const ClusterKey a = generate_cluster_key(), b = generate_cluster_key();
  expect_bad("", "no valid 'secret'");
  expect_bad("secret = " + a.secret_z85 + "\n", "no valid 'public'");
  expect_bad("public = " + b.public_z85 + "\nsecret = " + a.secret_z85 + "\n", "not the secret key's");
  expect_bad("public = " + a.public_z85 + "\nsecret = " + a.secret_z85.substr(1) + "\n", "no valid 'secret'");
  expect_bad("hello\n", "expected NAME = VALUE");
  expect_bad(std::string(5000, '#'), "not a key file");
}

TEST_F(Secure, RacingCreatorsEndWithOneKey) {
  const std::string p = dir_ + "/race.key";
  std::vector<std::string> got(8);
  std::vector<std::thread> ts;
  for (size_t i = 0; i < got.size(); ++i)
    ts.emplace_back([&, i] { got[i] = load_or_create_cluster_key(p).secret_z85; });
  for (auto& t : ts) t.join();
  for (const auto& g : got) EXPECT_EQ(g, got[0]);
  EXPECT_EQ(read_cluster_key(p).secret_z85, got[0]);
}

// ---- The sealed lane framing, on socketpairs (no network). ----

struct Keys {
  uint8_t a[kLaneKeyBytes], b[kLaneKeyBytes];
  explicit Keys(int seed = 0) {
    for (size_t i = 0; i < kLaneKeyBytes; ++i) {
      a[i] = static_cast<uint8_t>(i * 7 + 1 + seed);
      b[i] = static_cast<uint8_t>(i * 13 + 5 + seed);
    }
  }
};

// A sealed sender whose bytes the test reads raw (to alter, drop, replay them) and a sealed
// receiver the test writes them to.
struct SealedPair {
  Keys k;
  int tx[2], rx[2];
  std::unique_ptr<LaneSocket> sender, receiver;
  explicit SealedPair(int seed = 0) : k(seed) {
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, tx), 0);
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, rx), 0);
    sender = std::make_unique<LaneSocket>(tx[0], 1 << 20);
    receiver = std::make_unique<LaneSocket>(rx[0], 1 << 20);
    sender->seal(k.a, k.b, "sender");
    receiver->seal(k.b, k.a, "test-peer");
  }
  ~SealedPair() {
    ::close(tx[1]);
    ::close(rx[1]);
  }
  // One message through the sender; returns its record's bytes as they went on the wire.
  std::string record(uint64_t id, size_t extra = 0) {
    Message m = pack(Forward{id, 0, 1, false});
    if (extra > 0) {
      Tensor t;
      t.dtype = WireDType::U8;
      t.shape = {static_cast<int64_t>(extra)};
      t.data.assign(extra, 'x');
      m.tensors.push_back(std::move(t));
    }
    EXPECT_EQ(sender->send(encode_frames(m), 1000), "");
    std::string out;
    char buf[65536];
    while (true) {
      const ssize_t n = ::recv(tx[1], buf, sizeof buf, MSG_DONTWAIT);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  void deliver(const std::string& bytes) {
    ASSERT_EQ(::send(rx[1], bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
    receiver->pump();
  }
  uint64_t next_id() {
    EXPECT_TRUE(receiver->has_message()) << receiver->error();
    if (!receiver->has_message()) return UINT64_MAX;
    Message m = decode_frames(receiver->pop());
    return unpack<Forward>(m).request_id;
  }
};

TEST(SealedLane, RoundTripsInOrderAndHidesThePayload) {
  SealedPair p;
  std::string r0 = p.record(7, 100), r1 = p.record(8);
  EXPECT_EQ(r0.substr(0, 4), std::string("HRDS", 4));
  EXPECT_EQ(r0.find(std::string(100, 'x')), std::string::npos) << "payload in clear on the wire";
  p.deliver(r0 + r1);
  EXPECT_EQ(p.next_id(), 7u);
  EXPECT_EQ(p.next_id(), 8u);
  EXPECT_TRUE(p.receiver->ok());
}

TEST(SealedLane, EveryAlteredByteIsDetectedAndNamed) {
  // Flip each byte of a record in turn (header, length words, ciphertext, tag) on a fresh pair:
  // every one must fail as this frame, with no message delivered.
  SealedPair probe;
  const size_t n = probe.record(1).size();
  for (size_t i = 0; i < n; ++i) {
    SealedPair p;
    std::string r = p.record(1);
    ASSERT_EQ(r.size(), n);
    r[i] = static_cast<char>(r[i] ^ 0x20);
    // (A larger length in the header waits for more bytes: the next 64 KiB complete it.)
    p.deliver(r + std::string(65536, '\0'));
    EXPECT_FALSE(p.receiver->has_message()) << "byte " << i;
    EXPECT_FALSE(p.receiver->ok()) << "byte " << i;
    EXPECT_TRUE(p.receiver->protocol_error()) << "byte " << i;
    const std::string& e = p.receiver->error();
    EXPECT_NE(e.find("lane from test-peer: frame 0"), std::string::npos) << "byte " << i << ": " << e;
  }
}

TEST(SealedLane, ReplayedReorderedAndDroppedFramesFail) {
  {  // replay: record 0 again where record 1 belongs
    SealedPair p;
    const std::string r0 = p.record(1);
    p.deliver(r0);
    EXPECT_EQ(p.next_id(), 1u);
    p.deliver(r0);
    EXPECT_FALSE(p.receiver->has_message());
    EXPECT_NE(p.receiver->error().find("lane from test-peer: frame 1 failed authentication"), std::string::npos)
        << p.receiver->error();
  }
  {  // reorder
    SealedPair p;
    const std::string r0 = p.record(1), r1 = p.record(2);
    p.deliver(r1 + r0);
    EXPECT_FALSE(p.receiver->has_message());
    EXPECT_NE(p.receiver->error().find("frame 0 failed authentication"), std::string::npos) << p.receiver->error();
  }
  {  // a dropped record: the next one is out of sequence
    SealedPair p;
    p.record(1);
    const std::string r1 = p.record(2);
    p.deliver(r1);
    EXPECT_NE(p.receiver->error().find("frame 0 failed authentication"), std::string::npos) << p.receiver->error();
  }
  {  // from another session (other keys): fails even as the right sequence number
    SealedPair p, q(1);
    p.deliver(q.record(1));
    EXPECT_NE(p.receiver->error().find("frame 0 failed authentication"), std::string::npos) << p.receiver->error();
  }
}

TEST(SealedLane, TruncationAndClearFramesAndHugeLengths) {
  {  // truncated record, then the peer closes: a closed lane, nothing delivered
    SealedPair p;
    const std::string r = p.record(1, 1000);
    p.deliver(r.substr(0, r.size() - 1));
    EXPECT_FALSE(p.receiver->has_message());
    EXPECT_TRUE(p.receiver->ok());
    ::shutdown(p.rx[1], SHUT_WR);
    EXPECT_FALSE(p.receiver->pump());
    EXPECT_FALSE(p.receiver->protocol_error());
    EXPECT_FALSE(p.receiver->has_message());
  }
  {  // a clear lane message after seal (a downgrade): refused by its magic
    SealedPair p;
    int clear[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, clear), 0);
    LaneSocket plain(clear[0], 1 << 20);
    ASSERT_EQ(plain.send(encode_frames(pack(Forward{1, 0, 1, false})), 1000), "");
    char buf[4096];
    const ssize_t n = ::recv(clear[1], buf, sizeof buf, 0);
    ASSERT_GT(n, 0);
    p.deliver(std::string(buf, static_cast<size_t>(n)));
    EXPECT_FALSE(p.receiver->has_message());
    EXPECT_NE(p.receiver->error().find("frame 0 is not sealed"), std::string::npos) << p.receiver->error();
    ::close(clear[1]);
  }
  {  // a header announcing 2^60 bytes: refused before any allocation
    SealedPair p;
    std::string h(16, '\0');
    const uint32_t magic = kLaneSealedMagic, nf = 1;
    const uint64_t body = uint64_t{1} << 60;
    std::memcpy(h.data(), &magic, 4);
    std::memcpy(h.data() + 4, &nf, 4);
    std::memcpy(h.data() + 8, &body, 8);
    p.deliver(h);
    EXPECT_TRUE(p.receiver->protocol_error());
    EXPECT_NE(p.receiver->error().find("more than"), std::string::npos) << p.receiver->error();
  }
}

TEST(SealedLane, LargeMessagesBothWaysAndSequenceNumbersAdvance) {
  Keys k;
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  LaneSocket a(sv[0], 1 << 26), b(sv[1], 1 << 26);
  a.seal(k.a, k.b);
  b.seal(k.b, k.a);
  Message big = pack(Forward{1, 0, 1, false});
  Tensor t;
  t.dtype = WireDType::U8;
  t.shape = {3 << 20};
  t.data.assign(3 << 20, '\0');
  for (size_t i = 0; i < t.data.size(); ++i) t.data[i] = static_cast<char>(i * 31);
  big.tensors.push_back(t);
  // Each side sends 3 x 3 MiB while the other does the same (a send keeps reading meanwhile), then
  // reads the rest; b only on its thread, a only here.
  int got_a = 0, got_b = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  std::thread other([&] {
    for (int i = 0; i < 3; ++i) EXPECT_EQ(b.send(encode_frames(big), 10000), "");
    while (got_b < 3 && Clock::now() < deadline) {
      b.pump();
      for (; b.has_message(); ++got_b) EXPECT_EQ(decode_frames(b.pop()).tensors.at(0).data, t.data);
    }
  });
  for (int i = 0; i < 3; ++i) EXPECT_EQ(a.send(encode_frames(big), 10000), "");
  while (got_a < 3 && Clock::now() < deadline) {
    a.pump();
    for (; a.has_message(); ++got_a) EXPECT_EQ(decode_frames(a.pop()).tensors.at(0).data, t.data);
  }
  other.join();
  EXPECT_EQ(got_a, 3);
  EXPECT_EQ(got_b, 3);
  EXPECT_TRUE(a.ok()) << a.error();
  EXPECT_TRUE(b.ok()) << b.error();
}

// ---- Authenticated ZeroMQ links (in-process listener; the process tests are in tests/integration). ----

TEST_F(Secure, LinksAreCurveAndLanesAreSealed) {
  ZmqListener l("tcp://127.0.0.1:*");
  ZmqLink link(l.address());
  ASSERT_EQ(link.send(pack(Forward{1, 0, 1, false})), "");
  Received r = l.recv(3000);
  ASSERT_EQ(r.status, RecvStatus::ok) << r.error;
  for (uint64_t i = 2; i < 6; ++i) {
    ASSERT_EQ(l.send(r.peer, pack(Forward{i, 0, 1, false})), "");
    Received back = link.recv(3000);
    ASSERT_EQ(back.status, RecvStatus::ok) << back.error;
    EXPECT_EQ(unpack<Forward>(back.msg).request_id, i);
    ASSERT_EQ(link.send(pack(Forward{i, 0, 1, false})), "");
    ASSERT_EQ(l.recv(3000).status, RecvStatus::ok);
  }
  EXPECT_TRUE(link.lane_sending());
  EXPECT_TRUE(link.lane_sealed());
  EXPECT_EQ(l.lanes_bound(), 1u);
  EXPECT_GE(zap_counts().admitted, 1u);
}

// Sends Hello + Stop from `s` and reports whether the listener received anything within 1.5 s.
bool listener_hears(ZmqListener& l, zmq::socket_t& s) {
  for (const auto& m : {pack(Hello{}), pack(Stop{})}) {
    auto frames = encode_frames(m);
    for (size_t i = 0; i < frames.size(); ++i)
      (void)s.send(zmq::buffer(frames[i]), i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::dontwait);
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(1500);
  while (Clock::now() < deadline)
    if (l.recv(100).status != RecvStatus::timeout) return true;
  return false;
}

TEST_F(Secure, StrangersAreRefused) {
  ZmqListener l("tcp://127.0.0.1:*");
  const ClusterKey cluster = cluster_key();
  {  // no CURVE at all
    zmq::socket_t s(zmq_context(), zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.connect(l.address());
    EXPECT_FALSE(listener_hears(l, s)) << "a plain socket got through";
  }
  {  // CURVE, knows the server's public key, but its own keypair is not the cluster's: ZAP says 400
    const auto refused = zap_counts().refused;
    const ClusterKey mine = generate_cluster_key();
    zmq::socket_t s(zmq_context(), zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::curve_serverkey, cluster.public_z85);
    s.set(zmq::sockopt::curve_publickey, mine.public_z85);
    s.set(zmq::sockopt::curve_secretkey, mine.secret_z85);
    s.connect(l.address());
    EXPECT_FALSE(listener_hears(l, s)) << "a client with its own key got through";
    EXPECT_GT(zap_counts().refused, refused) << "the ZAP handler did not refuse it";
  }
  {  // the cluster's public key as its own, without the matching secret
    const ClusterKey mine = generate_cluster_key();
    zmq::socket_t s(zmq_context(), zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::curve_serverkey, cluster.public_z85);
    s.set(zmq::sockopt::curve_publickey, cluster.public_z85);
    s.set(zmq::sockopt::curve_secretkey, mine.secret_z85);
    s.connect(l.address());
    EXPECT_FALSE(listener_hears(l, s)) << "a client claiming the cluster's public key got through";
  }
  {  // a link of another cluster (another key file): a clear error, not a hang
    configure_security({false, dir_ + "/other.key"});
    ZmqLink other(l.address());
    other.send(pack(Hello{}));
    const auto t = Clock::now();
    Received r;
    while (Clock::now() - t < std::chrono::seconds(5) && (r = other.recv(100)).status == RecvStatus::timeout) {
    }
    EXPECT_EQ(r.status, RecvStatus::closed);
    EXPECT_NE(r.error.find("cluster key"), std::string::npos) << r.error;
    EXPECT_EQ(l.recv(200).status, RecvStatus::timeout);
  }
  // The real member still gets through.
  configure_security({false, dir_ + "/cluster.key"});
  ZmqLink ok(l.address());
  ASSERT_EQ(ok.send(pack(Hello{})), "");
  EXPECT_EQ(l.recv(3000).status, RecvStatus::ok);
}

TEST_F(Secure, InsecureOnOneSideIsAClearErrorBothWays) {
  for (bool listener_insecure : {true, false}) {
    configure_security({listener_insecure, listener_insecure ? "" : dir_ + "/cluster.key"});
    ZmqListener l("tcp://127.0.0.1:*");
    configure_security({!listener_insecure, listener_insecure ? dir_ + "/cluster.key" : ""});
    ZmqLink link(l.address());
    link.send(pack(Hello{}));
    const auto t = Clock::now();
    Received r;
    while (Clock::now() - t < std::chrono::seconds(5) && (r = link.recv(100)).status == RecvStatus::timeout) {
    }
    EXPECT_EQ(r.status, RecvStatus::closed) << "listener insecure: " << listener_insecure;
    EXPECT_NE(r.error.find("--insecure"), std::string::npos) << r.error;
    EXPECT_LT(Clock::now() - t, std::chrono::seconds(3));
    EXPECT_EQ(l.recv(100).status, RecvStatus::timeout);
  }
  // Both insecure: plain links and clear lanes, as before.
  configure_security({true, ""});
  ZmqListener l("tcp://127.0.0.1:*");
  ZmqLink link(l.address());
  ASSERT_EQ(link.send(pack(Hello{})), "");
  Received r = l.recv(3000);
  ASSERT_EQ(r.status, RecvStatus::ok) << r.error;
  ASSERT_EQ(l.send(r.peer, pack(Hello{})), "");
  ASSERT_EQ(link.recv(3000).status, RecvStatus::ok);
  ASSERT_EQ(link.send(pack(Hello{})), "");
  ASSERT_EQ(l.recv(3000).status, RecvStatus::ok);
  EXPECT_TRUE(link.lane_sending());
  EXPECT_FALSE(link.lane_sealed());
}

}  // namespace
}  // namespace herd::transport
