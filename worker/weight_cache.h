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
// CACHE is --cache-dir, else $HERD_CACHE_DIR, else $XDG_CACHE_HOME/herd, else ~/.cache/herd.
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
  WeightCache(std::string cache_dir, std::string model_hash);
  ~WeightCache();
  WeightCache(const WeightCache&) = delete;
  WeightCache& operator=(const WeightCache&) = delete;

  const std::string& model_path() const { return model_path_; }

  // Takes the lock, then makes sure model.gguf exists with the header (fetching header_bytes and
  // checking their SHA-256 against the hash when it does not). Throws std::runtime_error.
  void ensure_header(uint64_t file_size, uint64_t header_bytes, WeightSource& src, FetchStats& st);
  // Fetches the named tensors of `f` (opened on model_path()) that the manifest lacks, in chunks of
  // at most chunk_bytes, each crc32-checked (a bad one is asked for again, up to 3 times, then
  // std::runtime_error); writes, fsyncs, commits the manifest. Prints progress to stderr.
  void ensure_tensors(const model::GgufFile& f, const std::vector<std::string>& names, WeightSource& src,
                      FetchStats& st, uint64_t chunk_bytes);
  // Releases the lock (also done by the destructor).
  void unlock();

 private:
  std::string dir_, hash_, model_path_;
  int lock_fd_ = -1;
};

}  // namespace herd
