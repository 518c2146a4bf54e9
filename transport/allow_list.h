// Per-host keys with an allow-list (issue [trust] item 1, the alternative to one shared cluster key).
//
// Each host holds its own CURVE keypair (`herd keygen --host`, ~/.config/herd/host.key, the same
// file format as the cluster key) and an allow-list: the public keys of the hosts it talks to.
// A listening process admits (ZAP) only a client whose proven public key is listed (or its own);
// a connecting process takes the server key of the address it dials from the list, so CURVE proves
// the listener holds that key's secret before anything is sent.
//
// File format (text, one key a line):
//   # comment
//   <40 z85 characters>  [NAME]  [# comment]
// ('#' is also a z85 character: a word starting with it begins a comment unless it is the key.)
// NAME (one word) is how a connecting process finds a listener's key: HOST:PORT, or HOST for
// every port of that host (e.g. `rCx...  10.0.0.2:7000`, `Qq3...  gpu-box`). Without a name a key
// is only admitted, never dialled. Anything after NAME is a comment.
#pragma once

#include <string>
#include <vector>

namespace herd::transport {

struct AllowedKey {
  std::string public_z85;  // 40 characters
  std::string name;        // "" when the line has none
  int line = 0;
};

// Reads and checks an allow-list file. Throws std::runtime_error naming the file, the line and what is
// wrong (not a regular file, too large, a token that is not a z85 public key, no key at all).
std::vector<AllowedKey> read_allow_list(const std::string& path);

// The key to dial `endpoint` (tcp://HOST:PORT or HOST:PORT) with: the first entry named HOST:PORT,
// else the first named HOST; nullptr when none.
const AllowedKey* find_server_key(const std::vector<AllowedKey>& list, const std::string& endpoint);

// $HOME/.config/herd/host.key (a host's own keypair in allow-list mode).
std::string default_host_key_path();

}  // namespace herd::transport
