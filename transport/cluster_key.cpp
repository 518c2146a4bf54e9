#include "transport/cluster_key.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include <zmq.h>

#include "common/log.h"

namespace herd::transport {

namespace {

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return {};
  const size_t b = s.find_last_not_of(" \t\r");
  return s.substr(a, b - a + 1);
}

bool valid_z85_key(const std::string& z) {
  if (z.size() != 40) return false;
  uint8_t bin[32];
  return zmq_z85_decode(bin, z.c_str()) != nullptr;
}

void make_dirs(const std::string& dir) {
  if (dir.empty()) return;
  struct stat st{};
  if (::stat(dir.c_str(), &st) == 0) return;
  const size_t slash = dir.rfind('/');
  if (slash != std::string::npos && slash > 0) make_dirs(dir.substr(0, slash));
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    throw std::runtime_error("cannot create " + dir + ": " + std::strerror(errno));
}

std::string parent_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

}  // namespace

ClusterKey generate_cluster_key() {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0)
    throw std::runtime_error(std::string("cannot make a CURVE keypair: ") + zmq_strerror(zmq_errno()));
  return {pub, sec};
}

std::string default_key_path() {
  if (const char* k = std::getenv("HERD_KEY"); k && *k) return k;
  const char* home = std::getenv("HOME");
  if (!home || !*home) throw std::runtime_error("no cluster key: $HOME is not set (use --key FILE or $HERD_KEY)");
  return std::string(home) + "/.config/herd/cluster.key";
}

void write_cluster_key(const std::string& path, const ClusterKey& key, bool force) {
  if (!valid_z85_key(key.public_z85) || !valid_z85_key(key.secret_z85))
    throw std::runtime_error("refusing to write a malformed key to " + path);
  make_dirs(parent_of(path));
  const std::string text =
      "# herd cluster key (CURVE keypair, z85). Anyone holding this file can join the cluster and read its\n"
      "# traffic: keep it mode 0600, copy it only to the cluster's hosts (~/.config/herd/cluster.key there).\n"
      "public = " + key.public_z85 + "\nsecret = " + key.secret_z85 + "\n";
  // Written beside the target, then linked (no overwrite) or renamed (--force) into place.
  std::string tmp = path + ".tmp.XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
  ::fchmod(fd, 0600);
  const bool wrote = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!wrote) {
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
  }
  if (force) {
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
      const std::string e = std::strerror(errno);
      ::unlink(tmp.c_str());
      throw std::runtime_error("cannot write " + path + ": " + e);
    }
    return;
  }
  const int rc = ::link(tmp.c_str(), path.c_str());
  const int err = errno;
  ::unlink(tmp.c_str());
  if (rc != 0 && err == EEXIST)
    throw std::runtime_error(path + " exists; not overwriting a cluster key (--force replaces it, and every host then "
                                    "needs the new file)");
  if (rc != 0) throw std::runtime_error("cannot write " + path + ": " + std::strerror(err));
}

ClusterKey read_cluster_key(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("cannot read cluster key " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw std::runtime_error("cluster key " + path + " is not a regular file");
  if (st.st_size > 4096) throw std::runtime_error("cluster key " + path + " is " + std::to_string(st.st_size) + " bytes (not a key file)");
  if (st.st_mode & 077)
    HERD_LOG_WARN("cluster key ", path, " is readable by other users; chmod 600 it");
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read cluster key " + path);
  ClusterKey k;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    const size_t eq = line.find('=');
    if (eq == std::string::npos) throw std::runtime_error("cluster key " + path + ":" + std::to_string(n) + ": expected NAME = VALUE");
    const std::string name = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    if (name == "public") k.public_z85 = value;
    else if (name == "secret") k.secret_z85 = value;
    else throw std::runtime_error("cluster key " + path + ":" + std::to_string(n) + ": unknown field '" + name + "'");
  }
  if (!valid_z85_key(k.secret_z85)) throw std::runtime_error("cluster key " + path + ": no valid 'secret' (40 z85 characters)");
  if (!valid_z85_key(k.public_z85)) throw std::runtime_error("cluster key " + path + ": no valid 'public' (40 z85 characters)");
  char derived[41];
  if (zmq_curve_public(derived, k.secret_z85.c_str()) != 0 || k.public_z85 != derived)
    throw std::runtime_error("cluster key " + path + ": the public key is not the secret key's");
  return k;
}

ClusterKey load_or_create_cluster_key(const std::string& path, bool* created) {
  if (created) *created = false;
  if (::access(path.c_str(), F_OK) == 0) return read_cluster_key(path);
  try {
    write_cluster_key(path, generate_cluster_key(), false);
    if (created) *created = true;
    HERD_LOG_WARN("created the cluster key ", path, " (copy this file to every other host of the cluster)");
  } catch (const std::runtime_error&) {
    if (::access(path.c_str(), F_OK) != 0) throw;  // not a lost race: a real failure
  }
  return read_cluster_key(path);
}

}  // namespace herd::transport
