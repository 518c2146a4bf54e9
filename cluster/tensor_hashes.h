// Per-tensor content hashes of a GGUF file (issue [trust] item 5): the BLAKE2b-256 (libsodium's
// crypto_generichash) of each tensor's data bytes, so that a worker whose copy of the weights
// differs from the coordinator's — one flipped byte in one tensor — is refused with the tensor
// named. The model hash (cluster/model_fingerprint.h) covers only the header; these cover the rest.
//
// Hashing is a full read of the tensors asked for (a worker asks only for its stage's), so the
// digests are cached on disk and computed once:
//
//   FILE.herd-hashes   beside the file when its directory is writable (a directory without any
//                      write permission bit counts as not writable, also for root); else
//   CACHE/tensor-hashes/<file name>-<16 hex of the canonical path>.herd-hashes, CACHE being
//                      cache_root() (the weight cache's root: $HERD_CACHE_DIR, $XDG_CACHE_HOME/herd,
//                      ~/.cache/herd). A cache that cannot be written is a warning, never a failure.
//
// The cache file is text: a version line, "file SIZE MTIME_NS CTIME_NS INODE", "header SHA256"
// (the model fingerprint), one "t HEX NAME" line per tensor hashed so far (it may hold only some
// tensors: a worker's stage), and "end HEX", the BLAKE2b-256 of everything before it. It is used
// only when every field parses, the checksum holds and the key is this file's: any write to the
// file changes its mtime or ctime (ctime cannot be set back from user space), so a changed file is
// hashed again. A garbled, truncated or foreign cache file is ignored (one warning) and rewritten.
// What the key cannot see: bytes changed under the file system (bit rot, a raw device write); delete
// the cache file, or run `herd info FILE --hashes --rehash`, to read the file again.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/gguf.h"

namespace herd::cluster {

using Digest = std::array<uint8_t, 32>;
std::string digest_hex(const Digest& d);
// The first n hex digits and an ellipsis, for messages ("1a2b3c4d5e6f…").
std::string digest_short(const Digest& d, size_t n = 12);

// One tensor's digest as the Assign carries it (cluster/protocol.h).
struct TensorDigest {
  std::string name;
  Digest blake2b{};
  bool operator==(const TensorDigest&) const = default;
};

// Where cache files go when a model's directory is not writable (and the weight cache's root,
// worker/weight_cache.h): $HERD_CACHE_DIR, else $XDG_CACHE_HOME/herd, else $HOME/.cache/herd, else
// /tmp/herd-cache.
std::string cache_root();

struct HashOptions {
  std::string who = "herd";  // prefix of the lines on stderr ("herd worker")
  bool show = true;          // a summary line after hashing; progress lines for reads over kProgressBytes
  bool read_cache = true;    // false: hash again whatever a cache file says
  bool write_cache = true;   // false: leave the cache files alone
  int threads = 0;           // 0: min(4, cores)
};
constexpr uint64_t kProgressBytes = uint64_t{256} << 20;

// What a TensorHashes did, for tests and reports.
struct HashStats {
  bool loaded = false;           // a valid cache file was read (at construction or after a change)
  std::string loaded_from;       // its path
  std::string cache_problem;     // why a cache file found was not used ("" when none was or it was)
  size_t tensors_hashed = 0;     // tensors read and hashed by this object
  uint64_t bytes_hashed = 0;
  double seconds = 0;            // spent hashing
  std::string saved_to;          // the cache file last written ("" when none could be)
};

class TensorHashes {
 public:
  // For the open file `f` whose model fingerprint is `header_hash`. Loads the cache file when it is
  // valid for this file; reads no tensor bytes yet.
  TensorHashes(const model::GgufFile& f, std::string header_hash, HashOptions o = {});

  // The digests of `names`, in that order. Tensors not known yet are read (pread, several threads)
  // and hashed, then the cache file is updated (best effort). When the file's size, mtime, ctime or
  // inode changed since the table was made, it is dropped first (and the cache file looked at again).
  // Throws std::runtime_error naming the tensor when a name is not in the file or it cannot be read.
  std::vector<TensorDigest> digests(const std::vector<std::string>& names);

  // This process rewrote the bytes of `changed` (worker/weight_cache.h fills holes of a sparse file
  // under its lock): those are hashed again, the other entries stay valid for the file as it is now.
  void rewritten(const std::vector<std::string>& changed);

  const HashStats& stats() const { return stats_; }
  const std::string& path() const { return path_; }

  // The two places a cache file for `path` may be (beside it; in cache_root()).
  static std::string beside_path(const std::string& path);
  static std::string user_cache_path(const std::string& path);

  struct FileKey {
    uint64_t size = 0, mtime_ns = 0, ctime_ns = 0, inode = 0;
    bool operator==(const FileKey&) const = default;
  };

 private:
  FileKey stat_file() const;
  void load_cache();  // entries_ from the first valid cache file, if any
  void save_cache();
  void hash(const std::vector<const model::GgufTensorInfo*>& todo);

  const model::GgufFile& file_;
  std::string path_, header_hash_;
  HashOptions opts_;
  FileKey key_;
  std::map<std::string, Digest> entries_;
  HashStats stats_;
};

// Parses a cache file's text for a file with this key and header hash: the entries, or the reason
// it is not usable (exposed for the unit tests; never throws).
std::string parse_hash_cache(const std::string& text, const TensorHashes::FileKey& key, const std::string& header_hash,
                             std::map<std::string, Digest>& out);
std::string format_hash_cache(const TensorHashes::FileKey& key, const std::string& header_hash,
                              const std::map<std::string, Digest>& entries);

}  // namespace herd::cluster
