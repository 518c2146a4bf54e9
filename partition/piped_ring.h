// prima.cpp's piped ring ([offload] item 2), as the planner weighs it. With one sequence in flight
// a pipeline of streaming devices uses its disks in turn: each stage reads what it streams while
// it computes, and its disk sits idle while the others compute. A ring of k cycles gives every
// device k smaller ranges (a token goes round the devices k times) and keeps the next range's
// weights loading while the other devices compute, so the disks read side by side — when a
// device's memory holds one range's streamed weights as its window.
//
// Model (per token, one sequence), over the plan's devices in its order: each device takes a
// contiguous share of the layers (cut into k ranges of whole layers, or none), keeps its leading
// r layers resident, r the largest for which the memory left for the window (stream_window_room)
// holds 1/k of what it streams plus its widest streamed layer (the range still arriving while the
// last one's layers are released), and
//   token = max( every share's compute + k x the forward hops + (k - 1) x the hop from the last
//                device back to the first + the coordinator's,
//                max over devices of (bytes it streams per token / its disk speed) ),
// the first term the path of one token through all the ranges, the second a disk that never
// stops. The shares are the ones that minimise the second term (a bisection on it, each device in
// turn taking the most layers its disk reads in that time), over two devices at least. This assumes each range's load
// completes while the others compute; it is optimistic where one device's reads dwarf the
// others' compute, and it does not model the page cache prima.cpp relies on. herd's workers do
// not run rings (a worker holds one contiguous range): `herd plan` reports the ring beside the
// plan it runs where the ring would be faster.
#pragma once

#include <cstdint>
#include <vector>

#include "partition/plan.h"

namespace herd::partition {

inline constexpr int kMaxRingCycles = 8;

struct RingShare {
  int device = 0;
  int64_t first = 0, end = 0, resident = 0;  // layers [first, end), the first `resident` kept in memory
  double disk_s = 0;                          // its reads per token
};

struct PipedRing {
  int cycles = 0;  // k; 0: none (the plan streams nothing, has one stage or a TP stage, k > 1 sequences, or no ring fits)
  double token_s = 0;             // predicted per token
  double path_s = 0, disk_s = 0;  // the two terms above
  std::vector<RingShare> shares;  // in ring order
};

// The fastest ring of 2..kMaxRingCycles cycles over the devices of p's stages, in p's order.
PipedRing piped_ring(const Plan& p, const ModelShape& m, const Cluster& c, const PlanOptions& o);

}  // namespace herd::partition
