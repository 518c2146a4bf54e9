// Who may talk to a herd process, and how its links are protected (issue [trust] items 1-2).
//
// Secure (the default): every ZeroMQ socket uses CURVE (encryption + integrity, per-connection keys
// with forward secrecy) keyed with the cluster key (transport/cluster_key.h): a listening socket is
// a CURVE server with the cluster's secret key, a connecting one a CURVE client with the cluster's
// keypair. CURVE alone would admit any client that knows the server's public key, so this process
// runs a ZAP handler (ZeroMQ's authentication protocol, inproc://zeromq.zap.01) that answers 200
// only when the client's proven public key is the cluster's, and 400 otherwise: a peer without the cluster's secret never gets a message through.
// Data lanes (transport/tcp_lane.h) are offered only over that channel, and sealed with per-session
// keys it carries.
//
// Insecure (--insecure, for benchmarks and trusted single-user machines): plain ZeroMQ (NULL
// mechanism) and clear lanes, as before protocol 7. Both ends must agree: a secure peer and an
// insecure one fail the ZeroMQ handshake ("security mismatch") instead of talking.
#pragma once

#include <zmq.hpp>

#include <string>
#include <utility>

#include "transport/cluster_key.h"

namespace herd::transport {

struct SecurityConfig {
  SecurityConfig() = default;
  SecurityConfig(bool insecure_, std::string key_path_, std::string allow_keys_path_ = {})
      : insecure(insecure_), key_path(std::move(key_path_)), allow_keys_path(std::move(allow_keys_path_)) {}
  bool insecure = false;
  std::string key_path;  // "" = default_key_path() (default_host_key_path() with an allow-list); created on first use
  // Per-host keys (transport/allow_list.h): "" = the shared cluster key. Otherwise key_path is this
  // host's own keypair, the ZAP handler admits only the listed public keys (and this host's), and a
  // connection takes its server key from the list's entry for the address it dials.
  std::string allow_keys_path;
};

// Sets this process's security for the sockets made after the call (commands call it once after
// parsing --insecure/--key/--allow-keys; tests may switch). With insecure set, prints a loud warning
// on stderr. Reads the allow-list at once: throws std::runtime_error naming its file and line.
void configure_security(const SecurityConfig& config);
SecurityConfig security_config();
bool security_enabled();
// The cluster key of the current configuration, loaded (or created, when its file does not exist)
// on first use. Throws std::runtime_error naming the file.
ClusterKey cluster_key();
// Where the key of the current configuration lives (for messages).
std::string cluster_key_path();
// This side's security in words, for error messages: "key FILE" or "host key FILE, allow-list FILE".
std::string security_description();

// Applies the current configuration to a socket before it binds / connects: CURVE server (and
// starts the ZAP handler) or CURVE client with the cluster key; nothing when insecure. With an
// allow-list the client's server key is the entry for `endpoint`; none is a std::runtime_error
// naming the address and the file.
void secure_server_socket(zmq::socket_t& s);
void secure_client_socket(zmq::socket_t& s, const std::string& endpoint = "");

// ZAP decisions so far (tests): connections admitted and refused by this process's handler.
struct ZapCounts {
  uint64_t admitted = 0, refused = 0;
};
ZapCounts zap_counts();

}  // namespace herd::transport
