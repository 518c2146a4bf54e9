// Figures for the worker lines of a cluster file that state none: those on this host are probed
// here (launch/cmd_cluster.cpp), so `herd plan` can plan a local cluster file as written.
#pragma once

#include <cstdint>
#include <vector>

#include "partition/profile.h"

namespace herd::cli {

// Probes this host (quick, with each worker's threads, the matvec `types`) for every loopback
// worker line without figures; each gets the available memory divided among the loopback workers.
// Says what it measured on stderr, prefixed by `who`. Others stay without figures.
void fill_local_figures(partition::Cluster& c, const std::vector<uint32_t>& types, const char* who);

}  // namespace herd::cli
