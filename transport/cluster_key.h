// The cluster key: one CURVE keypair (ZeroMQ's z85 text form, 40 characters each half) that every
// member of a cluster holds. A worker's ZeroMQ socket is a CURVE server with that secret key; every
// peer connects as a CURVE client with that same keypair, and the worker's ZAP handler
// (transport/security.h) admits only a client whose public key is the cluster's, which CURVE
// proves the client holds the secret for. So holding this one file is membership: copy it (and only
// it) to every host, with mode 0600.
//
// File format (text; '#' comments, any order):
//   public = <40 z85 characters>
//   secret = <40 z85 characters>
// The public half must be the one the secret half derives (checked on load).
#pragma once

#include <string>

namespace herd::transport {

struct ClusterKey {
  std::string public_z85;  // 40 characters
  std::string secret_z85;  // 40 characters
};

// A fresh keypair from the system's CSPRNG (zmq_curve_keypair). Throws std::runtime_error.
ClusterKey generate_cluster_key();
// $HERD_KEY when set and non-empty, else $HOME/.config/herd/cluster.key.
std::string default_key_path();
// Writes `key` to `path` with mode 0600 (creating the parent directory, 0700). Atomic: the file
// appears complete or not at all. Refuses an existing file unless `force`. Throws naming the path.
void write_cluster_key(const std::string& path, const ClusterKey& key, bool force);
// Reads and checks a key file. Throws std::runtime_error naming the path and what is wrong.
ClusterKey read_cluster_key(const std::string& path);
// Reads `path`, or, when it does not exist, creates it with a fresh key (*created = true). Two
// processes racing to create it end with the same key (the loser reads the winner's file).
ClusterKey load_or_create_cluster_key(const std::string& path, bool* created = nullptr);

}  // namespace herd::transport
