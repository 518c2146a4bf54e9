// Which host (kernel) this process runs on, as NCCL tells hosts apart: a hash of the host name
// and the kernel's boot id. Two processes with the same identity reach each other's GPUs through
// NCCL's intra-host transports (P2P, shared memory); different identities mean NCCL's network
// transport, which is neither authenticated nor encrypted, so herd uses it between hosts only
// when the user allows it (--nccl-across-hosts; docs/cuda.md).
#pragma once

#include <cstdint>

namespace herd {

// FNV-1a 64 of "HOSTNAME\nBOOT_ID" (boot id from /proc/sys/kernel/random/boot_id; empty where
// absent); never 0.
uint64_t host_identity();

}  // namespace herd
