// herd keygen: writes a fresh cluster key (transport/cluster_key.h).
#include <cstdio>
#include <stdexcept>

#include "launch/args.h"
#include "launch/commands.h"
#include "transport/cluster_key.h"

namespace herd::cli {

int cmd_keygen(const Args& args) {
  std::string out;
  bool force = false;
  ArgParser p("herd keygen [--out FILE] [--force]",
              "Writes a new cluster key: one CURVE keypair every member of a cluster holds (mode 0600). Workers and "
              "coordinators use it by default, so a local cluster needs no step: the key is created on first use. "
              "For several hosts, copy this one file to the same place on each (or pass --key FILE / $HERD_KEY).");
  p.add("-o,--out", "FILE", "where to write it (default: $HERD_KEY, else ~/.config/herd/cluster.key)", &out);
  p.add("-f,--force", "", "replace an existing key (every host then needs the new file)", &force);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  const std::string path = out.empty() ? transport::default_key_path() : out;
  const transport::ClusterKey k = transport::generate_cluster_key();
  transport::write_cluster_key(path, k, force);
  std::printf("wrote %s (public key %s)\ncopy this file to every host of the cluster; keep it private\n", path.c_str(),
              k.public_z85.c_str());
  return 0;
}

}  // namespace herd::cli
