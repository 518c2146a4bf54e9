// ZeroMQ links. ZmqListener binds a ROUTER socket (a worker's --listen address; many peers, each
// named by its ZeroMQ routing id). ZmqLink connects a DEALER socket to one listener and watches
// the connection with a socket monitor plus ZMTP heartbeats (answered by ZeroMQ's I/O thread, so
// a worker busy computing still answers): when the peer process dies or its host stops answering,
// recv returns `closed` within about a second instead of waiting forever.
//
// Over tcp:// both ends also open a data lane (transport/tcp_lane.h: plain TCP, no I/O thread, one
// wake-up per hop instead of three), and once it is up every message between them takes it:
//   1. ZmqLink's constructor sends LaneRequest over ZeroMQ.
//   2. The listener answers LaneOffer{port, 16-byte random ticket, and when secure a 32-byte session
//      secret} (its lane socket listens on the interface its ZeroMQ endpoint is bound to, on an
//      ephemeral port).
//   3. The link (inside its next recv) connects, sends LaneAttach{ticket} as the lane's first
//      message, then LaneSwitch over ZeroMQ, and from then on sends on the lane.
//   4. The listener binds the lane to that peer's routing id once it has both the ticket and the
//      LaneSwitch, answers LaneSwitch over ZeroMQ, and from then on sends to that peer on the lane.
// Each side reads the lane only after the other's LaneSwitch has come through ZeroMQ, so every
// message sent before the switch is delivered before any sent after it: order is kept. A lane that
// cannot be reached (a firewall that lets only the ZeroMQ port through) leaves the pair on ZeroMQ,
// as does HERD_LANES=0. These four message types never reach the caller of recv.
//
// Security (transport/security.h): both sockets use CURVE with the cluster key unless the process
// runs --insecure. Then the LaneOffer also carries a 32-byte session secret (random per offer,
// confidential on the CURVE channel); the LaneAttach stays clear (a one-time ticket), and every
// later lane message is sealed with keys derived from that secret, one per direction (tcp_lane.h).
// A stranger on the lane port never had a ticket; a proxy that alters, replays or reorders lane
// bytes fails the receiver's tag check, which reports it like a dead peer, with its name. A peer
// whose key is not the cluster's, or that disagrees about --insecure, fails the ZeroMQ handshake:
// the link reports `closed` with the reason (the monitor's handshake events) instead of waiting.
#pragma once

#include <chrono>
#include <functional>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "transport/link.h"
#include "transport/tcp_lane.h"

namespace herd::transport {

// The process-wide ZeroMQ context (never destroyed, so exit never blocks on lingering sockets).
zmq::context_t& zmq_context();

constexpr int kHeartbeatIntervalMs = 300;
constexpr int kHeartbeatTimeoutMs = 1200;
// Message types of the lane handshake (outside cluster/protocol.h's MsgType range; never surfaced).
constexpr uint16_t kLaneRequest = 0xFF01, kLaneOffer = 0xFF02, kLaneAttach = 0xFF03, kLaneSwitch = 0xFF04;
// Sent by ZmqListener::reachable over ZeroMQ (a routing id that is gone fails the send); ignored by ZmqLink.
constexpr uint16_t kLinkProbe = 0xFF05;
constexpr size_t kLaneTicketBytes = 16;
constexpr size_t kLaneSessionBytes = 32;  // in a LaneOffer, secure mode only

// Bounds before allocation (issue [trust] item 4). A listener (a worker's --listen socket) refuses
// any inbound frame (ZMQ_MAXMSGSIZE, checked by ZeroMQ against the frame's length header before it
// allocates) or lane message (its length header, before a buffer grows) above this. The largest
// legal message a worker receives is a Forward: rows x n_embd x 4 bytes; the coordinator sends at
// most n_batch = 512 rows per Forward, and the widest models today have n_embd = 16384, so 32 MiB;
// 256 MiB leaves room for 4096-row batches at that width. Everything else is <= 4 MiB (a
// WeightChunk or Ping tensor) plus a payload of <= 1 MiB. Links (a coordinator receiving logits:
// rows x n_vocab x 4) keep the codec's own per-tensor bound.
constexpr uint64_t kMaxListenerMessageBytes = uint64_t{256} << 20;
constexpr uint64_t kMaxLinkMessageBytes = uint64_t{1} << 33;
// Messages queued per peer in each direction inside ZeroMQ (ZMQ_SNDHWM / ZMQ_RCVHWM). A worker's
// replies are <= 4 MiB except a last stage's logits, so a peer that never reads pins at most
// kListenerHwm messages (plus the kernel's socket buffers) before sends to it time out.
constexpr int kListenerHwm = 16;
// A connection to a listener must finish ZeroMQ's (CURVE + ZAP) handshake within this (ZeroMQ's
// default is 30 s): a connection that sends nothing holds one of the worker's file descriptors only
// this long, so silent connections cannot keep the real coordinator out (issue [trust] item 4; a
// handshake on a LAN takes milliseconds, across the world a few round trips).
constexpr int kHandshakeTimeoutMs = 3000;
constexpr int kListenerSendTimeoutMs = 2000;

// False when $HERD_LANES is "0": links and listeners made after that stay on ZeroMQ.
bool lanes_enabled();

// Tests only: links made after this connect their lane to redirect(offered port) on the same host
// instead (a tampering proxy in between). An empty function restores direct connections.
void set_lane_redirect_for_tests(std::function<uint16_t(uint16_t)> redirect);

class ZmqListener : public Listener {
 public:
  // Binds; "tcp://HOST:*" picks a free port (address() then reports the real one).
  // Throws std::runtime_error (address in use, bad address).
  explicit ZmqListener(const std::string& address, bool lanes = lanes_enabled());
  ~ZmqListener() override;
  SendError send_frames(const std::string& peer, std::vector<std::string> frames) override;
  Received recv(int timeout_ms) override;
  std::string address() const override { return address_; }
  bool reachable(const std::string& peer) override;
  size_t lanes_bound() const { return bound_.size(); }  // peers served over a data lane (tests)
  uint16_t lane_port() const { return lane_port_; }     // 0 without lanes

 private:
  struct Pending {
    std::unique_ptr<LaneSocket> sock;
    std::chrono::steady_clock::time_point since;
    std::string peer;  // set once its LaneAttach carried a ticket we issued
  };
  // Handles a lane handshake message from `peer`; false when `frames` is an ordinary message.
  bool lane_control(const std::string& peer, const std::vector<std::string>& frames);
  void accept_lanes();
  void service_pending();
  void bind_ready(const std::string& peer);
  Received from_lanes();  // a message from a bound lane, or timeout
  // Whether the last poll saw fd readable (or did not poll it: a lane bound since). Keeps the
  // busy-polling hot path from a read/accept syscall per idle socket per pass.
  bool ready(int fd) const;

  struct Ticket {
    std::string peer;     // the peer it was issued to
    std::string session;  // the lane's session secret ("" when insecure)
  };
  zmq::socket_t sock_;
  std::string address_;
  bool secure_ = true;
  int lane_fd_ = -1;
  uint16_t lane_port_ = 0;
  std::map<std::string, Ticket> tickets_;
  std::vector<Pending> pending_;
  std::map<std::string, bool> switched_;  // peers whose LaneSwitch came over ZeroMQ
  std::map<std::string, std::unique_ptr<LaneSocket>> bound_;
  std::vector<zmq::pollitem_t> items_;  // the last poll's (reused: recv(0) runs in busy loops)
};

class ZmqLink : public Link {
 public:
  explicit ZmqLink(const std::string& address, bool lanes = lanes_enabled());
  ~ZmqLink() override;
  SendError send_frames(std::vector<std::string> frames) override;
  Received recv(int timeout_ms) override;
  bool alive() const override { return alive_; }
  std::string address() const override { return address_; }
  bool lane_sending() const { return lane_ && lane_send_; }  // tests
  bool lane_reading() const { return lane_ && lane_read_; }
  bool lane_sealed() const { return lane_ && lane_->sealed(); }

 private:
  void drain_monitor();
  void on_offer(const std::vector<std::string>& frames);
  Received closed(const std::string& why);
  Received lane_failed();  // the lane broke: deliver what ZeroMQ still brings (the reason), then closed
  zmq::socket_t sock_, mon_;
  std::string address_;
  bool secure_ = true;
  bool connected_ = false, handshaken_ = false, alive_ = true;
  std::string why_closed_;     // a handshake failure the monitor reported
  std::string pending_close_;  // lane_failed() delivered a last message; closed comes next
  std::unique_ptr<LaneSocket> lane_;
  bool lane_send_ = false, lane_read_ = false;
  std::vector<zmq::pollitem_t> items_;  // reused across recv calls
};

}  // namespace herd::transport
