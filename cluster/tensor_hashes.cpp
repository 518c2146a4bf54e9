#include "cluster/tensor_hashes.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/file_io.h"

#include "common/log.h"

namespace herd::cluster {
namespace fs = std::filesystem;

namespace {

constexpr const char* kMagic = "herd-tensor-hashes 1 blake2b-256";
constexpr uint64_t kMaxCacheFileBytes = uint64_t{64} << 20;  // ~600k tensors; a larger file is garbage
constexpr size_t kReadBytes = size_t{4} << 20;
using Clock = std::chrono::steady_clock;

void init_sodium() {
  if (sodium_init() < 0) throw std::runtime_error("libsodium cannot initialise");
}

Digest blake2b(const void* data, size_t n) {
  Digest d{};
  crypto_generichash(d.data(), d.size(), static_cast<const unsigned char*>(data), n, nullptr, 0);
  return d;
}

bool parse_hex(std::string_view s, Digest& d) {
  if (s.size() != 64) return false;
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < 32; ++i) {
    const int hi = nib(s[2 * i]), lo = nib(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    d[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return true;
}

bool parse_u64(std::string_view s, uint64_t& v) {
  if (s.empty()) return false;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

std::vector<std::string_view> split_spaces(std::string_view s) {
  std::vector<std::string_view> out;
  size_t at = 0;
  while (at <= s.size()) {
    const size_t sp = s.find(' ', at);
    out.push_back(s.substr(at, sp == std::string_view::npos ? std::string_view::npos : sp - at));
    if (sp == std::string_view::npos) break;
    at = sp + 1;
  }
  return out;
}

bool cacheable_name(const std::string& n) { return !n.empty() && n.find('\n') == std::string::npos; }

// Writable for us, and meant to be: a directory with no write permission bit counts as read-only
// even for root (who may write anywhere), so a shared, read-only model directory is left alone.
bool dir_writable(const fs::path& dir) {
  struct stat sb{};
  if (::stat(dir.c_str(), &sb) != 0 || !S_ISDIR(sb.st_mode)) return false;
  if ((sb.st_mode & 0222) == 0) return false;
  return ::access(dir.c_str(), W_OK) == 0;
}

// Reads a whole (small) file; false when absent, unreadable or over `max`.
bool read_small(const std::string& path, std::string& out, std::string& why) {
  std::error_code ec;
  const auto n = fs::file_size(path, ec);
  if (ec) return false;
  if (n > kMaxCacheFileBytes) {
    why = "it is " + std::to_string(n) + " bytes";
    return true;
  }
  return read_whole_file(path, out, kMaxCacheFileBytes);
}

std::string mib(uint64_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f MiB", static_cast<double>(b) / 1048576.0);
  return s;
}

}  // namespace

std::string digest_hex(const Digest& d) {
  static const char* x = "0123456789abcdef";
  std::string s(64, '0');
  for (size_t i = 0; i < d.size(); ++i) {
    s[2 * i] = x[d[i] >> 4];
    s[2 * i + 1] = x[d[i] & 15];
  }
  return s;
}

std::string digest_short(const Digest& d, size_t n) { return digest_hex(d).substr(0, n) + "…"; }

std::string cache_root() {
  if (const char* d = std::getenv("HERD_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/herd";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/herd";
  return "/tmp/herd-cache";
}

std::string TensorHashes::beside_path(const std::string& path) { return path + ".herd-hashes"; }

std::string TensorHashes::user_cache_path(const std::string& path) {
  std::error_code ec;
  fs::path canon = fs::weakly_canonical(fs::absolute(path, ec), ec);
  if (ec) canon = path;
  init_sodium();
  const std::string c = canon.string();
  const std::string tag = digest_hex(blake2b(c.data(), c.size())).substr(0, 16);
  return cache_root() + "/tensor-hashes/" + canon.filename().string() + "-" + tag + ".herd-hashes";
}

std::string format_hash_cache(const TensorHashes::FileKey& key, const std::string& header_hash,
                              const std::map<std::string, Digest>& entries) {
  std::string s = std::string(kMagic) + "\n";
  s += "file " + std::to_string(key.size) + " " + std::to_string(key.mtime_ns) + " " + std::to_string(key.ctime_ns) +
       " " + std::to_string(key.inode) + "\n";
  s += "header " + header_hash + "\n";
  for (const auto& [name, d] : entries)
    if (cacheable_name(name)) s += "t " + digest_hex(d) + " " + name + "\n";
  init_sodium();
  return s + "end " + digest_hex(blake2b(s.data(), s.size())) + "\n";
}

std::string parse_hash_cache(const std::string& text, const TensorHashes::FileKey& key, const std::string& header_hash,
                             std::map<std::string, Digest>& out) {
  out.clear();
  // The checksum line first: nothing else is looked at in a file that fails it.
  const size_t end_at = text.rfind("\nend ");
  if (end_at == std::string::npos) return "no end line (truncated?)";
  const std::string_view tail = std::string_view(text).substr(end_at + 5);
  Digest sum{};
  if (tail.size() != 65 || tail.back() != '\n' || !parse_hex(tail.substr(0, 64), sum)) return "a malformed end line";
  init_sodium();
  if (blake2b(text.data(), end_at + 1) != sum) return "its checksum does not match its contents";
  std::map<std::string, Digest> got;
  size_t at = 0, line_no = 0;
  bool saw_file = false, saw_header = false;
  while (at <= end_at) {
    const size_t nl = text.find('\n', at);
    const std::string_view line(text.data() + at, nl - at);
    at = nl + 1;
    ++line_no;
    const std::string where = "line " + std::to_string(line_no);
    if (line_no == 1) {
      if (line != kMagic) return where + " is not \"" + std::string(kMagic) + "\"";
      continue;
    }
    if (line.rfind("file ", 0) == 0 && line_no == 2) {
      const auto f = split_spaces(line);
      TensorHashes::FileKey k;
      if (f.size() != 5 || !parse_u64(f[1], k.size) || !parse_u64(f[2], k.mtime_ns) || !parse_u64(f[3], k.ctime_ns) ||
          !parse_u64(f[4], k.inode))
        return where + ": a malformed file line";
      if (k != key) return "it was made for another version of the file (size, mtime, ctime or inode differ)";
      saw_file = true;
      continue;
    }
    if (line.rfind("header ", 0) == 0 && line_no == 3) {
      if (line.substr(7) != header_hash) return "it was made for another model header";
      saw_header = true;
      continue;
    }
    if (line.rfind("t ", 0) == 0 && line_no > 3 && line.size() > 2 + 64 + 1 && line[2 + 64] == ' ') {
      Digest d{};
      if (!parse_hex(line.substr(2, 64), d)) return where + ": a malformed digest";
      const std::string name(line.substr(2 + 64 + 1));
      if (!got.emplace(name, d).second) return where + ": tensor " + name + " twice";
      continue;
    }
    return where + " is not understood";
  }
  if (!saw_file || !saw_header) return "no file or header line";
  out = std::move(got);
  return "";
}

TensorHashes::TensorHashes(const model::GgufFile& f, std::string header_hash, HashOptions o)
    : file_(f), path_(f.path()), header_hash_(std::move(header_hash)), opts_(std::move(o)) {
  init_sodium();
  key_ = stat_file();
  if (opts_.read_cache) load_cache();
}

TensorHashes::FileKey TensorHashes::stat_file() const {
  struct stat sb{};
  if (::stat(path_.c_str(), &sb) != 0)
    throw std::runtime_error("cannot stat " + path_ + ": " + std::strerror(errno));
  FileKey k;
  k.size = static_cast<uint64_t>(sb.st_size);
  k.mtime_ns = static_cast<uint64_t>(sb.st_mtim.tv_sec) * 1000000000ull + static_cast<uint64_t>(sb.st_mtim.tv_nsec);
  k.ctime_ns = static_cast<uint64_t>(sb.st_ctim.tv_sec) * 1000000000ull + static_cast<uint64_t>(sb.st_ctim.tv_nsec);
  k.inode = static_cast<uint64_t>(sb.st_ino);
  return k;
}

void TensorHashes::load_cache() {
  for (const std::string& p : {beside_path(path_), user_cache_path(path_)}) {
    std::string text, why;
    if (!read_small(p, text, why)) continue;
    std::map<std::string, Digest> got;
    if (why.empty()) why = parse_hash_cache(text, key_, header_hash_, got);
    if (why.empty()) {
      entries_ = std::move(got);
      stats_.loaded = true;
      stats_.loaded_from = p;
      return;
    }
    if (stats_.cache_problem.empty()) stats_.cache_problem = p + ": " + why;
    // A cache of an older version of the file is the normal way a change shows; anything else is
    // worth a line (it was damaged or written by something else).
    if (why.rfind("it was made for another", 0) != 0 && opts_.show)
      note(opts_.who + ": ignoring the tensor hash cache " + p + " (" + why + "); hashing again");
  }
}

void TensorHashes::save_cache() {
  auto write = [&](const std::string& target, std::string& why) {
    std::error_code ec;
    fs::create_directories(fs::path(target).parent_path(), ec);
    // Entries another process saved meanwhile for the same file are kept (workers with other
    // stages of one file share its cache).
    std::map<std::string, Digest> merged, theirs;
    std::string text, ignored;
    if (read_small(target, text, ignored) && ignored.empty() && parse_hash_cache(text, key_, header_hash_, theirs).empty())
      merged = std::move(theirs);
    for (const auto& [n, d] : entries_) merged[n] = d;
    // Unique per process and per save: in-process clusters (tests) hash one file from several threads.
    static std::atomic<uint64_t> saves{0};
    const std::string tmp = target + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(saves++);
    if (!write_whole_file(tmp, format_hash_cache(key_, header_hash_, merged))) {
      why = "cannot write " + tmp + ": " + std::strerror(errno);
      std::remove(tmp.c_str());
      return false;
    }
    if (std::rename(tmp.c_str(), target.c_str()) != 0) {
      why = "cannot rename " + tmp + ": " + std::strerror(errno);
      std::remove(tmp.c_str());
      return false;
    }
    return true;
  };
  std::string why_beside = "its directory is not writable", why_user;
  const std::string beside = beside_path(path_);
  if (dir_writable(fs::absolute(beside).parent_path()) && write(beside, why_beside)) {
    stats_.saved_to = beside;
    return;
  }
  const std::string user = user_cache_path(path_);
  if (write(user, why_user)) {
    stats_.saved_to = user;
    return;
  }
  stats_.saved_to.clear();
  if (opts_.show)
    note(opts_.who + ": cannot save the tensor hashes of " + path_ + " (" + why_beside + "; " + why_user +
         "); they will be computed again next time");
}

void TensorHashes::hash(const std::vector<const model::GgufTensorInfo*>& todo) {
  if (todo.empty()) return;
  const int fd = open_waiting(path_, O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + path_ + " to hash its tensors: " + std::strerror(errno));
  uint64_t total = 0;
  for (const auto* t : todo) total += t->n_bytes;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const size_t n_threads = std::min<size_t>(todo.size(), static_cast<size_t>(opts_.threads > 0 ? opts_.threads
                                                                                                 : std::min(4, cores)));
  std::vector<Digest> out(todo.size());
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::string error;
  const uint64_t base = file_.data_offset();
  auto work = [&] {
    std::vector<unsigned char> buf(kReadBytes);
    for (size_t i; !failed && (i = next.fetch_add(1)) < todo.size();) {
      const model::GgufTensorInfo& t = *todo[i];
      crypto_generichash_state st;
      crypto_generichash_init(&st, nullptr, 0, out[i].size());
      uint64_t at = 0;
      while (at < t.n_bytes) {
        const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), t.n_bytes - at));
        const ssize_t got = ::pread(fd, buf.data(), want, static_cast<off_t>(base + t.offset + at));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
          std::lock_guard<std::mutex> l(mu);
          if (error.empty())
            error = "cannot read tensor " + t.name + " of " + path_ + " at offset " + std::to_string(base + t.offset + at) +
                    (got < 0 ? std::string(": ") + std::strerror(errno) : std::string(": end of file"));
          failed = true;
          return;
        }
        crypto_generichash_update(&st, buf.data(), static_cast<unsigned long long>(got));
        at += static_cast<uint64_t>(got);
        done += static_cast<uint64_t>(got);
      }
      crypto_generichash_final(&st, out[i].data(), out[i].size());
    }
  };
  const auto t0 = Clock::now();
  std::vector<std::thread> pool;
  for (size_t i = 1; i < n_threads; ++i) pool.emplace_back(work);
  if (opts_.show && notes_shown() && total >= kProgressBytes) {
    // Progress on stderr while the helpers read: a 40 GB file takes a while.
    pool.emplace_back(work);
    auto last = Clock::now();
    while (done < total && !failed) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (Clock::now() - last < std::chrono::seconds(1)) continue;
      last = Clock::now();
      const double s = std::chrono::duration<double>(last - t0).count();
      char rate[32];
      std::snprintf(rate, sizeof rate, "%.0f MB/s", s > 0 ? static_cast<double>(done) / s / 1e6 : 0.0);
      note(opts_.who + ": hashing tensors " + mib(done) + " / " + mib(total) + " (" + rate + ")");
    }
  } else {
    work();
  }
  for (auto& t : pool) t.join();
  ::close(fd);
  if (failed) throw std::runtime_error(error);
  for (size_t i = 0; i < todo.size(); ++i) entries_[todo[i]->name] = out[i];
  stats_.tensors_hashed += todo.size();
  stats_.bytes_hashed += total;
  stats_.seconds += std::chrono::duration<double>(Clock::now() - t0).count();
}

std::vector<TensorDigest> TensorHashes::digests(const std::vector<std::string>& names) {
  for (int attempt = 0;; ++attempt) {
    if (const FileKey now = stat_file(); now != key_) {  // changed since the table was made
      entries_.clear();
      key_ = now;
      if (opts_.read_cache) load_cache();
    }
    std::vector<const model::GgufTensorInfo*> todo;
    std::set<const model::GgufTensorInfo*> seen;
    for (const auto& n : names) {
      const model::GgufTensorInfo* t = file_.find_tensor(n);
      if (!t) throw std::runtime_error(path_ + " has no tensor " + n);
      if (!entries_.count(n) && seen.insert(t).second) todo.push_back(t);
    }
    const double s0 = stats_.seconds;
    const uint64_t b0 = stats_.bytes_hashed;
    hash(todo);
    if (stat_file() != key_) {  // written to while we read it: the digests may mix two versions
      if (attempt >= 2) throw std::runtime_error(path_ + " keeps changing while its tensors are hashed");
      continue;
    }
    if (!todo.empty()) {
      if (opts_.write_cache) save_cache();
      if (opts_.show) {
        const double s = stats_.seconds - s0;
        const uint64_t b = stats_.bytes_hashed - b0;
        char took[64];
        std::snprintf(took, sizeof took, " in %.2f s (%.0f MB/s)", s, s > 0 ? static_cast<double>(b) / s / 1e6 : 0.0);
        note(opts_.who + ": hashed " + std::to_string(todo.size()) + " tensor" + (todo.size() == 1 ? "" : "s") + " (" +
             mib(b) + ") of " + path_ + took + (stats_.saved_to.empty() ? "" : "; cached in " + stats_.saved_to));
      }
    }
    std::vector<TensorDigest> out;
    out.reserve(names.size());
    for (const auto& n : names) out.push_back({n, entries_.at(n)});
    return out;
  }
}

void TensorHashes::rewritten(const std::vector<std::string>& changed) {
  for (const auto& n : changed) entries_.erase(n);
  key_ = stat_file();
}

}  // namespace herd::cluster
