#include "transport/security.h"

#include <zmq_addon.hpp>

#include <sodium.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>

#include "common/log.h"
#include "transport/allow_list.h"
#include "transport/zmq_link.h"

namespace herd::transport {

namespace {

struct State {
  std::mutex mu;
  SecurityConfig config;
  std::optional<ClusterKey> key;  // of config.key_path, once loaded
  std::string key_path;           // resolved
  std::vector<AllowedKey> allow_list;  // config.allow_keys_path's entries (empty: the shared cluster key)
  std::set<std::string> allowed;  // 32-byte binary public keys the ZAP handler admits
  bool zap_started = false;
  std::atomic<uint64_t> admitted{0}, refused{0};
};

State& state() {
  static auto* s = new State;  // never destroyed: the ZAP thread may outlive main's statics
  return *s;
}

std::string binary_key(const std::string& z85) {
  std::string bin(32, '\0');
  if (!zmq_z85_decode(reinterpret_cast<uint8_t*>(bin.data()), z85.c_str())) throw std::runtime_error("bad z85 key");
  return bin;
}

// Loads the key of the current configuration (state().mu held).
const ClusterKey& key_locked(State& s) {
  if (!s.key) {
    const bool per_host = !s.config.allow_keys_path.empty();
    s.key_path = !s.config.key_path.empty() ? s.config.key_path : per_host ? default_host_key_path() : default_key_path();
    s.key = load_or_create_cluster_key(s.key_path);
    s.allowed.insert(binary_key(s.key->public_z85));
    for (const auto& k : s.allow_list) s.allowed.insert(binary_key(k.public_z85));
  }
  return *s.key;
}

std::string frame_str(const zmq::message_t& m) { return std::string(static_cast<const char*>(m.data()), m.size()); }

// ZAP (RFC 27): request = version, request id, domain, address, identity, mechanism, credentials...;
// reply = version, request id, status code, status text, user id, metadata.
void zap_loop(zmq::socket_t* sock) {
  State& s = state();
  while (true) {
    std::vector<zmq::message_t> req;
    try {
      if (!zmq::recv_multipart(*sock, std::back_inserter(req))) continue;
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      return;  // context terminated
    }
    if (req.size() < 6) continue;  // not a ZAP request: no answer possible
    const std::string mechanism = frame_str(req[5]);
    const std::string address = frame_str(req[3]);
    bool ok = false;
    std::string why = "not authenticated (" + mechanism + ")";
    if (mechanism == "CURVE" && req.size() >= 7 && req[6].size() == 32) {
      std::lock_guard<std::mutex> lock(s.mu);
      ok = s.allowed.count(frame_str(req[6])) > 0;
      if (s.config.allow_keys_path.empty()) {
        why = "its key is not this cluster's";
      } else {
        char z85[41] = {};
        zmq_z85_encode(z85, static_cast<const uint8_t*>(req[6].data()), 32);
        why = std::string("its public key ") + z85 + " is not in the allow-list " + s.config.allow_keys_path;
      }
    }
    (ok ? s.admitted : s.refused)++;
    if (!ok) HERD_LOG_WARN("refused a connection from ", address.empty() ? "?" : address, ": ", why);
    std::vector<std::string> reply = {"1.0", frame_str(req[1]), ok ? "200" : "400", ok ? "OK" : "not a cluster key",
                                      ok ? "herd" : "", ""};
    try {
      for (size_t i = 0; i < reply.size(); ++i)
        sock->send(zmq::buffer(reply[i]), i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    } catch (const zmq::error_t&) {
      return;
    }
  }
}

void start_zap_locked(State& s) {
  if (s.zap_started) return;
  auto* sock = new zmq::socket_t(zmq_context(), zmq::socket_type::rep);  // lives as long as the process
  sock->set(zmq::sockopt::linger, 0);
  sock->bind("inproc://zeromq.zap.01");  // bound before any CURVE server socket accepts a peer
  std::thread(zap_loop, sock).detach();
  s.zap_started = true;
}

}  // namespace

void configure_security(const SecurityConfig& config) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  std::vector<AllowedKey> list;
  if (!config.insecure && !config.allow_keys_path.empty()) list = read_allow_list(config.allow_keys_path);
  if (config.key_path != s.config.key_path || config.allow_keys_path != s.config.allow_keys_path ||
      !config.allow_keys_path.empty())
    s.key.reset();  // reloaded (with the admitted set) at the next socket
  s.config = config;
  s.allow_list = std::move(list);
  if (config.insecure) {
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true))
      std::fputs(
          "herd: WARNING: --insecure: links are NOT authenticated or encrypted. Anyone who can reach this "
          "process's ports can stop it, feed it work, read and rewrite the prompt and the generated text. Use only "
          "on a machine and network you fully trust; every peer must also run --insecure.\n",
          stderr);
  }
}

SecurityConfig security_config() {
  std::lock_guard<std::mutex> lock(state().mu);
  return state().config;
}

bool security_enabled() { return !security_config().insecure; }

ClusterKey cluster_key() {
  std::lock_guard<std::mutex> lock(state().mu);
  return key_locked(state());
}

std::string cluster_key_path() {
  std::lock_guard<std::mutex> lock(state().mu);
  State& s = state();
  if (s.key) return s.key_path;
  try {
    if (!s.config.key_path.empty()) return s.config.key_path;
    return s.config.allow_keys_path.empty() ? default_key_path() : default_host_key_path();
  } catch (const std::exception&) {
    return "(no key path)";
  }
}

void secure_server_socket(zmq::socket_t& sock) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.config.insecure) return;
  const ClusterKey& k = key_locked(s);
  start_zap_locked(s);
  sock.set(zmq::sockopt::zap_domain, "herd");
  sock.set(zmq::sockopt::curve_server, 1);
  sock.set(zmq::sockopt::curve_secretkey, k.secret_z85);
}

std::string security_description() {
  const SecurityConfig c = security_config();
  if (c.insecure) return "--insecure";
  if (c.allow_keys_path.empty()) return "key " + cluster_key_path();
  return "host key " + cluster_key_path() + ", allow-list " + c.allow_keys_path;
}

void secure_client_socket(zmq::socket_t& sock, const std::string& endpoint) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.config.insecure) return;
  const ClusterKey& k = key_locked(s);
  std::string server_key = k.public_z85;
  if (!s.config.allow_keys_path.empty()) {
    const AllowedKey* e = find_server_key(s.allow_list, endpoint);
    if (!e)
      throw std::runtime_error("no public key for " + endpoint + " in the allow-list " + s.config.allow_keys_path +
                               " (a line '<its public key> HOST:PORT' or '<key> HOST' names the key to dial it with)");
    server_key = e->public_z85;
  }
  sock.set(zmq::sockopt::curve_serverkey, server_key);
  sock.set(zmq::sockopt::curve_publickey, k.public_z85);
  sock.set(zmq::sockopt::curve_secretkey, k.secret_z85);
}

ZapCounts zap_counts() { return {state().admitted.load(), state().refused.load()}; }

}  // namespace herd::transport
