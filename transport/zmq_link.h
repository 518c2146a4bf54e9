// ZeroMQ links. ZmqListener binds a ROUTER socket (a worker's --listen address; many peers, each
// named by its ZeroMQ routing id). ZmqLink connects a DEALER socket to one listener and watches
// the connection with a socket monitor plus ZMTP heartbeats (answered by ZeroMQ's I/O thread, so
// a worker busy computing still answers): when the peer process dies or its host stops answering,
// recv returns `closed` within about a second instead of waiting forever.
#pragma once

#include <memory>
#include <string>

#include <zmq.hpp>

#include "transport/link.h"

namespace herd::transport {

// The process-wide ZeroMQ context (never destroyed, so exit never blocks on lingering sockets).
zmq::context_t& zmq_context();

constexpr int kHeartbeatIntervalMs = 300;
constexpr int kHeartbeatTimeoutMs = 1200;

class ZmqListener : public Listener {
 public:
  // Binds; "tcp://HOST:*" picks a free port (address() then reports the real one).
  // Throws std::runtime_error (address in use, bad address).
  explicit ZmqListener(const std::string& address);
  SendError send_frames(const std::string& peer, std::vector<std::string> frames) override;
  Received recv(int timeout_ms) override;
  std::string address() const override { return address_; }

 private:
  zmq::socket_t sock_;
  std::string address_;
};

class ZmqLink : public Link {
 public:
  explicit ZmqLink(const std::string& address);
  ~ZmqLink() override;
  SendError send_frames(std::vector<std::string> frames) override;
  Received recv(int timeout_ms) override;
  bool alive() const override { return alive_; }
  std::string address() const override { return address_; }

 private:
  void drain_monitor();
  zmq::socket_t sock_, mon_;
  std::string address_;
  bool connected_ = false, alive_ = true;
};

}  // namespace herd::transport
