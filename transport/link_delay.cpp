#include "transport/link_delay.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <thread>

namespace herd::transport {

namespace {
std::atomic<int64_t> g_delay_us{0};
}  // namespace

void set_link_delay(std::chrono::microseconds d) {
  if (d.count() < 0 || d > std::chrono::seconds(10))
    throw std::invalid_argument("a link delay must be between 0 and 10 s");
  g_delay_us.store(d.count());
}

std::chrono::microseconds link_delay() { return std::chrono::microseconds(g_delay_us.load()); }

template <class Poll>
Received DelayQueue::recv(int timeout_ms, Poll&& poll) {
  using namespace std::chrono;
  const auto deadline = DelayClock::now() + milliseconds(std::max(0, timeout_ms));
  auto take = [&](Received r) {
    ended_ = r.status != RecvStatus::ok;
    held_.emplace_back(DelayClock::now() + delay_, std::move(r));
  };
  while (true) {
    // Stamp whatever has come in since the last look.
    while (!ended_ && held_.size() < kMaxHeldMessages) {
      Received r = poll(0);
      if (r.status == RecvStatus::timeout) break;
      take(std::move(r));
    }
    const auto now = DelayClock::now();
    if (!held_.empty() && held_.front().first <= now) {
      Received r = std::move(held_.front().second);
      held_.pop_front();
      if (r.status != RecvStatus::ok) ended_ = false;  // the next recv asks the link again (closed stays closed)
      return r;
    }
    if (now >= deadline) return Received{};  // timeout
    const auto wake = held_.empty() ? deadline : std::min(deadline, held_.front().first);
    const auto left = duration_cast<microseconds>(wake - now);
    if (ended_ || held_.size() >= kMaxHeldMessages || left < milliseconds(1)) {
      // Nothing more to read (or no room), or less than the links' millisecond timeout to wait:
      // sleep in short steps so a message due in 0.3 ms is not handed over 1 ms late.
      std::this_thread::sleep_for(std::min<microseconds>(left, microseconds(100)));
    } else {
      Received r = poll(static_cast<int>(duration_cast<milliseconds>(left).count()));
      if (r.status != RecvStatus::timeout) take(std::move(r));
    }
  }
}

Received DelayedLink::recv(int timeout_ms) {
  return q_.recv(timeout_ms, [this](int ms) { return inner_->recv(ms); });
}

Received DelayedListener::recv(int timeout_ms) {
  return q_.recv(timeout_ms, [this](int ms) { return inner_->recv(ms); });
}

std::unique_ptr<Link> with_link_delay(std::unique_ptr<Link> l) {
  const auto d = link_delay();
  if (d.count() == 0) return l;
  return std::make_unique<DelayedLink>(std::move(l), d);
}

std::unique_ptr<Listener> with_link_delay(std::unique_ptr<Listener> l) {
  const auto d = link_delay();
  if (d.count() == 0) return l;
  return std::make_unique<DelayedListener>(std::move(l), d);
}

}  // namespace herd::transport
