#include <atomic>
// The data lane beside a ZeroMQ link (transport/tcp_lane.h, zmq_link.h): it engages by itself,
// keeps message order across the switch from ZeroMQ, carries large messages both ways at once
// without deadlock, and a stranger on the lane port (garbage, a forged ticket, a lying length)
// costs the listener nothing but that connection.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <zmq.hpp>

#include "transport/codec.h"
#include "cluster/protocol.h"
#include "transport/tcp_lane.h"
#include "transport/security.h"
#include "transport/zmq_link.h"

namespace herd::transport {
namespace {

// herd messages as sample traffic (any payload would do; these carry numbers to check).
using namespace herd::cluster;

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

Message numbered(uint64_t i) { return pack(Forward{i, 0, 1, false}); }
uint64_t number_of(const Received& r) { return unpack<Forward>(r.msg).request_id; }

Received recv_ok(Listener& l, int ms = 3000) {
  Received r = l.recv(ms);
  EXPECT_EQ(r.status, RecvStatus::ok) << r.error;
  return r;
}
Received recv_ok(Link& l, int ms = 3000) {
  Received r = l.recv(ms);
  EXPECT_EQ(r.status, RecvStatus::ok) << r.error;
  return r;
}

// A raw TCP connection to 127.0.0.1:port.
int raw_connect(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  return fd;
}

// True when the listener closed the raw connection within `ms` (it reads EOF or an error).
bool closed_by_peer(int fd, int ms) {
  const auto t = Clock::now();
  while (since(t) * 1000 < ms) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) == 1) {
      char b[256];
      const ssize_t n = ::recv(fd, b, sizeof b, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN)) return true;
    }
  }
  return false;
}

void write_all(int fd, const std::string& s) {
  ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
}

std::string lane_header(uint32_t n_frames) {
  std::string h(8, '\0');
  const uint32_t magic = kLaneMagic;
  std::memcpy(h.data(), &magic, 4);
  std::memcpy(h.data() + 4, &n_frames, 4);
  return h;
}
// Resident memory of this process, from /proc/self/statm.
uint64_t rss_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  unsigned long long pages = 0, resident = 0;
  if (f) {
    if (std::fscanf(f, "%llu %llu", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

std::string u64(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }

// One round trip and one more message: the client has switched to its lane and the server has
// bound it. Returns the client's peer id at the server.
std::string engage(ZmqListener& server, ZmqLink& client) {
  EXPECT_EQ(client.send(numbered(1)), "");
  const std::string peer = recv_ok(server).peer;
  EXPECT_EQ(server.send(peer, numbered(2)), "");
  recv_ok(client);
  EXPECT_EQ(client.send(numbered(3)), "");
  EXPECT_EQ(number_of(recv_ok(server)), 3u);
  return peer;
}

TEST(Lane, EngagesAndKeepsOrderAcrossTheSwitch) {
  ZmqListener server("tcp://127.0.0.1:*", true);
  ASSERT_NE(server.lane_port(), 0);
  ZmqLink client(server.address(), true);
  // Sent before the client has seen the offer: these travel over ZeroMQ.
  for (uint64_t i = 0; i < 20; ++i) ASSERT_EQ(client.send(numbered(i)), "");
  std::string peer;
  for (uint64_t i = 0; i < 20; ++i) {
    Received r = recv_ok(server);
    EXPECT_EQ(number_of(r), i);
    peer = r.peer;
  }
  ASSERT_EQ(server.send(peer, numbered(100)), "");
  EXPECT_EQ(number_of(recv_ok(client)), 100u);  // the offer comes first: the client switches here
  EXPECT_TRUE(client.lane_sending());
  // Now on the lane; the listener reads it only after the client's switch came through ZeroMQ.
  for (uint64_t i = 20; i < 60; ++i) ASSERT_EQ(client.send(numbered(i)), "");
  for (uint64_t i = 20; i < 60; ++i) {
    Received r = recv_ok(server);
    EXPECT_EQ(number_of(r), i);
    EXPECT_EQ(r.peer, peer) << "lane messages carry the ZeroMQ peer's identity";
  }
  EXPECT_EQ(server.lanes_bound(), 1u);
  for (uint64_t i = 200; i < 240; ++i) ASSERT_EQ(server.send(peer, numbered(i)), "");
  for (uint64_t i = 200; i < 240; ++i) EXPECT_EQ(number_of(recv_ok(client)), i);
  EXPECT_TRUE(client.lane_reading());
}

TEST(Lane, LargeMessagesBothWaysAtOnceDoNotDeadlock) {
  ZmqListener server("tcp://127.0.0.1:*", true);
  ZmqLink client(server.address(), true);
  const std::string peer = engage(server, client);
  ASSERT_TRUE(client.lane_sending());
  ASSERT_EQ(server.lanes_bound(), 1u);

  // 24 MiB each way, far more than the socket buffers: each send must keep reading meanwhile.
  auto big = [](char fill) {
    Tensor t;
    t.dtype = WireDType::U8;
    t.shape = {24 << 20};
    t.data.assign(24 << 20, fill);
    t.data[12345] = 'z';
    return t;
  };
  // Each side then reads, as a stage does after it sends.
  std::string server_err, client_err;
  Received at_server, at_client;
  std::thread s([&] {
    server_err = server.send(peer, pack(Forward{7, 0, 1, false}, {big('s')}));
    at_server = recv_ok(server, 10000);
  });
  client_err = client.send(pack(Forward{8, 0, 1, false}, {big('c')}));
  at_client = recv_ok(client, 10000);
  s.join();
  EXPECT_EQ(server_err, "");
  EXPECT_EQ(client_err, "");
  ASSERT_EQ(at_server.msg.tensors.size(), 1u);
  ASSERT_EQ(at_client.msg.tensors.size(), 1u);
  EXPECT_EQ(at_server.msg.tensors[0].data, big('c').data);
  EXPECT_EQ(at_client.msg.tensors[0].data, big('s').data);
}

// A peer that floods us and never reads: our send reads meanwhile only up to kLaneMaxBufferedBytes,
// then times out (before: it buffered everything the peer wrote while it waited).
TEST(Lane, APeerThatNeverReadsCannotGrowOurBufferWhileWeSend) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  LaneSocket a(sv[0], uint64_t{1} << 30);
  std::atomic<bool> done{false};
  std::thread flood([&] {
    std::string msg(16, '\0');
    const uint32_t magic = kLaneMagic, n = 1;
    const uint64_t len = 1 << 20;
    std::memcpy(msg.data(), &magic, 4);
    std::memcpy(msg.data() + 4, &n, 4);
    std::memcpy(msg.data() + 8, &len, 8);
    msg += std::string(len, 'x');
    while (!done) {
      size_t at = 0;
      while (at < msg.size() && !done) {
        pollfd p{sv[1], POLLOUT, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        const ssize_t w = ::send(sv[1], msg.data() + at, msg.size() - at, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) at += static_cast<size_t>(w);
      }
    }
  });
  const std::string err = a.send({std::string(size_t{64} << 20, 'y')}, 2000);
  done = true;
  flood.join();
  ::close(sv[1]);
  EXPECT_NE(err.find("took nothing"), std::string::npos) << err;
  EXPECT_GT(a.buffered_bytes(), 0u) << "it did not read while it waited";
  // 64 MiB (kLaneMaxBufferedBytes) plus the one 1 MiB message that crossed it.
  EXPECT_LE(a.buffered_bytes(), uint64_t{65} << 20) << (a.buffered_bytes() >> 20) << " MiB buffered";
}

TEST(Lane, StrangersOnTheLanePortCostOnlyTheirConnection) {
  ZmqListener server("tcp://127.0.0.1:*", true);
  const uint16_t port = server.lane_port();
  // Garbage, a forged ticket, and a header that announces 2^40 bytes: each connection is closed.
  const int junk = raw_connect(port), forged = raw_connect(port), liar = raw_connect(port);
  write_all(junk, "GET / HTTP/1.0\r\n\r\n");
  write_all(forged, lane_header(2) + u64(kEnvelopeBytes) +
                        encode_frames(Message{kLaneAttach, std::string(kLaneTicketBytes, 'x'), {}})[0] + u64(16) +
                        std::string(16, 'x'));
  write_all(liar, lane_header(1) + u64(uint64_t{1} << 40) + "abc");
  const auto t = Clock::now();
  while (since(t) < 1) EXPECT_EQ(server.recv(50).status, RecvStatus::timeout);
  EXPECT_TRUE(closed_by_peer(junk, 2000));
  EXPECT_TRUE(closed_by_peer(forged, 2000));
  EXPECT_TRUE(closed_by_peer(liar, 2000));
  ::close(junk);
  ::close(forged);
  ::close(liar);
  // A silent connection is dropped after a few seconds, without blocking recv meanwhile.
  const int silent = raw_connect(port);
  const auto t2 = Clock::now();
  while (since(t2) < 6.5) EXPECT_EQ(server.recv(100).status, RecvStatus::timeout);
  EXPECT_TRUE(closed_by_peer(silent, 1000));
  ::close(silent);
  // And a real client still gets its lane.
  ZmqLink client(server.address(), true);
  engage(server, client);
  EXPECT_TRUE(client.lane_sending());
  EXPECT_EQ(server.lanes_bound(), 1u);
}

// A sealed record header (transport/tcp_lane.h) announcing `body` bytes.
std::string sealed_header(uint32_t n_frames, uint64_t body) {
  std::string h(kLaneSealedHeaderBytes, '\0');
  const uint32_t magic = kLaneSealedMagic;
  std::memcpy(h.data(), &magic, 4);
  std::memcpy(h.data() + 4, &n_frames, 4);
  std::memcpy(h.data() + 8, &body, 8);
  return h;
}

// A member of the cluster (it holds the key) that gets a real ticket and then lies on its bound
// lane: the listener does not allocate what the header claims, reports a bad stream as malformed
// for that peer, and keeps serving.
TEST(Lane, HostileBoundLaneIsMalformedAndNothingIsAllocatedOnItsWord) {
  ZmqListener server("tcp://127.0.0.1:*", true);
  auto handshake = [&](zmq::socket_t& z) {
    z.set(zmq::sockopt::linger, 0);
    secure_client_socket(z);
    z.connect(server.address());
    auto req = encode_frames(Message{kLaneRequest, {}, {}});
    z.send(zmq::buffer(req[0]), zmq::send_flags::sndmore);
    z.send(zmq::buffer(req[1]), zmq::send_flags::none);
    EXPECT_EQ(server.recv(300).status, RecvStatus::timeout);  // answers the request, surfaces nothing
    zmq::message_t env, payload;
    EXPECT_TRUE(z.recv(env));
    EXPECT_TRUE(z.recv(payload));
    EXPECT_EQ(payload.size(), 2 + kLaneTicketBytes + kLaneSessionBytes);  // + the lane's session secret
    uint16_t port;
    std::memcpy(&port, payload.data(), 2);
    const std::string ticket(static_cast<const char*>(payload.data()) + 2, kLaneTicketBytes);
    const int fd = raw_connect(port);
    auto attach = encode_frames(Message{kLaneAttach, ticket, {}});
    write_all(fd, lane_header(2) + u64(attach[0].size()) + attach[0] + u64(attach[1].size()) + attach[1]);
    auto sw = encode_frames(Message{kLaneSwitch, {}, {}});
    z.send(zmq::buffer(sw[0]), zmq::send_flags::sndmore);
    z.send(zmq::buffer(sw[1]), zmq::send_flags::none);
    return fd;
  };
  zmq::socket_t z1(zmq_context(), zmq::socket_type::dealer), z2(zmq_context(), zmq::socket_type::dealer);
  const int liar = handshake(z1);
  // Claims a 200 MiB frame (under the listener's 256 MiB cap, kMaxListenerMessageBytes; a larger
  // claim is refused at once) and sends 3 bytes, then goes quiet: nothing is allocated on its word.
  const uint64_t rss0 = rss_bytes();
  write_all(liar, sealed_header(2, uint64_t{200} << 20) + "abc");
  EXPECT_EQ(server.recv(500).status, RecvStatus::timeout);
  EXPECT_EQ(server.lanes_bound(), 1u);
  EXPECT_LT(rss_bytes(), rss0 + (uint64_t{64} << 20)) << "the listener allocated what the header claimed";
  const int bad = handshake(z2);
  EXPECT_EQ(server.recv(500).status, RecvStatus::timeout);
  EXPECT_EQ(server.lanes_bound(), 2u);
  write_all(bad, std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8) + std::string(8, '\0'));  // not a lane header
  Received r = server.recv(2000);
  EXPECT_EQ(r.status, RecvStatus::malformed);
  EXPECT_NE(r.error.find("magic"), std::string::npos) << r.error;
  EXPECT_EQ(server.lanes_bound(), 1u);
  ::close(liar);
  ::close(bad);
  EXPECT_EQ(server.recv(300).status, RecvStatus::timeout);
  EXPECT_EQ(server.lanes_bound(), 0u);
  ZmqLink client(server.address(), true);
  ASSERT_EQ(client.send(numbered(5)), "");
  EXPECT_EQ(number_of(recv_ok(server)), 5u);
}

TEST(Lane, WithoutLanesBothEndsStayOnZeroMQ) {
  for (const bool server_lanes : {true, false}) {
    ZmqListener server("tcp://127.0.0.1:*", server_lanes);
    ZmqLink client(server.address(), !server_lanes);  // only one end wants a lane
    for (int round = 0; round < 3; ++round) {
      ASSERT_EQ(client.send(numbered(round)), "");
      Received r = recv_ok(server);
      EXPECT_EQ(number_of(r), static_cast<uint64_t>(round));
      ASSERT_EQ(server.send(r.peer, numbered(round + 10)), "");
      EXPECT_EQ(number_of(recv_ok(client)), static_cast<uint64_t>(round + 10));
    }
    EXPECT_FALSE(client.lane_sending());
    EXPECT_EQ(server.lanes_bound(), 0u);
  }
}

TEST(Lane, HostOfAddress) {
  EXPECT_EQ(tcp_host_of("tcp://127.0.0.1:7101"), "127.0.0.1");
  EXPECT_EQ(tcp_host_of("tcp://[::1]:7101"), "::1");
  EXPECT_EQ(tcp_host_of("tcp://worker-3.lan:7101"), "worker-3.lan");
  EXPECT_EQ(tcp_host_of("ipc:///tmp/x"), "");
  EXPECT_EQ(tcp_host_of("tcp://nohost"), "");
}

}  // namespace
}  // namespace herd::transport
