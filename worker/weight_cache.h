// A worker's on-disk cache of the model shards it was sent, so that a restarted worker does not
// ask for them again. Layout, per model (hash = the model fingerprint of cluster/model_fingerprint.h):
//
//   CACHE/<hash>/model.gguf   the coordinator's GGUF as a *sparse* file: the header (bytes
//                             [0, data_offset), checked against the hash) and only the tensors this
//                             host was sent, at their original offsets; the rest are holes that
//                             take no disk space. So it opens and maps like any GGUF, and its hash
//                             is the model hash.
//   CACHE/<hash>/tensors.txt  the manifest: one "name crc32" line per tensor whose bytes are
//                             complete and verified. It is the commit record: written to a temp
//                             name and renamed after the tensor bytes are fsync'ed. model.gguf is
//                             likewise created under a temp name and renamed once its header is
//                             in place. A tensor not in the manifest is fetched again.
//   CACHE/<hash>/lock         flock'ed while a worker fills the cache (workers on one host share it).
//
//   CACHE/<hash>/used         touched at every use (once model.gguf is there): the least recently used model is evicted first.
//
//   CACHE/<hash>/model.gguf.herd-hashes  the digests of its tensors (cluster/tensor_hashes.h): what the
//                             cache holds is checked against the Assign's digests before it is used
//                             (a tensor that differs is fetched again), what arrives before it is
//                             committed to the manifest (a tensor that differs refuses the Assign).
//
// CACHE is --cache-dir, else cluster::cache_root(): $HERD_CACHE_DIR, else $XDG_CACHE_HOME/herd,
// else ~/.cache/herd. Only directories named by a model hash are evicted (CACHE/tensor-hashes/,
// where hash caches of read-only model directories go, is not).
//
// Quota (--cache-max, default kDefaultCacheMax): the disk blocks of everything under CACHE (du,
// not the sparse files' apparent sizes) are checked before any byte is written: the header before
// model.gguf is created, the missing tensors' bytes before they are fetched. When they would not
// fit, other models' directories are evicted, least recently used first, skipping any whose lock
// another worker holds (in use); if that is not enough the transfer is refused with the sizes.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace herd::model {
class GgufFile;
}

namespace herd {

std::string default_cache_dir();

// A coordinator answers each weight request from its file at once: 4 chunks of 4 MiB in flight
// take 1.3 s even over 100 Mbit/s. Longer means it stopped answering (the Assign then fails and the
// worker serves others again).
constexpr int kDefaultChunkTimeoutMs = 20000;
constexpr uint64_t kDefaultCacheMax = uint64_t{64} << 30;  // 64 GiB
// A declared model file larger than this (1 PiB) is refused before anything is created.
constexpr uint64_t kMaxDeclaredFileBytes = uint64_t{1} << 50;

// Disk bytes (allocated blocks, as du counts them) of every regular file under dir.
uint64_t disk_usage(const std::string& dir);

// Where the bytes come from: the coordinator, over the worker's link. request() asks for file
// bytes [offset, offset + length); receive() returns the next answer (nullopt on timeout) and
// throws std::runtime_error when the coordinator refused or went away.
struct WeightChunkData {
  uint64_t offset = 0;
  uint32_t crc32 = 0;
  std::string bytes;
};
struct WeightSource {
  std::function<void(uint64_t offset, uint64_t length)> request;
  std::function<std::optional<WeightChunkData>(int timeout_ms)> receive;
};

struct FetchStats {
  uint64_t bytes_received = 0;  // chunk bytes that arrived (including re-sent ones)
  int chunks_resent = 0;        // chunks that failed their checksum and were asked for again
};

class WeightCache {
 public:
  // max_bytes: the quota for everything under cache_dir (0 = none).
  WeightCache(std::string cache_dir, std::string model_hash, uint64_t max_bytes = kDefaultCacheMax);
  ~WeightCache();
  WeightCache(const WeightCache&) = delete;
  WeightCache& operator=(const WeightCache&) = delete;

  const std::string& model_path() const { return model_path_; }

  // Takes the lock, then makes sure model.gguf exists with the header (fetching header_bytes and
  // checking their SHA-256 against the hash when it does not). Throws std::runtime_error.
  void ensure_header(uint64_t file_size, uint64_t header_bytes, WeightSource& src, FetchStats& st);
  // Fetches the named tensors of `f` (opened on model_path()) that the manifest lacks, in chunks of
  // at most chunk_bytes, each crc32-checked (a bad one is asked for again, up to 3 times, then
  // std::runtime_error); writes, fsyncs, then calls verify(the names fetched) — which throws to
  // refuse them: the manifest is then left as it was — and commits the manifest. Prints progress
  // to stderr.
  void ensure_tensors(const model::GgufFile& f, const std::vector<std::string>& names, WeightSource& src,
                      FetchStats& st, uint64_t chunk_bytes,
                      const std::function<void(const std::vector<std::string>&)>& verify = {});
  // Those of `names` the manifest holds (complete on disk), in order.
  std::vector<std::string> cached(const std::vector<std::string>& names) const;
  // Drops `names` from the manifest (their bytes are fetched again by the next ensure_tensors).
  void forget(const std::vector<std::string>& names);
  // How long to wait for each answer of the coordinator (default kDefaultChunkTimeoutMs).
  void set_chunk_timeout_ms(int ms) { chunk_timeout_ms_ = ms; }
  // Releases the lock (also done by the destructor).
  void unlock();

 private:
  // Makes room for `need` more bytes under the quota (evicting other models, least recently used
  // first, unless locked), else throws std::runtime_error naming the sizes.
  void make_room(uint64_t need);
  void mark_used();  // touches CACHE/<hash>/used (once model.gguf holds the header)

  std::string root_, dir_, hash_, model_path_;
  uint64_t max_bytes_ = 0;
  int chunk_timeout_ms_ = kDefaultChunkTimeoutMs;
  int lock_fd_ = -1;
};

}  // namespace herd
