// Links: InprocLink and ZmqLink deliver messages and tensor frames intact, time out instead of
// hanging, report a vanished peer as `closed`, and hand malformed frames up as `malformed`
// without losing the connection for the good messages that follow.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <unistd.h>
#include <zmq.hpp>

#include "transport/inproc_link.h"
#include "cluster/protocol.h"
#include "transport/security.h"
#include "transport/zmq_link.h"

namespace herd::transport {
namespace {

// herd messages as sample traffic (any payload would do; these carry numbers to check).
using namespace herd::cluster;

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void exchange(Listener& server, Link& client) {
  Tensor t;
  t.dtype = WireDType::F16;
  t.shape = {3, 5};
  t.data.assign(30, 'q');
  ASSERT_EQ(client.send(pack(Forward{11, 4, 3, true}, {t})), "");
  Received r = server.recv(2000);
  ASSERT_EQ(r.status, RecvStatus::ok) << r.error;
  const Forward f = unpack<Forward>(r.msg);
  EXPECT_EQ(f.request_id, 11u);
  ASSERT_EQ(r.msg.tensors.size(), 1u);
  EXPECT_EQ(r.msg.tensors[0].data, t.data);
  EXPECT_EQ(r.msg.tensors[0].shape, t.shape);
  ASSERT_EQ(server.send(r.peer, pack(Result{11, 1})), "");
  Received back = client.recv(2000);
  ASSERT_EQ(back.status, RecvStatus::ok) << back.error;
  EXPECT_EQ(unpack<Result>(back.msg).request_id, 11u);
}

void malformed_then_good(Listener& server, Link& client) {
  ASSERT_EQ(client.send_frames({"junk"}), "");
  Received r = server.recv(2000);
  EXPECT_EQ(r.status, RecvStatus::malformed);
  EXPECT_NE(r.error.find("1 frames"), std::string::npos) << r.error;
  auto frames = encode_frames(pack(Forward{}, {Tensor{WireDType::F32, {2}, std::string(8, 'a')}}));
  frames[3].resize(4);
  ASSERT_EQ(client.send_frames(frames), "");
  r = server.recv(2000);
  EXPECT_EQ(r.status, RecvStatus::malformed);
  EXPECT_NE(r.error.find("data frame is 4 bytes"), std::string::npos) << r.error;
  exchange(server, client);
}

void recv_times_out(Link& client, Listener& server) {
  auto t = Clock::now();
  EXPECT_EQ(client.recv(100).status, RecvStatus::timeout);
  EXPECT_EQ(server.recv(100).status, RecvStatus::timeout);
  EXPECT_LT(since(t), 1.0);
  EXPECT_GE(since(t), 0.19);
}

TEST(InprocLink, ExchangeTimeoutMalformedAndClose) {
  auto server = std::make_unique<InprocListener>("inproc://links-test");
  EXPECT_THROW(InprocListener("inproc://links-test"), std::runtime_error);
  EXPECT_THROW(InprocLink("inproc://nobody"), std::runtime_error);
  InprocLink client("inproc://links-test");
  exchange(*server, client);
  malformed_then_good(*server, client);
  recv_times_out(client, *server);
  EXPECT_TRUE(client.alive());
  server.reset();
  const Received r = client.recv(1000);
  EXPECT_EQ(r.status, RecvStatus::closed);
  EXPECT_FALSE(client.alive());
  EXPECT_NE(client.send(pack(Reset{})), "");
}

// Every ZeroMQ test runs twice: with the data lane (the default, transport/tcp_lane.h) and without.
class ZmqLinks : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(Lanes, ZmqLinks, ::testing::Values(true, false),
                         [](const auto& i) { return i.param ? "with_lane" : "zmq_only"; });

TEST_P(ZmqLinks, ExchangeTimeoutMalformedAndPeerDeath) {
  auto server = std::make_unique<ZmqListener>("tcp://127.0.0.1:*", GetParam());
  ASSERT_NE(server->address().find("tcp://127.0.0.1:"), std::string::npos);
  EXPECT_THROW(ZmqListener(server->address()), std::runtime_error) << "port in use";
  ZmqLink client(server->address(), GetParam());
  exchange(*server, client);
  EXPECT_EQ(client.lane_sending(), GetParam());
  malformed_then_good(*server, client);  // (with a lane: over it, since the server has now bound it)
  EXPECT_EQ(server->lanes_bound(), GetParam() ? 1u : 0u);
  recv_times_out(client, *server);
  // The listener goes away (as a killed worker would): the client hears of it quickly.
  server.reset();
  const auto t = Clock::now();
  Received r;
  while (since(t) < 5 && (r = client.recv(100)).status == RecvStatus::timeout) {
  }
  EXPECT_EQ(r.status, RecvStatus::closed) << r.error;
  EXPECT_LT(since(t), 2.0);
  EXPECT_FALSE(client.alive());
}

TEST(ZmqLink, NobodyListeningIsATimeoutNotAHang) {
  // An ipc path nobody binds (a freed TCP port could be taken by a parallel test).
  const std::string addr = "ipc:///tmp/herd-nobody-" + std::to_string(getpid());
  ZmqLink client(addr);
  EXPECT_EQ(client.send(pack(Reset{})), "");  // queued
  const auto t = Clock::now();
  EXPECT_EQ(client.recv(300).status, RecvStatus::timeout);
  EXPECT_LT(since(t), 1.5);
}

TEST_P(ZmqLinks, RawSocketGarbageIsMalformedAndListenerKeepsServing) {
  ZmqListener server("tcp://127.0.0.1:*", GetParam());
  zmq::socket_t raw(zmq_context(), zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  secure_client_socket(raw);  // a member of the cluster sending garbage (strangers: test_security.cpp)
  raw.connect(server.address());
  raw.send(zmq::buffer(std::string("\xde\xad\xbe\xef", 4)), zmq::send_flags::sndmore);
  raw.send(zmq::buffer(std::string("more garbage")), zmq::send_flags::none);
  Received r = server.recv(2000);
  EXPECT_EQ(r.status, RecvStatus::malformed);
  EXPECT_NE(r.error.find("envelope"), std::string::npos) << r.error;
  ZmqLink client(server.address(), GetParam());
  exchange(server, client);
}

}  // namespace
}  // namespace herd::transport
