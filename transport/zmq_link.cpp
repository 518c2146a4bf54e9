#include "transport/zmq_link.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include "transport/codec.h"

namespace herd::transport {

zmq::context_t& zmq_context() {
  static auto* ctx = new zmq::context_t(1);
  return *ctx;
}

namespace {

using Clock = std::chrono::steady_clock;

// Frames larger than this are refused by ZeroMQ before they are allocated.
constexpr int64_t kMaxZmqMessageBytes = int64_t{1} << 33;

// Reads the rest of a multipart message that has started arriving.
std::vector<std::string> recv_multipart(zmq::socket_t& s) {
  std::vector<std::string> frames;
  while (true) {
    zmq::message_t part;
    if (!s.recv(part, zmq::recv_flags::dontwait)) break;
    frames.emplace_back(static_cast<const char*>(part.data()), part.size());
    if (!part.more()) break;
  }
  return frames;
}

SendError send_multipart(zmq::socket_t& s, const std::string* first, std::vector<std::string>& frames) {
  try {
    const size_t total = frames.size() + (first ? 1 : 0);
    size_t i = 0;
    auto flags = [&] { return ++i < total ? zmq::send_flags::sndmore : zmq::send_flags::none; };
    if (first && !s.send(zmq::buffer(*first), flags())) return "send timed out";
    for (auto& f : frames)
      if (!s.send(zmq::buffer(f), flags())) return "send timed out";
    return {};
  } catch (const zmq::error_t& e) {
    return std::string("send failed: ") + e.what();
  }
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

}  // namespace

ZmqListener::ZmqListener(const std::string& address) : sock_(zmq_context(), zmq::socket_type::router) {
  sock_.set(zmq::sockopt::linger, 0);
  sock_.set(zmq::sockopt::router_mandatory, 1);  // sending to a vanished peer is an error, not a silent drop
  sock_.set(zmq::sockopt::sndtimeo, 2000);
  sock_.set(zmq::sockopt::maxmsgsize, kMaxZmqMessageBytes);
  try {
    sock_.bind(address);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("cannot listen on " + address + ": " + e.what());
  }
  address_ = sock_.get(zmq::sockopt::last_endpoint);
}

SendError ZmqListener::send_frames(const std::string& peer, std::vector<std::string> frames) {
  return send_multipart(sock_, &peer, frames);
}

Received ZmqListener::recv(int timeout_ms) {
  zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
  try {
    if (zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms)) <= 0) return {};
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return {};  // a signal (SIGTERM to a worker): the caller checks its stop flag
    throw;
  }
  auto frames = recv_multipart(sock_);
  if (frames.empty()) return {};
  std::string peer = std::move(frames.front());
  frames.erase(frames.begin());
  return decode_received(std::move(frames), std::move(peer));
}

ZmqLink::ZmqLink(const std::string& address)
    : sock_(zmq_context(), zmq::socket_type::dealer), mon_(zmq_context(), zmq::socket_type::pair), address_(address) {
  static std::atomic<uint64_t> next_monitor{0};
  sock_.set(zmq::sockopt::linger, 0);
  sock_.set(zmq::sockopt::sndtimeo, 2000);
  sock_.set(zmq::sockopt::maxmsgsize, kMaxZmqMessageBytes);
  sock_.set(zmq::sockopt::heartbeat_ivl, kHeartbeatIntervalMs);
  sock_.set(zmq::sockopt::heartbeat_timeout, kHeartbeatTimeoutMs);
  sock_.set(zmq::sockopt::reconnect_ivl, 100);
  const std::string mon_addr = "inproc://herd-zmq-monitor-" + std::to_string(next_monitor++);
  if (zmq_socket_monitor(sock_.handle(), mon_addr.c_str(), ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) != 0)
    throw std::runtime_error("cannot monitor the ZeroMQ socket for " + address);
  mon_.set(zmq::sockopt::linger, 0);
  mon_.connect(mon_addr);
  try {
    sock_.connect(address);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("cannot connect to " + address + ": " + e.what());
  }
}

ZmqLink::~ZmqLink() { zmq_socket_monitor(sock_.handle(), nullptr, 0); }

void ZmqLink::drain_monitor() {
  while (true) {
    zmq::message_t ev;
    if (!mon_.recv(ev, zmq::recv_flags::dontwait)) return;
    uint16_t event = 0;
    if (ev.size() >= 2) std::memcpy(&event, ev.data(), 2);
    while (ev.more()) {
      if (!mon_.recv(ev, zmq::recv_flags::dontwait)) break;
    }
    if (event == ZMQ_EVENT_CONNECTED) connected_ = true;
    if (event == ZMQ_EVENT_DISCONNECTED && connected_) alive_ = false;
  }
}

SendError ZmqLink::send_frames(std::vector<std::string> frames) {
  if (!alive_) return "connection to " + address_ + " lost";
  return send_multipart(sock_, nullptr, frames);
}

Received ZmqLink::recv(int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    zmq::pollitem_t items[2] = {{sock_.handle(), 0, ZMQ_POLLIN, 0}, {mon_.handle(), 0, ZMQ_POLLIN, 0}};
    if (alive_) {
      try {
        zmq::poll(items, 2, std::chrono::milliseconds(remaining_ms(deadline)));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
      }
    }
    // A message that arrived before the connection dropped is still delivered first.
    if (auto frames = recv_multipart(sock_); !frames.empty()) return decode_received(std::move(frames), {});
    drain_monitor();
    if (!alive_) {
      Received r;
      r.status = RecvStatus::closed;
      r.error = "connection to " + address_ + " lost";
      return r;
    }
    if (remaining_ms(deadline) <= 0) return {};
  }
}

}  // namespace herd::transport
