// An emulation aid: a one-way latency added to every message this process receives over tcp:// and
// ipc:// links (`--link-delay DUR` on worker, run, chat, serve, logits and bench; `herd lab` sets
// it from a link profile's latency, since this kernel has no netem). Off (0) by default.
//
// How: connect() and listen() wrap the link in a DelayedLink / DelayedListener when a delay is set.
// A message is stamped when this process reads it from the link and handed to the caller DUR
// later, in order; a lost connection is reported DUR later too. The delay is applied where the
// message is received because the links are not thread-safe (a sender-side timer thread would
// share a ZeroMQ socket with the thread that reads it), and it costs no thread and no CPU.
//
// What it does not emulate: a message that arrives while its receiver is busy (not in recv) is
// stamped when the receiver next looks, so it is delayed by up to DUR more than a network would
// delay it (a network's latency overlaps the receiver's work). A stage waiting for its input, a
// coordinator waiting for a result and tensor-parallel ranks waiting for each other are in recv
// when the message comes, so single-sequence decode sees DUR per hop. Bandwidth is untouched (a
// burst of messages is delayed by DUR, not DUR each). Every link of the process gets the same
// delay, also one to a worker on the same host. At most kMaxHeldMessages are read ahead from a
// link; the rest wait in the link itself, whose bounds (transport/zmq_link.h) still hold.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <string>
#include <utility>

#include "transport/link.h"

namespace herd::transport {

using DelayClock = std::chrono::steady_clock;

// The delay links opened from now on get (0 = none). Throws std::invalid_argument outside 0..10 s.
void set_link_delay(std::chrono::microseconds d);
std::chrono::microseconds link_delay();

constexpr size_t kMaxHeldMessages = 256;

// The waiting shared by both wrappers: `poll(ms)` is the inner recv.
class DelayQueue {
 public:
  explicit DelayQueue(std::chrono::microseconds d) : delay_(d) {}
  template <class Poll>
  Received recv(int timeout_ms, Poll&& poll);

 private:
  std::chrono::microseconds delay_;
  std::deque<std::pair<DelayClock::time_point, Received>> held_;
  bool ended_ = false;  // the inner link returned closed or malformed: read nothing more from it
};

class DelayedLink : public Link {
 public:
  DelayedLink(std::unique_ptr<Link> inner, std::chrono::microseconds d) : inner_(std::move(inner)), q_(d) {}
  SendError send_frames(std::vector<std::string> frames) override { return inner_->send_frames(std::move(frames)); }
  Received recv(int timeout_ms) override;
  bool alive() const override { return inner_->alive(); }
  std::string address() const override { return inner_->address(); }

 private:
  std::unique_ptr<Link> inner_;
  DelayQueue q_;
};

class DelayedListener : public Listener {
 public:
  DelayedListener(std::unique_ptr<Listener> inner, std::chrono::microseconds d) : inner_(std::move(inner)), q_(d) {}
  SendError send_frames(const std::string& peer, std::vector<std::string> frames) override {
    return inner_->send_frames(peer, std::move(frames));
  }
  Received recv(int timeout_ms) override;
  std::string address() const override { return inner_->address(); }
  bool reachable(const std::string& peer) override { return inner_->reachable(peer); }

 private:
  std::unique_ptr<Listener> inner_;
  DelayQueue q_;
};

// The wrappers when a delay is set, else the links as they are (connect() and listen() call these
// for tcp:// and ipc:// links only).
std::unique_ptr<Link> with_link_delay(std::unique_ptr<Link> l);
std::unique_ptr<Listener> with_link_delay(std::unique_ptr<Listener> l);

}  // namespace herd::transport
