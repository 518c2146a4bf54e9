#pragma once
// How long a wait on a hot path (a worker between Forwards, the coordinator for a Result, a
// tensor-parallel rank in a collective) busy-polls before it blocks: a blocked thread pays a
// wake-up, and waking a halted virtual CPU costs ~100 us on a VM. $HERD_BUSY_POLL_US (0 = never
// poll), default 20 ms; read once.
#include <chrono>

namespace herd {

std::chrono::microseconds busy_poll_window();

}  // namespace herd
