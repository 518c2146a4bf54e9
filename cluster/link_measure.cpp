#include "cluster/link_measure.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <vector>

namespace herd::cluster {

using namespace transport;
namespace {

using Clock = std::chrono::steady_clock;

// One round trip of `bytes`; seconds.
double round_trip(Link& link, uint64_t seq, uint64_t bytes, int timeout_ms) {
  std::vector<Tensor> tensors;
  if (bytes > 0) {
    Tensor t;
    t.dtype = WireDType::U8;
    t.shape = {static_cast<int64_t>(bytes)};
    t.data.assign(bytes, '\x5a');
    tensors.push_back(std::move(t));
  }
  Message m = pack(Ping{seq, bytes}, std::move(tensors));
  const auto start = Clock::now();
  if (auto err = link.send(m); !err.empty()) throw std::runtime_error("ping: " + err);
  const auto deadline = start + std::chrono::milliseconds(timeout_ms);
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    Received r = link.recv(static_cast<int>(std::max<int64_t>(left, 0)));
    if (r.status == RecvStatus::timeout) throw std::runtime_error("no answer to a ping within " + std::to_string(timeout_ms) + " ms");
    if (r.status != RecvStatus::ok) throw std::runtime_error("ping: " + r.error);
    if (r.msg.type == static_cast<uint16_t>(MsgType::Error))
      throw std::runtime_error("answered a ping with an error: " + unpack<ErrorMsg>(r.msg).message);
    const Pong p = unpack<Pong>(r.msg);
    if (p.seq != seq) continue;  // a late answer to an earlier ping
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    if (p.bytes != bytes) throw ProtocolError("Pong of " + std::to_string(p.bytes) + " bytes for a ping of " + std::to_string(bytes));
    check_echo_payload(r.msg, bytes);
    return s;
  }
}

}  // namespace

LinkStats measure_link(Link& link, const LinkMeasureOptions& o) {
  uint64_t seq = 1;
  round_trip(link, seq++, 0, o.timeout_ms);  // warm-up (connection, first allocations)
  std::vector<double> rtt;
  for (int i = 0; i < std::max(1, o.pings); ++i) rtt.push_back(round_trip(link, seq++, 0, o.timeout_ms));
  std::sort(rtt.begin(), rtt.end());
  const double small = rtt[rtt.size() / 2];
  LinkStats s;
  s.latency_s = std::clamp(small / 2, 1e-9, kMaxSeconds);
  if (o.echo_bytes > 0) {
    const uint64_t bytes = std::min(o.echo_bytes, kMaxPingBytes);
    const double big = round_trip(link, seq++, bytes, o.timeout_ms);
    // The echo moves `bytes` each way; what exceeds a small round trip is transfer time (at least a
    // tenth of the echo's own time, so a noisy small round trip cannot make it 0 or negative).
    const double transfer = std::max(big - small, 0.1 * big);
    s.bandwidth_Bps = std::clamp(2.0 * static_cast<double>(bytes) / transfer, 1.0, kMaxRateBps);
  }
  return s;
}

}  // namespace herd::cluster
