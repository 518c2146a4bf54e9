#include "transport/inproc_link.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <stdexcept>

#include "transport/codec.h"

namespace herd::transport {

using Frames = std::vector<std::string>;

struct InprocConn {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Frames> inbox;  // listener -> link
  bool closed = false;       // the listener went away
  std::string peer_id;
  std::weak_ptr<InprocHub> hub;
};

struct InprocHub {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<std::string, Frames>> inbox;  // (peer, frames) from every link
  std::map<std::string, std::weak_ptr<InprocConn>> conns;
  bool closed = false;
  uint64_t next_id = 1;
};

namespace {

std::mutex g_registry_mu;
std::map<std::string, std::weak_ptr<InprocHub>>& registry() {
  static auto* r = new std::map<std::string, std::weak_ptr<InprocHub>>();
  return *r;
}

}  // namespace

InprocListener::InprocListener(const std::string& address) : address_(address), hub_(std::make_shared<InprocHub>()) {
  std::lock_guard lock(g_registry_mu);
  auto& slot = registry()[address];
  if (slot.lock()) throw std::runtime_error("address " + address + " is already in use");
  slot = hub_;
}

InprocListener::~InprocListener() {
  {
    std::lock_guard lock(g_registry_mu);
    registry().erase(address_);
  }
  std::lock_guard lock(hub_->mu);
  hub_->closed = true;
  for (auto& [id, weak] : hub_->conns)
    if (auto c = weak.lock()) {
      std::lock_guard cl(c->mu);
      c->closed = true;
      c->cv.notify_all();
    }
}

SendError InprocListener::send_frames(const std::string& peer, std::vector<std::string> frames) {
  std::shared_ptr<InprocConn> c;
  {
    std::lock_guard lock(hub_->mu);
    auto it = hub_->conns.find(peer);
    if (it != hub_->conns.end()) c = it->second.lock();
  }
  if (!c) return "peer " + peer + " is not connected";
  std::lock_guard cl(c->mu);
  c->inbox.push_back(std::move(frames));
  c->cv.notify_all();
  return {};
}

bool InprocListener::reachable(const std::string& peer) {
  std::lock_guard lock(hub_->mu);
  auto it = hub_->conns.find(peer);
  return it != hub_->conns.end() && it->second.lock() != nullptr;
}

Received InprocListener::recv(int timeout_ms) {
  std::unique_lock lock(hub_->mu);
  hub_->cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return !hub_->inbox.empty(); });
  if (hub_->inbox.empty()) return {};
  auto [peer, frames] = std::move(hub_->inbox.front());
  hub_->inbox.pop_front();
  lock.unlock();
  return decode_received(std::move(frames), std::move(peer));
}

InprocLink::InprocLink(const std::string& address) : address_(address), conn_(std::make_shared<InprocConn>()) {
  std::shared_ptr<InprocHub> hub;
  {
    std::lock_guard lock(g_registry_mu);
    auto it = registry().find(address);
    if (it != registry().end()) hub = it->second.lock();
  }
  if (!hub) throw std::runtime_error("nobody listens on " + address);
  std::lock_guard lock(hub->mu);
  conn_->peer_id = "inproc-peer-" + std::to_string(hub->next_id++);
  conn_->hub = hub;
  hub->conns[conn_->peer_id] = conn_;
}

InprocLink::~InprocLink() {
  if (auto hub = conn_->hub.lock()) {
    std::lock_guard lock(hub->mu);
    hub->conns.erase(conn_->peer_id);
  }
}

SendError InprocLink::send_frames(std::vector<std::string> frames) {
  auto hub = conn_->hub.lock();
  if (!hub) return "connection to " + address_ + " lost";
  std::lock_guard lock(hub->mu);
  if (hub->closed) return "connection to " + address_ + " lost";
  hub->inbox.emplace_back(conn_->peer_id, std::move(frames));
  hub->cv.notify_all();
  return {};
}

Received InprocLink::recv(int timeout_ms) {
  std::unique_lock lock(conn_->mu);
  conn_->cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                     [&] { return !conn_->inbox.empty() || conn_->closed; });
  if (!conn_->inbox.empty()) {
    Frames f = std::move(conn_->inbox.front());
    conn_->inbox.pop_front();
    lock.unlock();
    return decode_received(std::move(f), {});
  }
  Received r;
  if (conn_->closed || conn_->hub.expired()) {
    r.status = RecvStatus::closed;
    r.error = "connection to " + address_ + " lost";
  }
  return r;
}

bool InprocLink::alive() const {
  std::lock_guard lock(conn_->mu);
  return !conn_->closed && !conn_->hub.expired();
}

}  // namespace herd::transport
