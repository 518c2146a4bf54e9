#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "transport/codec.h"
#include "transport/inproc_link.h"
#include "transport/link.h"
#include "transport/link_delay.h"
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

std::string normalize_address(const std::string& address) {
  if (address.find("://") != std::string::npos) return address;
  return "tcp://" + address;
}

void check_address(const std::string& address, bool listening) {
  auto bad = [&](const std::string& why) {
    return std::invalid_argument("bad address '" + address + "': " + why);
  };
  const std::string a = normalize_address(address);
  if (a.rfind("inproc://", 0) == 0 || a.rfind("ipc://", 0) == 0) {
    if (a.size() == a.find("://") + 3) throw bad("no name after the scheme");
    return;
  }
  if (a.rfind("tcp://", 0) != 0) throw bad("unsupported scheme (use HOST:PORT, tcp://, ipc:// or inproc://)");
  const std::string hp = a.substr(6);
  std::string host, port;
  if (!hp.empty() && hp[0] == '[') {
    const size_t close = hp.find(']');
    if (close == std::string::npos) throw bad("'[' without a closing ']' around the IPv6 address");
    host = hp.substr(1, close - 1);
    if (close + 1 >= hp.size() || hp[close + 1] != ':') throw bad("no :PORT after the IPv6 address");
    port = hp.substr(close + 2);
    if (host.empty() || host.find_first_not_of("0123456789abcdefABCDEF:.%") != std::string::npos)
      throw bad("'" + host + "' is not an IPv6 address");
  } else {
    const size_t colon = hp.rfind(':');
    if (colon == std::string::npos) throw bad("no :PORT");
    host = hp.substr(0, colon);
    port = hp.substr(colon + 1);
    if (host.empty()) throw bad("no host before the port");
    if (host.find(':') != std::string::npos) throw bad("an IPv6 address needs brackets: [ADDR]:PORT");
    const bool wildcard = listening && host == "*";
    if (!wildcard && host.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") !=
                         std::string::npos)
      throw bad("'" + host + "' is not a host name or address");
  }
  if (listening && port == "*") return;
  unsigned long v = 0;
  const bool digits = !port.empty() && port.size() <= 5 && port.find_first_not_of("0123456789") == std::string::npos;
  if (digits) v = std::stoul(port);
  if (!digits || v > 65535 || (v == 0 && !listening))
    throw bad("port '" + port + "' is not a number in " + (listening ? "0" : "1") + "..65535" +
              (listening ? " (or *)" : ""));
}

std::unique_ptr<Link> connect(const std::string& address) {
  try {
    check_address(address, false);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(e.what());  // connect()'s contract: std::runtime_error
  }
  const std::string a = normalize_address(address);
  if (a.rfind("inproc://", 0) == 0) return std::make_unique<InprocLink>(a);
  if (a.rfind("tcp://", 0) == 0 || a.rfind("ipc://", 0) == 0) return with_link_delay(std::make_unique<ZmqLink>(a));
  throw std::runtime_error("unsupported address " + address + " (use HOST:PORT, tcp://, ipc:// or inproc://)");
}

std::unique_ptr<Listener> listen(const std::string& address) {
  try {
    check_address(address, true);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(e.what());
  }
  const std::string a = normalize_address(address);
  if (a.rfind("inproc://", 0) == 0) return std::make_unique<InprocListener>(a);
  if (a.rfind("tcp://", 0) == 0 || a.rfind("ipc://", 0) == 0) return with_link_delay(std::make_unique<ZmqListener>(a));
  throw std::runtime_error("unsupported address " + address + " (use HOST:PORT, tcp://, ipc:// or inproc://)");
}

}  // namespace herd::transport
