#include "worker/weight_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <map>
#include <set>
#include <stdexcept>

#include "common/file_io.h"
#include "model/gguf.h"
#include "transport/crc32.h"
#include "cluster/protocol.h"
#include "cluster/model_fingerprint.h"
#include "cluster/tensor_hashes.h"

namespace herd {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kWindow = 4;            // chunks in flight (hides the round trip on a slow link)
constexpr int kMaxTries = 4;             // a chunk that fails its crc32 this often fails the assignment

std::string sys_error(const std::string& what) { return what + ": " + std::strerror(errno); }

void pwrite_all(int fd, const std::string& bytes, uint64_t offset, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::pwrite(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset + done));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(sys_error("cannot write " + path));
    }
    done += static_cast<size_t>(w);
  }
}

struct Span {
  uint64_t offset, length;
};

// Splits [offset, offset + length) into chunks of at most `chunk` bytes.
void split(std::vector<Span>& out, uint64_t offset, uint64_t length, uint64_t chunk) {
  for (uint64_t at = 0; at < length; at += chunk) out.push_back({offset + at, std::min(chunk, length - at)});
}

class Progress {
 public:
  Progress(std::string what, uint64_t total) : what_(std::move(what)), total_(total), t0_(Clock::now()) {}
  void add(uint64_t n, bool force = false) {
    done_ += n;
    const auto now = Clock::now();
    if (!force && now - last_ < std::chrono::milliseconds(500)) return;
    last_ = now;
    const double s = std::chrono::duration<double>(now - t0_).count();
    std::fprintf(stderr, "herd worker: %s %.1f/%.1f MiB (%.1f MB/s)\n", what_.c_str(), done_ / 1048576.0,
                 total_ / 1048576.0, s > 0 ? done_ / s / 1e6 : 0.0);
    std::fflush(stderr);
  }

 private:
  std::string what_;
  uint64_t total_, done_ = 0;
  Clock::time_point t0_, last_{};
};

// Fetches every span into fd at its offset, kWindow requests in flight, each chunk crc32-checked.
void fetch(const std::vector<Span>& todo, WeightSource& src, FetchStats& st, int fd, const std::string& path,
           const std::string& what, int timeout_ms) {
  uint64_t total = 0;
  for (const Span& s : todo) total += s.length;
  Progress progress(what, total);
  std::map<uint64_t, std::pair<Span, int>> outstanding;  // offset -> (span, tries)
  size_t next = 0;
  auto fill = [&] {
    while (outstanding.size() < kWindow && next < todo.size()) {
      const Span s = todo[next++];
      src.request(s.offset, s.length);
      outstanding[s.offset] = {s, 1};
    }
  };
  fill();
  while (!outstanding.empty()) {
    std::optional<WeightChunkData> c = src.receive(timeout_ms);
    if (!c) throw std::runtime_error("no weight chunk from the coordinator within " +
                                     std::to_string(timeout_ms / 1000.0).substr(0, 4) + " s (--weight-timeout)");
    auto it = outstanding.find(c->offset);
    if (it == outstanding.end() || c->bytes.size() != it->second.first.length)
      throw std::runtime_error("the coordinator sent " + std::to_string(c->bytes.size()) + " bytes at offset " +
                               std::to_string(c->offset) + ", which were not asked for");
    st.bytes_received += c->bytes.size();
    if (transport::crc32(c->bytes.data(), c->bytes.size()) != c->crc32) {
      auto& [span, tries] = it->second;
      if (tries >= kMaxTries)
        throw std::runtime_error("weight chunk at file offset " + std::to_string(span.offset) + " (" +
                                 std::to_string(span.length) + " bytes) failed its crc32 check " +
                                 std::to_string(tries) + " times; giving up");
      ++tries;
      ++st.chunks_resent;
      std::fprintf(stderr, "herd worker: weight chunk at offset %llu failed its crc32 check; asking again\n",
                   static_cast<unsigned long long>(span.offset));
      src.request(span.offset, span.length);
      continue;
    }
    pwrite_all(fd, c->bytes, c->offset, path);
    outstanding.erase(it);
    progress.add(c->bytes.size(), outstanding.empty() && next == todo.size());
    fill();
  }
}

// Absent: empty. Unreadable (e.g. no descriptor free after the wait): an error, never "empty",
// which write_manifest would then make true.
std::set<std::string> read_manifest(const std::string& path) {
  std::set<std::string> names;
  std::string text;
  if (!read_whole_file(path, text)) {
    if (errno == ENOENT) return names;
    throw std::runtime_error(sys_error("cannot read " + path));
  }
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) names.insert(line);
  return names;
}

void write_manifest(const std::string& path, const std::set<std::string>& names) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  std::string text;
  for (const auto& n : names) text += n + "\n";
  if (!write_whole_file(tmp, text)) throw std::runtime_error(sys_error("cannot write " + tmp));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error(sys_error("cannot rename " + tmp));
}

}  // namespace

std::string default_cache_dir() { return cluster::cache_root(); }

uint64_t disk_usage(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    struct stat sb{};
    if (::lstat(it->path().c_str(), &sb) == 0 && S_ISREG(sb.st_mode)) total += static_cast<uint64_t>(sb.st_blocks) * 512;
  }
  return total;
}

namespace {

std::string mib(uint64_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f MiB", static_cast<double>(b) / 1048576.0);
  return s;
}

// Disk bytes a write of n bytes at arbitrary offsets can take: whole 4 KiB blocks, plus one for a
// partial block at each end.
uint64_t blocks_for(uint64_t n) { return (n + 4095) / 4096 * 4096 + 4096; }

}  // namespace

void WeightCache::make_room(uint64_t need) {
  if (max_bytes_ == 0) return;
  uint64_t used = disk_usage(root_);
  if (used + need <= max_bytes_) return;
  // Other models, least recently used first (the mtime of their `used` file, else of the directory).
  std::vector<std::pair<fs::file_time_type, fs::path>> others;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory(ec) || name == hash_) continue;
    if (name.size() != 64 || name.find_first_not_of("0123456789abcdef") != std::string::npos) continue;  // not a model
    auto t = fs::last_write_time(e.path() / "used", ec);
    if (ec) t = fs::last_write_time(e.path(), ec);
    others.push_back({t, e.path()});
  }
  std::sort(others.begin(), others.end());
  for (const auto& [t, dir] : others) {
    const std::string lock = (dir / "lock").string();
    const int fd = open_waiting(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) continue;
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {  // another worker is filling or using it
      ::close(fd);
      continue;
    }
    const uint64_t freed = disk_usage(dir.string());
    fs::remove_all(dir, ec);
    ::close(fd);
    std::fprintf(stderr, "herd worker: weight cache over --cache-max %s: evicted %s (%s, least recently used)\n",
                 mib(max_bytes_).c_str(), dir.filename().string().substr(0, 16).c_str(), mib(freed).c_str());
    used = disk_usage(root_);
    if (used + need <= max_bytes_) return;
  }
  throw std::runtime_error("weight cache " + root_ + " is full: this shard needs " + mib(need) + ", the cache holds " +
                           mib(used) + " that cannot be evicted (in use), and --cache-max is " + mib(max_bytes_));
}

WeightCache::WeightCache(std::string cache_dir, std::string model_hash, uint64_t max_bytes)
    : root_(cache_dir), dir_(std::move(cache_dir)), hash_(std::move(model_hash)), max_bytes_(max_bytes) {
  if (hash_.empty() || hash_.find_first_not_of("0123456789abcdef") != std::string::npos)
    throw std::runtime_error("model hash '" + hash_ + "' is not lowercase hex");
  dir_ += "/" + hash_;
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw std::runtime_error("cannot create the weight cache " + dir_ + ": " + ec.message());
  model_path_ = dir_ + "/model.gguf";
  const std::string lock = dir_ + "/lock";
  lock_fd_ = open_waiting(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) throw std::runtime_error(sys_error("cannot open " + lock));
  while (::flock(lock_fd_, LOCK_EX) != 0)
    if (errno != EINTR) throw std::runtime_error(sys_error("cannot lock " + lock));
}

void WeightCache::mark_used() {
  const int used = open_waiting(dir_ + "/used", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (used >= 0) {
    ::futimens(used, nullptr);  // now: this model is the most recently used
    ::close(used);
  }
}

WeightCache::~WeightCache() { unlock(); }

void WeightCache::unlock() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // closing releases the flock
  lock_fd_ = -1;
}

void WeightCache::ensure_header(uint64_t file_size, uint64_t header_bytes, WeightSource& src, FetchStats& st) {
  if (header_bytes == 0 || header_bytes > file_size || file_size > kMaxDeclaredFileBytes)
    throw std::runtime_error("the coordinator announced a header of " + std::to_string(header_bytes) +
                             " bytes in a file of " + std::to_string(file_size));
  struct stat sb{};
  if (::stat(model_path_.c_str(), &sb) == 0) {
    if (static_cast<uint64_t>(sb.st_size) == file_size &&
        cluster::model_fingerprint(model_path_, header_bytes) == hash_) {
      mark_used();
      return;
    }
    std::fprintf(stderr, "herd worker: %s does not match the model hash; fetching it again\n", model_path_.c_str());
    std::remove(model_path_.c_str());
  }
  std::remove((dir_ + "/tensors.txt").c_str());  // nothing of an old file is trusted
  make_room(blocks_for(header_bytes));             // before the (sparse) file exists
  const std::string tmp = model_path_ + ".tmp." + std::to_string(getpid());
  const int fd = open_waiting(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(sys_error("cannot create " + tmp));
  try {
    if (::ftruncate(fd, static_cast<off_t>(file_size)) != 0) throw std::runtime_error(sys_error("cannot size " + tmp));
    std::vector<Span> spans;
    split(spans, 0, header_bytes, cluster::kMaxWeightChunk);
    fetch(spans, src, st, fd, tmp, "receiving the model header", chunk_timeout_ms_);
    if (::fsync(fd) != 0) throw std::runtime_error(sys_error("cannot sync " + tmp));
    const std::string got = cluster::model_fingerprint(tmp, header_bytes);
    if (got != hash_)
      throw std::runtime_error("the model header received hashes to " + got.substr(0, 16) + "…, expected " +
                               hash_.substr(0, 16) + "…");
  } catch (...) {
    ::close(fd);
    std::remove(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), model_path_.c_str()) != 0) throw std::runtime_error(sys_error("cannot rename " + tmp));
  mark_used();
}

std::vector<std::string> WeightCache::cached(const std::vector<std::string>& names) const {
  const std::set<std::string> have = read_manifest(dir_ + "/tensors.txt");
  std::vector<std::string> out;
  for (const auto& n : names)
    if (have.count(n)) out.push_back(n);
  return out;
}

void WeightCache::forget(const std::vector<std::string>& names) {
  if (names.empty()) return;
  const std::string manifest = dir_ + "/tensors.txt";
  std::set<std::string> have = read_manifest(manifest);
  for (const auto& n : names) have.erase(n);
  write_manifest(manifest, have);
}

void WeightCache::ensure_tensors(const model::GgufFile& f, const std::vector<std::string>& names, WeightSource& src,
                                 FetchStats& st, uint64_t chunk_bytes,
                                 const std::function<void(const std::vector<std::string>&)>& verify) {
  const std::string manifest = dir_ + "/tensors.txt";
  std::set<std::string> have = read_manifest(manifest);
  std::vector<Span> spans;
  std::vector<std::string> missing;
  for (const auto& n : names) {
    if (have.count(n)) continue;
    const model::GgufTensorInfo* t = f.find_tensor(n);
    if (!t) throw std::runtime_error("the model has no tensor " + n);
    missing.push_back(n);
    split(spans, f.data_offset() + t->offset, t->n_bytes, std::max<uint64_t>(1, std::min(chunk_bytes, cluster::kMaxWeightChunk)));
  }
  if (missing.empty()) return;
  uint64_t need = 0;
  for (const Span& sp : spans) need += sp.length;
  make_room(blocks_for(need) + 4096 * missing.size());  // before any byte is fetched
  const int fd = open_waiting(model_path_, O_RDWR | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(sys_error("cannot open " + model_path_));
  try {
    fetch(spans, src, st, fd, model_path_, "receiving weights", chunk_timeout_ms_);
    if (::fsync(fd) != 0) throw std::runtime_error(sys_error("cannot sync " + model_path_));
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  if (verify) verify(missing);
  have.insert(missing.begin(), missing.end());
  write_manifest(manifest, have);
}

}  // namespace herd
