#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "transport/codec.h"
#include "transport/inproc_link.h"
#include "transport/link.h"
#include "transport/zmq_link.h"

namespace herd::transport {

Received decode_received(std::vector<std::string>&& frames, std::string peer) {
  Received r;
  r.peer = std::move(peer);
  try {
    r.msg = decode_frames(std::move(frames));
    r.status = RecvStatus::ok;
  } catch (const ProtocolError& e) {
    r.status = RecvStatus::malformed;
    r.error = e.what();
  }
  return r;
}

SendError Link::send(const Message& m) { return send_frames(encode_frames(m)); }
SendError Listener::send(const std::string& peer, const Message& m) { return send_frames(peer, encode_frames(m)); }
SendError Link::send(Message&& m) { return send_frames(encode_frames(std::move(m))); }
SendError Listener::send(const std::string& peer, Message&& m) {
  return send_frames(peer, encode_frames(std::move(m)));
}

namespace {
template <class L>
Received recv_busy_impl(L& l, BusyClock::time_point spin_until, int timeout_ms) {
  // A yield that comes back late means another thread wanted this core (more runnable threads than
  // cores): polling would take its time, and a busy core does not halt, so block instead.
  constexpr auto kContended = std::chrono::microseconds(200);
  // In-memory links wake a thread of this process through a condition variable: nothing to win.
  if (l.address().rfind("inproc://", 0) == 0) spin_until = BusyClock::time_point{};
  while (true) {
    Received r = l.recv(0);
    if (r.status != RecvStatus::timeout || timeout_ms == 0) return r;
    const auto now = BusyClock::now();
    if (now >= spin_until) break;
    std::this_thread::yield();
    if (BusyClock::now() - now > kContended) break;
  }
  return l.recv(timeout_ms);
}
}  // namespace

Received recv_busy(Link& l, BusyClock::time_point spin_until, int timeout_ms) {
  return recv_busy_impl(l, spin_until, timeout_ms);
}
Received recv_busy(Listener& l, BusyClock::time_point spin_until, int timeout_ms) {
  return recv_busy_impl(l, spin_until, timeout_ms);
}

std::chrono::microseconds busy_poll_window() {
  static const std::chrono::microseconds w = [] {
    const char* e = std::getenv("HERD_BUSY_POLL_US");
    if (!e || !*e) return std::chrono::microseconds(20000);
    char* end = nullptr;
    const long long v = std::strtoll(e, &end, 10);
    return std::chrono::microseconds(end && *end == '\0' && v > 0 ? std::min<long long>(v, 10'000'000) : 0);
  }();
  return w;
}

std::string normalize_address(const std::string& address) {
  if (address.find("://") != std::string::npos) return address;
  return "tcp://" + address;
}

std::unique_ptr<Link> connect(const std::string& address) {
  const std::string a = normalize_address(address);
  if (a.rfind("inproc://", 0) == 0) return std::make_unique<InprocLink>(a);
  if (a.rfind("tcp://", 0) == 0 || a.rfind("ipc://", 0) == 0) return std::make_unique<ZmqLink>(a);
  throw std::runtime_error("unsupported address " + address + " (use HOST:PORT, tcp://, ipc:// or inproc://)");
}

std::unique_ptr<Listener> listen(const std::string& address) {
  const std::string a = normalize_address(address);
  if (a.rfind("inproc://", 0) == 0) return std::make_unique<InprocListener>(a);
  if (a.rfind("tcp://", 0) == 0 || a.rfind("ipc://", 0) == 0) return std::make_unique<ZmqListener>(a);
  throw std::runtime_error("unsupported address " + address + " (use HOST:PORT, tcp://, ipc:// or inproc://)");
}

}  // namespace herd::transport
