// herd keygen: writes a fresh cluster key, or with --host this host's own keypair for per-host keys
// with an allow-list (transport/cluster_key.h, transport/allow_list.h).
#include <unistd.h>

#include <cstdio>
#include <stdexcept>

#include "launch/args.h"
#include "launch/commands.h"
#include "transport/allow_list.h"
#include "transport/cluster_key.h"

namespace herd::cli {

int cmd_keygen(const Args& args) {
  std::string out;
  bool force = false, host = false;
  ArgParser p("herd keygen [--host] [--out FILE] [--force]",
              "Writes a new cluster key: one CURVE keypair every member of a cluster holds (mode 0600). Workers and "
              "coordinators use it by default, so a local cluster needs no step: the key is created on first use. "
              "For several hosts, copy this one file to the same place on each (or pass --key FILE / $HERD_KEY). "
              "With --host: this host's own keypair instead (~/.config/herd/host.key), for per-host keys: it prints the "
              "line to add to the --allow-keys file of every host this one talks to.");
  p.add("--host", "", "a per-host keypair (used with --allow-keys), not the shared cluster key", &host);
  p.add("-o,--out", "FILE", "where to write it (default: $HERD_KEY, else ~/.config/herd/cluster.key; with --host "
        "~/.config/herd/host.key)", &out);
  p.add("-f,--force", "", "replace an existing key (every host then needs the new file)", &force);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  const std::string path = !out.empty() ? out : host ? transport::default_host_key_path() : transport::default_key_path();
  const transport::ClusterKey k = transport::generate_cluster_key();
  transport::write_cluster_key(path, k, force);
  if (!host) {
    std::printf("wrote %s (public key %s)\ncopy this file to every host of the cluster; keep it private\n", path.c_str(),
                k.public_z85.c_str());
    return 0;
  }
  char name[256] = "HOST";
  if (::gethostname(name, sizeof name - 1) != 0) std::snprintf(name, sizeof name, "HOST");
  std::printf("wrote %s (this host's keypair; keep it private, it stays on this host)\n"
              "add this line to the --allow-keys file of every host that talks to this one (HOST or HOST:PORT is the "
              "address they dial it at):\n%s %s\n",
              path.c_str(), k.public_z85.c_str(), name);
  return 0;
}

}  // namespace herd::cli
