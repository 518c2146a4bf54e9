// Measuring a link through the real transport (any transport::Link: ZmqLink, InprocLink): a few
// small Ping/Pong round trips (one-way latency = median round trip / 2) and one echo of ~1 MiB each way (bandwidth =
// 2 x bytes / (its round trip - 2 x latency)). The peer must answer Ping with Pong (a worker does,
// to any peer past its Hello). About 1-3 ms on loopback.
#pragma once

#include <cstdint>

#include "transport/link.h"
#include "cluster/protocol.h"

namespace herd::cluster {

struct LinkMeasureOptions {
  int pings = 5;                       // small round trips after one untimed warm-up
  uint64_t echo_bytes = uint64_t{1} << 20;  // 0: no bandwidth measurement (bandwidth_Bps = 0)
  int timeout_ms = 5000;               // per answer
};

// Throws std::runtime_error (naming what went wrong) when the link is lost, times out, or the peer
// answers anything but the matching Pong (an Error message's text is included). The result is
// always finite; latency > 0 and, with echo_bytes > 0, bandwidth > 0.
LinkStats measure_link(transport::Link& link, const LinkMeasureOptions& o = {});

}  // namespace herd::cluster
