// --link-delay (transport/link_delay.h): with a delay set, links opened by connect()/listen() over
// tcp:// hand each message over no earlier than the delay after it was sent, in order, a burst
// delayed once (not once per message); recv's timeout still holds; malformed frames and a lost
// peer come through delayed too; inproc links and a delay of 0 are left as they are.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>

#include "cluster/protocol.h"
#include "transport/inproc_link.h"
#include "transport/link_delay.h"

namespace herd::transport {
namespace {

using namespace herd::cluster;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

class LinkDelay : public ::testing::Test {
 protected:
  void TearDown() override { set_link_delay(std::chrono::microseconds(0)); }

  // A connected pair whose handshake is done (one message each way).
  void open(milliseconds d) {
    set_link_delay(d);
    server = listen("tcp://127.0.0.1:*");
    client = connect(server->address());
    ASSERT_EQ(client->send(pack(Reset{})), "");
    Received r = server->recv(5000);
    ASSERT_EQ(r.status, RecvStatus::ok) << r.error;
    peer = r.peer;
  }

  std::unique_ptr<Listener> server;
  std::unique_ptr<Link> client;
  std::string peer;
};

TEST_F(LinkDelay, EachMessageArrivesNoSoonerThanTheDelayInOrderAndABurstIsDelayedOnce) {
  const double d = 0.15;
  open(milliseconds(150));
  ASSERT_NE(dynamic_cast<DelayedLink*>(client.get()), nullptr);
  ASSERT_NE(dynamic_cast<DelayedListener*>(server.get()), nullptr);
  const auto t = Clock::now();
  for (uint64_t i = 0; i < 5; ++i) ASSERT_EQ(client->send(pack(Result{i, 0})), "");
  for (uint64_t i = 0; i < 5; ++i) {
    Received r = server->recv(5000);
    ASSERT_EQ(r.status, RecvStatus::ok) << r.error;
    EXPECT_GE(since(t), d) << "message " << i;
    EXPECT_EQ(unpack<Result>(r.msg).request_id, i);
  }
  // Five messages sent at once are a burst on one link: a per-message delay would take 5 x 0.15 s.
  EXPECT_LT(since(t), 4 * d);
  // The other direction: the client's side delays what it receives.
  const auto t2 = Clock::now();
  ASSERT_EQ(server->send(peer, pack(Result{7, 0})), "");
  Received back = client->recv(5000);
  ASSERT_EQ(back.status, RecvStatus::ok) << back.error;
  EXPECT_GE(since(t2), d);
  EXPECT_EQ(unpack<Result>(back.msg).request_id, 7u);
}

TEST_F(LinkDelay, RecvTimesOutWhileTheMessageIsHeldThenDeliversIt) {
  open(milliseconds(400));
  const auto t = Clock::now();
  ASSERT_EQ(client->send(pack(Result{3, 0})), "");
  EXPECT_EQ(server->recv(50).status, RecvStatus::timeout);  // due at 0.4 s
  EXPECT_GE(since(t), 0.05);
  EXPECT_EQ(server->recv(0).status, RecvStatus::timeout);
  Received r = server->recv(5000);
  ASSERT_EQ(r.status, RecvStatus::ok) << r.error;
  EXPECT_GE(since(t), 0.4);
  EXPECT_EQ(unpack<Result>(r.msg).request_id, 3u);
}

TEST_F(LinkDelay, MalformedFramesAndALostPeerComeThroughDelayed) {
  open(milliseconds(100));
  auto t = Clock::now();
  ASSERT_EQ(client->send_frames({"junk"}), "");
  ASSERT_EQ(client->send(pack(Result{5, 0})), "");
  Received r = server->recv(5000);
  EXPECT_EQ(r.status, RecvStatus::malformed);
  EXPECT_GE(since(t), 0.1);
  r = server->recv(5000);  // the good message after it still arrives
  ASSERT_EQ(r.status, RecvStatus::ok) << r.error;
  EXPECT_EQ(unpack<Result>(r.msg).request_id, 5u);
  server.reset();  // a worker that died
  t = Clock::now();
  while (since(t) < 8 && (r = client->recv(100)).status == RecvStatus::timeout) {
  }
  EXPECT_EQ(r.status, RecvStatus::closed) << r.error;
  EXPECT_GE(since(t), 0.1);
}

TEST_F(LinkDelay, InprocLinksAndNoDelayAreNotWrapped) {
  set_link_delay(milliseconds(100));
  auto in_server = listen("inproc://link-delay-test");
  auto in_client = connect("inproc://link-delay-test");
  EXPECT_NE(dynamic_cast<InprocListener*>(in_server.get()), nullptr);
  EXPECT_NE(dynamic_cast<InprocLink*>(in_client.get()), nullptr);
  set_link_delay(milliseconds(0));
  auto tcp = listen("tcp://127.0.0.1:*");
  EXPECT_EQ(dynamic_cast<DelayedListener*>(tcp.get()), nullptr);
}

TEST(LinkDelayRange, OutsideZeroToTenSecondsIsRefused) {
  EXPECT_THROW(set_link_delay(std::chrono::microseconds(-1)), std::invalid_argument);
  EXPECT_THROW(set_link_delay(std::chrono::seconds(11)), std::invalid_argument);
  EXPECT_EQ(link_delay().count(), 0);
}

}  // namespace
}  // namespace herd::transport
