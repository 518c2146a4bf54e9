#include "transport/allow_list.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <zmq.h>

namespace herd::transport {

namespace {

constexpr off_t kMaxAllowListBytes = 1 << 20;  // 1 MiB: ~15000 keys; anything larger is not an allow-list

bool valid_z85_key(const std::string& z) {
  if (z.size() != 40) return false;
  uint8_t bin[32];
  return zmq_z85_decode(bin, z.c_str()) != nullptr;
}

// tcp://HOST:PORT or HOST:PORT -> {HOST, PORT}; an IPv6 HOST keeps no brackets.
void split_endpoint(std::string e, std::string& host, std::string& port) {
  if (e.rfind("tcp://", 0) == 0) e = e.substr(6);
  const size_t colon = e.rfind(':');
  host = colon == std::string::npos ? e : e.substr(0, colon);
  port = colon == std::string::npos ? "" : e.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
}

}  // namespace

std::vector<AllowedKey> read_allow_list(const std::string& path) {
  const std::string what = "allow-list " + path;
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("cannot read " + what + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw std::runtime_error(what + " is not a regular file");
  if (st.st_size > kMaxAllowListBytes)
    throw std::runtime_error(what + " is " + std::to_string(st.st_size) + " bytes (more than 1 MiB: not an allow-list)");
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + what);
  std::vector<AllowedKey> keys;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    // '#' is a z85 character: it starts a comment only as the first character of a word that is
    // not a key (a whole-line comment, or what follows the key and NAME).
    std::istringstream words(line);
    std::string key, name;
    if (!(words >> key)) continue;  // blank
    if (key[0] == '#' && !valid_z85_key(key)) continue;  // a comment line
    if (words >> name && name[0] == '#') name.clear();
    const std::string where = what + ":" + std::to_string(n) + ": ";
    if (!valid_z85_key(key) && (key == "public" || key == "secret" || key.find('=') != std::string::npos))
      throw std::runtime_error(where + "this looks like a key file (NAME = VALUE); an allow-list holds one public key "
                                       "a line (`herd keygen --host` prints the line to add)");
    if (!valid_z85_key(key))
      throw std::runtime_error(where + "'" + key.substr(0, 60) + "' is not a public key (40 z85 characters)");
    keys.push_back({key, name, n});
  }
  if (keys.empty()) throw std::runtime_error(what + " lists no public key");
  return keys;
}

const AllowedKey* find_server_key(const std::vector<AllowedKey>& list, const std::string& endpoint) {
  std::string host, port;
  split_endpoint(endpoint, host, port);
  const std::string host_port = host.find(':') != std::string::npos ? "[" + host + "]:" + port : host + ":" + port;
  for (const auto& k : list)
    if (!k.name.empty() && (k.name == host_port || k.name == host + ":" + port)) return &k;
  for (const auto& k : list)
    if (!k.name.empty() && (k.name == host || k.name == "[" + host + "]")) return &k;
  return nullptr;
}

std::string default_host_key_path() {
  const char* home = std::getenv("HOME");
  if (!home || !*home) throw std::runtime_error("no host key: $HOME is not set (use --key FILE)");
  return std::string(home) + "/.config/herd/host.key";
}

}  // namespace herd::transport
