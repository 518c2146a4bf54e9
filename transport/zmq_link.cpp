#include "transport/zmq_link.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <sodium.h>

#include "common/file_io.h"
#include "common/log.h"
#include "transport/codec.h"
#include "transport/security.h"

namespace herd::transport {

zmq::context_t& zmq_context() {
  static auto* ctx = new zmq::context_t(1);
  return *ctx;
}

namespace {

using Clock = std::chrono::steady_clock;

// A new socket of the shared context. Its mailbox takes a descriptor: while silent connections
// hold every one ([trust] item 4) this waits for one, as common/file_io's opens do, instead of
// failing the Assign that needed the socket.
zmq::socket_t new_socket(zmq::socket_type type) {
  zmq::socket_t sock;
  retry_while_no_descriptor([&] {
    try {
      sock = zmq::socket_t(zmq_context(), type);
      return true;
    } catch (const zmq::error_t& e) {
      errno = e.num();
      return false;
    }
  });
  if (!sock) throw zmq::error_t();  // from errno: the last attempt's
  return sock;
}


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

// A receiver on a lane always reads promptly (or is dead, which fails the write at once), so a
// send that cannot finish in this long means the host stopped answering.
constexpr int kLaneSendTimeoutMs = 10000;
constexpr int kLaneConnectTimeoutMs = 2000;
// An accepted connection must present its ticket this soon; at most this many wait at once.
constexpr auto kPendingLaneTimeout = std::chrono::seconds(5);
constexpr size_t kMaxPendingLanes = 32;
constexpr size_t kMaxTickets = 256;
constexpr uint64_t kMaxPendingLaneMessage = 1024;  // the first message, a LaneAttach, is ~50 bytes

// The message type in a frame list's envelope without decoding the rest; 0 if there is none.
uint16_t envelope_type(const std::vector<std::string>& frames) {
  if (frames.empty() || frames[0].size() != kEnvelopeBytes) return 0;
  uint16_t t;
  std::memcpy(&t, frames[0].data() + 6, 2);
  return t;
}

std::vector<std::string> control(uint16_t type, std::string payload = {}) {
  Message m;
  m.type = type;
  m.payload = std::move(payload);
  return encode_frames(m);
}

// Random bytes from the system's CSPRNG (libsodium: getrandom).
std::string random_bytes(size_t n) {
  if (sodium_init() < 0) throw std::runtime_error("libsodium cannot initialise");
  std::string t(n, '\0');
  randombytes_buf(t.data(), t.size());
  return t;
}

// The two directions' lane keys from a session secret: subkey 1 dialer -> listener, 2 back.
void lane_keys(const std::string& session, bool listener, uint8_t (&send)[kLaneKeyBytes], uint8_t (&recv)[kLaneKeyBytes]) {
  static_assert(crypto_kdf_KEYBYTES == kLaneSessionBytes && kLaneKeyBytes >= crypto_kdf_BYTES_MIN);
  const auto* k = reinterpret_cast<const unsigned char*>(session.data());
  uint8_t up[kLaneKeyBytes], down[kLaneKeyBytes];
  crypto_kdf_derive_from_key(up, sizeof up, 1, "herdlane", k);
  crypto_kdf_derive_from_key(down, sizeof down, 2, "herdlane", k);
  std::memcpy(send, listener ? down : up, kLaneKeyBytes);
  std::memcpy(recv, listener ? up : down, kLaneKeyBytes);
  sodium_memzero(up, sizeof up);
  sodium_memzero(down, sizeof down);
}

void poll_items(std::vector<zmq::pollitem_t>& items, int timeout_ms) {
  try {
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(timeout_ms));
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) throw;  // a signal (SIGTERM to a worker): the caller checks its stop flag
    for (auto& it : items) it.revents = 0;
  }
}

}  // namespace

namespace {
std::mutex g_redirect_mu;
std::function<uint16_t(uint16_t)> g_redirect;
}  // namespace

void set_lane_redirect_for_tests(std::function<uint16_t(uint16_t)> redirect) {
  std::lock_guard<std::mutex> lock(g_redirect_mu);
  g_redirect = std::move(redirect);
}

bool lanes_enabled() {
  const char* e = std::getenv("HERD_LANES");
  return !(e && std::string(e) == "0");
}

ZmqListener::ZmqListener(const std::string& address, bool lanes)
    : sock_(new_socket(zmq::socket_type::router)), secure_(security_enabled()) {
  sock_.set(zmq::sockopt::linger, 0);
  secure_server_socket(sock_);
  sock_.set(zmq::sockopt::router_mandatory, 1);  // sending to a vanished peer is an error, not a silent drop
  sock_.set(zmq::sockopt::sndtimeo, kListenerSendTimeoutMs);
  sock_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(kMaxListenerMessageBytes));
  sock_.set(zmq::sockopt::sndhwm, kListenerHwm);
  sock_.set(zmq::sockopt::rcvhwm, kListenerHwm);
  sock_.set(zmq::sockopt::handshake_ivl, kHandshakeTimeoutMs);
  try {
    sock_.bind(address);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("cannot listen on " + address + ": " + e.what());
  }
  address_ = sock_.get(zmq::sockopt::last_endpoint);
  if (lanes && address_.rfind("tcp://", 0) == 0) {
    try {
      lane_fd_ = lane_listen(tcp_host_of(address_), &lane_port_);
    } catch (const std::exception& e) {
      HERD_LOG_WARN(address_, ": no data lane (", e.what(), "); peers stay on ZeroMQ");
    }
  }
}

ZmqListener::~ZmqListener() {
  if (lane_fd_ >= 0) ::close(lane_fd_);
}

SendError ZmqListener::send_frames(const std::string& peer, std::vector<std::string> frames) {
  if (auto it = bound_.find(peer); it != bound_.end()) {
    std::string err = it->second->send(frames, kLaneSendTimeoutMs);
    if (err.empty()) return {};
    bound_.erase(it);
    return "data lane: " + err;
  }
  return send_multipart(sock_, &peer, frames);
}

bool ZmqListener::reachable(const std::string& peer) {
  // ROUTER_MANDATORY: a routing id whose connection has closed fails the send (EHOSTUNREACH).
  auto probe = control(kLinkProbe);
  return send_multipart(sock_, &peer, probe).empty();
}

bool ZmqListener::lane_control(const std::string& peer, const std::vector<std::string>& frames) {
  const uint16_t type = envelope_type(frames);
  if (type != kLaneRequest && type != kLaneSwitch && type != kLaneOffer && type != kLaneAttach) return false;
  if (frames.size() != 2) return false;  // let the decoder report it
  if (type == kLaneRequest && lane_fd_ >= 0) {
    if (tickets_.size() >= kMaxTickets) tickets_.erase(tickets_.begin());
    std::string t = random_bytes(kLaneTicketBytes);
    std::string session = secure_ ? random_bytes(kLaneSessionBytes) : std::string();
    tickets_[t] = {peer, session};
    std::string payload(2, '\0');
    std::memcpy(payload.data(), &lane_port_, 2);
    auto offer = control(kLaneOffer, payload + t + session);
    send_multipart(sock_, &peer, offer);
  } else if (type == kLaneSwitch) {
    if (switched_.size() >= kMaxTickets) switched_.erase(switched_.begin());
    switched_[peer] = true;
    bind_ready(peer);
  }
  return true;  // (an offer or attach over ZeroMQ means nothing here: ignored)
}

bool ZmqListener::ready(int fd) const {
  for (const auto& it : items_)
    if (it.socket == nullptr && it.fd == fd) return it.revents != 0;
  return true;
}

void ZmqListener::accept_lanes() {
  if (lane_fd_ < 0 || !ready(lane_fd_)) return;
  for (int fd; (fd = lane_accept(lane_fd_)) >= 0;) {
    if (pending_.size() >= kMaxPendingLanes) pending_.erase(pending_.begin());
    auto sock = std::make_unique<LaneSocket>(fd, kMaxListenerMessageBytes);
    sock->limit_first_message(kMaxPendingLaneMessage);
    if (secure_) sock->hold_after_first();  // what follows the clear LaneAttach is sealed
    pending_.push_back({std::move(sock), Clock::now(), {}});
  }
}

void ZmqListener::service_pending() {
  const auto now = Clock::now();
  std::vector<std::string> attached;
  for (size_t i = 0; i < pending_.size();) {
    Pending& p = pending_[i];
    bool keep = true;
    if (p.peer.empty()) {
      if (ready(p.sock->fd())) p.sock->pump();
      if (p.sock->has_message()) {
        // The first message must be LaneAttach with a ticket this listener issued.
        std::vector<std::string> f = p.sock->pop();
        auto it = envelope_type(f) == kLaneAttach && f.size() == 2 && f[1].size() == kLaneTicketBytes
                      ? tickets_.find(f[1])
                      : tickets_.end();
        if (it == tickets_.end()) {
          HERD_LOG_WARN(address_, ": closing a data lane connection that did not present a valid ticket");
          keep = false;
        } else {
          p.peer = it->second.peer;
          if (secure_) {
            uint8_t send[kLaneKeyBytes], recv[kLaneKeyBytes];
            lane_keys(it->second.session, /*listener=*/true, send, recv);
            p.sock->seal(send, recv);
            sodium_memzero(send, sizeof send);
            sodium_memzero(recv, sizeof recv);
          }
          tickets_.erase(it);
          attached.push_back(p.peer);
        }
      } else if (!p.sock->ok()) {
        keep = false;
      }
    }
    if (keep && now - p.since > kPendingLaneTimeout) keep = false;  // silent, or its LaneSwitch never came
    if (keep) ++i;
    else pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
  }
  for (const auto& peer : attached) bind_ready(peer);
}

void ZmqListener::bind_ready(const std::string& peer) {
  if (!switched_.count(peer)) return;
  for (size_t i = 0; i < pending_.size(); ++i) {
    if (pending_[i].peer != peer) continue;
    auto sock = std::move(pending_[i].sock);
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
    switched_.erase(peer);
    // Our last ZeroMQ message to this peer: it reads the lane only after this one.
    auto sw = control(kLaneSwitch);
    if (send_multipart(sock_, &peer, sw).empty()) bound_[peer] = std::move(sock);
    return;
  }
}

Received ZmqListener::from_lanes() {
  for (auto it = bound_.begin(); it != bound_.end(); ++it) {
    LaneSocket& s = *it->second;
    if (s.has_message()) return decode_received(s.pop(), it->first);
    if (!s.ok()) {
      Received r;
      const std::string peer = it->first;
      if (s.protocol_error()) {
        r.status = RecvStatus::malformed;
        r.error = s.error();
        r.peer = peer;
      }
      bound_.erase(it);  // a closed lane: its peer is gone (or falls back to ZeroMQ)
      if (r.status == RecvStatus::malformed) return r;
      return from_lanes();
    }
  }
  return {};
}

Received ZmqListener::recv(int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    if (Received r = from_lanes(); r.status != RecvStatus::timeout) return r;
    items_.clear();
    items_.push_back({sock_.handle(), 0, ZMQ_POLLIN, 0});
    if (lane_fd_ >= 0) items_.push_back({nullptr, lane_fd_, ZMQ_POLLIN, 0});
    for (auto& p : pending_) items_.push_back({nullptr, p.sock->fd(), ZMQ_POLLIN, 0});
    for (auto& [peer, s] : bound_) items_.push_back({nullptr, s->fd(), ZMQ_POLLIN, 0});
    // Pending lanes expire: wake up now and then to drop the silent ones.
    const int wait = pending_.empty() ? remaining_ms(deadline) : std::min(remaining_ms(deadline), 200);
    poll_items(items_, wait);
    accept_lanes();
    service_pending();
    // ZeroMQ first: whatever a peer sent before its switch precedes what it sent on its lane.
    while (true) {
      auto frames = recv_multipart(sock_);
      if (frames.empty()) break;
      std::string peer = std::move(frames.front());
      frames.erase(frames.begin());
      if (lane_control(peer, frames)) continue;
      return decode_received(std::move(frames), std::move(peer));
    }
    for (auto& [peer, s] : bound_)
      if (ready(s->fd())) s->pump();
    if (Received r = from_lanes(); r.status != RecvStatus::timeout) return r;
    if (remaining_ms(deadline) <= 0) return {};
  }
}

ZmqLink::ZmqLink(const std::string& address, bool lanes)
    : sock_(new_socket(zmq::socket_type::dealer)),
      mon_(new_socket(zmq::socket_type::pair)),
      address_(address),
      secure_(security_enabled()) {
  static std::atomic<uint64_t> next_monitor{0};
  sock_.set(zmq::sockopt::linger, 0);
  sock_.set(zmq::sockopt::sndtimeo, 2000);
  sock_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(kMaxLinkMessageBytes));
  sock_.set(zmq::sockopt::heartbeat_ivl, kHeartbeatIntervalMs);
  sock_.set(zmq::sockopt::heartbeat_timeout, kHeartbeatTimeoutMs);
  sock_.set(zmq::sockopt::reconnect_ivl, 100);
  secure_client_socket(sock_, address);
  const std::string mon_addr = "inproc://herd-zmq-monitor-" + std::to_string(next_monitor++);
  constexpr int kEvents = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                          ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                          ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
  if (!retry_while_no_descriptor([&] { return zmq_socket_monitor(sock_.handle(), mon_addr.c_str(), kEvents) == 0; }))
    throw std::runtime_error("cannot monitor the ZeroMQ socket for " + address);
  mon_.set(zmq::sockopt::linger, 0);
  mon_.connect(mon_addr);
  try {
    sock_.connect(address);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("cannot connect to " + address + ": " + e.what());
  }
  if (lanes && !tcp_host_of(address_).empty()) {
    auto req = control(kLaneRequest);
    send_multipart(sock_, nullptr, req);  // queued until connected; answered before anything we send next
  }
}

ZmqLink::~ZmqLink() { zmq_socket_monitor(sock_.handle(), nullptr, 0); }

void ZmqLink::drain_monitor() {
  while (true) {
    zmq::message_t ev;
    if (!mon_.recv(ev, zmq::recv_flags::dontwait)) return;
    uint16_t event = 0;
    uint32_t value = 0;
    if (ev.size() >= 2) std::memcpy(&event, ev.data(), 2);
    if (ev.size() >= 6) std::memcpy(&value, static_cast<const char*>(ev.data()) + 2, 4);
    while (ev.more()) {
      if (!mon_.recv(ev, zmq::recv_flags::dontwait)) break;
    }
    const std::string mine = secure_ ? "this side is secure (" + security_description() + ")" : "this side runs --insecure";
    if (event == ZMQ_EVENT_CONNECTED) connected_ = true;
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) handshaken_ = true;
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      alive_ = false;
      why_closed_ = "authentication refused (ZAP status " + std::to_string(value) +
                    "): the peer does not admit this side's key (a different cluster key, or not in its allow-list) (" + mine + ")";
    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
      alive_ = false;
      why_closed_ = value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
                        ? "security mismatch: one side runs --insecure and the other does not; both ends must "
                          "agree (" + mine + ")"
                        : "handshake failed (ZeroMQ protocol error " + std::to_string(value) + "; " + mine + ")";
    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {  // value: an errno (the peer hung up)
      alive_ = false;
      why_closed_ = secure_ ? "the peer closed the connection during the handshake: a different cluster key (or, with "
                              "an allow-list, not the key listed for it), or it runs --insecure (" + mine + ")"
                            : "the peer closed the connection during the handshake: it may be secure (" + mine + ")";
    } else if (event == ZMQ_EVENT_DISCONNECTED && connected_) {
      alive_ = false;
      if (!handshaken_ && why_closed_.empty())
        why_closed_ = secure_ ? "the peer dropped the connection during the handshake: a different cluster key, or "
                                "it runs --insecure (" + mine + ")"
                              : "the peer dropped the connection during the handshake: it may be secure (" + mine + ")";
    }
  }
}

void ZmqLink::on_offer(const std::vector<std::string>& frames) {
  const size_t want = 2 + kLaneTicketBytes + (secure_ ? kLaneSessionBytes : 0);
  if (lane_ || frames.size() != 2 || frames[1].size() != want) return;
  uint16_t port;
  std::memcpy(&port, frames[1].data(), 2);
  {
    std::lock_guard<std::mutex> lock(g_redirect_mu);
    if (g_redirect) port = g_redirect(port);
  }
  try {
    lane_ = std::make_unique<LaneSocket>(lane_connect(tcp_host_of(address_), port, kLaneConnectTimeoutMs),
                                         kMaxLinkMessageBytes);
    if (auto err = lane_->send(control(kLaneAttach, frames[1].substr(2, kLaneTicketBytes)), kLaneConnectTimeoutMs);
        !err.empty())
      throw std::runtime_error(err);
    if (secure_) {
      uint8_t send[kLaneKeyBytes], recv[kLaneKeyBytes];
      lane_keys(frames[1].substr(2 + kLaneTicketBytes), /*listener=*/false, send, recv);
      lane_->seal(send, recv, address_);
      sodium_memzero(send, sizeof send);
      sodium_memzero(recv, sizeof recv);
    }
    // Our last ZeroMQ message: the listener reads the lane only after it.
    auto sw = control(kLaneSwitch);
    if (auto err = send_multipart(sock_, nullptr, sw); !err.empty()) throw std::runtime_error(err);
    lane_send_ = true;
  } catch (const std::exception& e) {
    HERD_LOG_WARN(address_, ": no data lane (", e.what(), "); staying on ZeroMQ");
    lane_.reset();
  }
}

Received ZmqLink::closed(const std::string& why) {
  alive_ = false;
  Received r;
  r.status = RecvStatus::closed;
  const std::string reason = why.empty() ? why_closed_ : why;
  r.error = "connection to " + address_ + " lost" + (reason.empty() ? "" : " (" + reason + ")");
  return r;
}

Received ZmqLink::lane_failed() {
  // The listener closes a lane whose bytes failed its checks and then tells us why over ZeroMQ
  // (a worker's Error "dropped: lane from ...: frame N failed authentication"); the close reaches us
  // first, so give that message a moment to arrive before reporting a bare closed connection.
  const std::string why = lane_->error();
  lane_read_ = lane_send_ = false;
  alive_ = false;
  pending_close_ = why.empty() ? "data lane closed" : why;
  std::vector<zmq::pollitem_t> item{{sock_.handle(), 0, ZMQ_POLLIN, 0}};
  const auto deadline = Clock::now() + std::chrono::milliseconds(300);
  while (remaining_ms(deadline) > 0) {
    poll_items(item, remaining_ms(deadline));
    auto frames = recv_multipart(sock_);
    if (frames.empty()) continue;
    const uint16_t type = envelope_type(frames);
    if (type == kLaneOffer || type == kLaneSwitch || type == kLinkProbe) continue;
    return decode_received(std::move(frames), {});
  }
  std::string reason = std::move(pending_close_);
  pending_close_.clear();
  return closed(reason);
}

SendError ZmqLink::send_frames(std::vector<std::string> frames) {
  if (!alive_) return "connection to " + address_ + " lost";
  if (lane_send_) {
    if (auto err = lane_->send(frames, kLaneSendTimeoutMs); !err.empty()) {
      alive_ = false;  // the lane only breaks when the peer went away (or garbled the stream)
      return "connection to " + address_ + " lost (" + err + ")";
    }
    return {};
  }
  return send_multipart(sock_, nullptr, frames);
}

Received ZmqLink::recv(int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  if (!pending_close_.empty()) {
    std::string reason = std::move(pending_close_);
    pending_close_.clear();
    return closed(reason);
  }
  while (true) {
    if (lane_read_ && lane_->has_message()) return decode_received(lane_->pop(), {});
    // Read the lane when the poll saw it readable, or did not watch it (not polled, or switched
    // to in this pass): a read per idle pass would be a syscall in every busy-poll iteration.
    bool lane_ready = true;
    if (alive_) {
      items_.assign({{sock_.handle(), 0, ZMQ_POLLIN, 0}, {mon_.handle(), 0, ZMQ_POLLIN, 0}});
      if (lane_read_) items_.push_back({nullptr, lane_->fd(), ZMQ_POLLIN, 0});
      poll_items(items_, remaining_ms(deadline));
      lane_ready = items_.size() < 3 || items_[2].revents != 0;
    }
    // A message that arrived before the connection dropped is still delivered first.
    while (true) {
      auto frames = recv_multipart(sock_);
      if (frames.empty()) break;
      const uint16_t type = envelope_type(frames);
      if (type == kLaneOffer) {
        on_offer(frames);
      } else if (type == kLaneSwitch) {
        lane_read_ = lane_ != nullptr;  // everything after this comes on the lane
      } else if (type == kLinkProbe) {
        // a listener checking that we are still here: nothing to do
      } else {
        return decode_received(std::move(frames), {});
      }
    }
    if (lane_read_ && lane_ready) {
      const bool ok = lane_->pump();
      if (lane_->has_message()) return decode_received(lane_->pop(), {});
      if (!ok) {
        if (lane_->protocol_error()) {
          Received r;
          r.status = RecvStatus::malformed;
          r.error = lane_->error();
          alive_ = false;
          return r;
        }
        return lane_failed();
      }
    }
    drain_monitor();
    if (!alive_) return closed({});
    if (remaining_ms(deadline) <= 0) return {};
  }
}

}  // namespace herd::transport
