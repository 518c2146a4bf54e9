// The options of the cluster's links, shared by the commands that open them (worker, run, chat, serve, logits,
// bench, mpi): --insecure, --key FILE and --allow-keys FILE (transport/security.h does the work), and the
// emulation aid --link-delay DUR (transport/link_delay.h). This only parses and applies.
#pragma once

#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>

#include "launch/args.h"
#include "partition/profile.h"
#include "transport/link_delay.h"
#include "transport/security.h"

namespace herd::cli {

struct SecurityOptions {
  bool insecure = false;
  std::string key;  // "" = $HERD_KEY, else ~/.config/herd/cluster.key (host.key with --allow-keys)
  std::string allow_keys;  // per-host keys: the public keys this host admits and dials (transport/allow_list.h)
  std::string link_delay;  // "" = none; e.g. "3ms"
};

inline void add_security_options(ArgParser& p, SecurityOptions& s) {
  p.add("--key", "FILE", "the cluster key (default: $HERD_KEY, else ~/.config/herd/cluster.key, created on first "
        "use; `herd keygen` makes one; copy the same file to every host). With --allow-keys: this host's own keypair "
        "(default ~/.config/herd/host.key, `herd keygen --host`)", &s.key);
  p.add("--allow-keys", "FILE", "per-host keys instead of one shared key: admit only peers whose public key is in "
        "FILE (one z85 key a line, then optionally the HOST:PORT or HOST it listens on, which is how this side "
        "checks the key of a worker it dials)", &s.allow_keys);
  p.add("--insecure", "", "no authentication or encryption on the cluster's links (every peer must agree; anyone "
        "who reaches the ports can then control the worker and read or change the text)", &s.insecure);
  p.add("--link-delay", "DUR", "emulation aid: hand every message this process receives over its tcp/ipc links to "
        "it DUR later (e.g. 3ms, 300us; at most 10s), as a network's one-way latency would; give every process of "
        "the cluster the same DUR (`herd lab` does, from a link profile's latency; docs/lab.md)", &s.link_delay);
}

// Configures this process's links. `load_now`: read (or create) the key at once, so a worker with
// an unreadable key says so at startup instead of at its first connection.
inline void apply_security_options(const SecurityOptions& s, bool load_now = false) {
  if (s.insecure && !s.key.empty()) throw UsageError("--key and --insecure contradict each other");
  if (s.insecure && !s.allow_keys.empty()) throw UsageError("--allow-keys and --insecure contradict each other");
  transport::configure_security({s.insecure, s.key, s.allow_keys});
  if (!s.link_delay.empty()) {
    double sec = 0;
    try {
      sec = partition::parse_seconds(s.link_delay);
    } catch (const std::invalid_argument& e) {
      throw UsageError(std::string("--link-delay: ") + e.what());
    }
    if (!(sec >= 0 && sec <= 10)) throw UsageError("--link-delay must be between 0 and 10 s, got '" + s.link_delay + "'");
    transport::set_link_delay(std::chrono::microseconds(std::llround(sec * 1e6)));
  }
  if (load_now && !s.insecure) (void)transport::cluster_key();
}

}  // namespace herd::cli
