#include "worker/streamed_weights.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "common/file_io.h"
#include "common/log.h"
#include "engine/stage.h"
#include "transport/crc32.h"

namespace herd {
namespace {

constexpr size_t kSlabBytes = size_t{4} << 20;  // source rows repacked per prepare_matmul call
constexpr int kFormatVersion = 1;

size_t page_size() { return static_cast<size_t>(::sysconf(_SC_PAGESIZE)); }
uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

std::string sys_error(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

// The stage's matmul matrices with their unit (layer index, then the output projection).
struct UnitMatrix {
  int64_t unit;
  WeightMatrix* m;
};
std::vector<UnitMatrix> unit_matrices(model::StageWeights& w, const model::ModelConfig& c) {
  std::vector<UnitMatrix> out;
  for (size_t l = 0; l < w.layers.size(); ++l)
    for (WeightMatrix* m : layer_matmuls(w.layers[l], c.is_moe())) out.push_back({static_cast<int64_t>(l), m});
  if (w.range.output) out.push_back({static_cast<int64_t>(w.layers.size()), &w.output});
  return out;
}

// A matrix of the resident prefix (the output matrix is never one).
bool is_resident(const UnitMatrix& um, const model::StageWeights& w, int64_t resident_layers) {
  return um.unit < std::min<int64_t>(resident_layers, static_cast<int64_t>(w.layers.size()));
}

size_t matrix_bytes(const WeightMatrix& m) {
  return m.rows <= 0 ? 0 : static_cast<size_t>(m.rows - 1) * m.row_stride + row_bytes(m.type, m.cols);
}

// One packed copy in the file, as the header lists it.
struct Entry {
  int64_t unit = 0;
  uint32_t type = 0;
  int64_t rows = 0, cols = 0;
  uint32_t layout = 0;
  uint64_t offset = 0, bytes = 0;
  uint32_t crc = 0;
  bool same_place(const Entry& o) const {
    return unit == o.unit && type == o.type && rows == o.rows && cols == o.cols && layout == o.layout &&
           offset == o.offset && bytes == o.bytes;
  }
};

std::string header_text(const std::string& key, uint64_t header_bytes, const std::vector<Entry>& es, uint64_t total) {
  std::ostringstream s;
  s << "herd-packed " << kFormatVersion << " " << header_bytes << "\n" << "key " << key << "\n";
  for (const Entry& e : es)
    s << "matrix " << e.unit << " " << e.type << " " << e.rows << " " << e.cols << " " << e.layout << " " << e.offset
      << " " << e.bytes << " " << e.crc << "\n";
  s << "total " << total << "\n";
  std::string t = s.str();
  char crc[32];
  std::snprintf(crc, sizeof crc, "crc %u\n", transport::crc32(t.data(), t.size()));
  return t + crc;
}

bool pread_all(int fd, void* buf, size_t n, uint64_t off) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return true;
}

void pwrite_all(int fd, const void* buf, size_t n, uint64_t off, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    const ssize_t r = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) throw std::runtime_error(sys_error("writing the packed weights to", path));
    p += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
}

// "" when the file at fd holds exactly `want` (its header, size and every matrix's crc32); else why not.
// Reads it once with pread, dropping the pages behind (the check must not fill the budget).
std::string check_file(int fd, const std::string& key, uint64_t header_bytes, std::vector<Entry>& want, uint64_t total) {
  struct stat st{};
  if (::fstat(fd, &st) != 0) return "cannot stat it";
  if (static_cast<uint64_t>(st.st_size) != total)
    return "its size is " + std::to_string(st.st_size) + " bytes, not " + std::to_string(total);
  std::string head(header_bytes, '\0');
  if (!pread_all(fd, head.data(), head.size(), 0)) return "its header cannot be read";
  head.resize(std::strlen(head.c_str()));
  std::istringstream in(head);
  std::vector<Entry> got;
  std::string line, key_line;
  size_t crc_at = std::string::npos;
  uint32_t crc_said = 0;
  for (size_t at = 0; std::getline(in, line); at += line.size() + 1) {
    std::istringstream l(line);
    std::string tag;
    l >> tag;
    if (tag == "matrix") {
      Entry e;
      l >> e.unit >> e.type >> e.rows >> e.cols >> e.layout >> e.offset >> e.bytes >> e.crc;
      if (!l) return "a malformed header line: " + line;
      got.push_back(e);
    } else if (tag == "crc") {
      crc_at = at;
      l >> crc_said;
      break;
    }
  }
  if (crc_at == std::string::npos || transport::crc32(head.data(), crc_at) != crc_said)
    return "its header's checksum does not match";
  for (auto& e : want) e.crc = 0;
  std::vector<Entry> with_crcs = want;
  if (got.size() != want.size()) return "it lists " + std::to_string(got.size()) + " matrices, not " + std::to_string(want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (!got[i].same_place(want[i])) return "matrix " + std::to_string(i) + " is not where this stage puts it";
    with_crcs[i].crc = got[i].crc;
  }
  if (head != header_text(key, header_bytes, with_crcs, total)) return "its header is for another stage or build";
  std::vector<uint8_t> buf(kSlabBytes * 2);
  for (size_t i = 0; i < got.size(); ++i) {
    uint32_t crc = 0;
    for (uint64_t done = 0; done < got[i].bytes;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), got[i].bytes - done));
      if (!pread_all(fd, buf.data(), n, got[i].offset + done)) return "matrix " + std::to_string(i) + " cannot be read";
      crc = transport::crc32(buf.data(), n, crc);
      ::posix_fadvise(fd, static_cast<off_t>(got[i].offset + done), static_cast<off_t>(n), POSIX_FADV_DONTNEED);
      done += n;
    }
    if (crc != got[i].crc) return "matrix " + std::to_string(i) + " fails its crc32 (damaged)";
  }
  want = with_crcs;
  return "";
}

// Rows [r0, r1) of m, its packed copy (if any) included: the copy of whole groups is a contiguous
// part of the whole copy (PackedLayout's contract), r0 a multiple of the group.
WeightMatrix row_view(const WeightMatrix& m, int64_t r0, int64_t r1, const Backend& be) {
  WeightMatrix v = m;
  v.data = static_cast<const uint8_t*>(m.data) + static_cast<size_t>(r0) * m.row_stride;
  v.rows = r1 - r0;
  v.packed = {};
  if (m.packed.data) {
    const PackedLayout pl = be.packed_layout(m);
    WeightMatrix group = m;
    group.rows = pl.group_rows;
    const size_t g_bytes = be.packed_layout(group).bytes;
    v.packed = PackedWeights{m.packed.layout, be.packed_layout(v).bytes,
                             m.packed.data + static_cast<size_t>(r0 / pl.group_rows) * g_bytes, m.packed.storage};
  }
  return v;
}

size_t resident_bytes_of(const WeightMatrix& m, const Backend& be) {
  const PackedLayout pl = be.packed_layout(m);
  return pl.id != 0 ? pl.bytes : matrix_bytes(m);
}

// Where m is cut (row boundaries from 0 to its rows): whole groups of its packed layout (16 rows
// without one), each piece at most `cap` bytes resident (at least one group); one piece when
// cap is 0 or the whole fits.
std::vector<int64_t> cuts_of(const WeightMatrix& m, uint64_t cap, const Backend& be) {
  const size_t whole = resident_bytes_of(m, be);
  std::vector<int64_t> cuts = {0};
  if (cap == 0 || whole <= cap || m.rows <= 0) {
    cuts.push_back(std::max<int64_t>(m.rows, 0));
    return cuts;
  }
  const PackedLayout pl = be.packed_layout(m);
  const int64_t g = pl.id != 0 ? pl.group_rows : 16;
  const double per_row = static_cast<double>(whole) / static_cast<double>(m.rows);
  const int64_t step = std::max<int64_t>(g, static_cast<int64_t>(static_cast<double>(cap) / per_row) / g * g);
  for (int64_t r = step; r < m.rows; r += step) cuts.push_back(r);
  cuts.push_back(m.rows);
  return cuts;
}

}  // namespace

std::vector<uint64_t> stage_unit_bytes(model::StageWeights& w, const model::ModelConfig& c, const Backend& be,
                                       uint64_t piece_bytes, int64_t resident_layers) {
  std::vector<uint64_t> out;
  for (const UnitMatrix& um : unit_matrices(w, c)) {
    if (is_resident(um, w, resident_layers)) continue;
    const auto cuts = cuts_of(*um.m, piece_bytes, be);
    for (size_t i = 0; i + 1 < cuts.size(); ++i)
      out.push_back(resident_bytes_of(row_view(*um.m, cuts[i], cuts[i + 1], be), be));
  }
  return out;
}

std::shared_ptr<StreamedWeights> StreamedWeights::open(model::StageWeights& w, const model::ModelConfig& c,
                                                       Backend& be, const StreamOptions& o) {
  auto sw = std::shared_ptr<StreamedWeights>(new StreamedWeights());
  sw->prefetch_ = std::max(0, o.prefetch);
  sw->resident_layers_ = std::clamp<int64_t>(o.resident_layers, 0, static_cast<int64_t>(w.layers.size()));
  const auto ums = unit_matrices(w, c);
  // Where each packed copy goes: each matrix page-aligned (its pieces' pages are its own). The
  // layout does not depend on the budget, so any budget reuses the file.
  std::vector<Entry> es;
  std::vector<WeightMatrix*> packed_ms;
  const uint64_t header_bytes = round_up(1024 + 160 * ums.size(), page_size());
  uint64_t off = header_bytes;
  for (const UnitMatrix& um : ums) {
    const PackedLayout pl = be.packed_layout(*um.m);
    if (pl.id == 0) continue;
    off = round_up(off, page_size());
    es.push_back({um.unit, static_cast<uint32_t>(um.m->type), um.m->rows, um.m->cols, pl.id, off, pl.bytes, 0});
    packed_ms.push_back(um.m);
    off += pl.bytes;
  }
  const uint64_t total = round_up(off, page_size());
  // Reuse the file when it checks out; else write it under a temporary name and rename it.
  const std::string& path = o.path;
  std::string why;
  if (!es.empty()) {
    const int fd = open_waiting(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      why = check_file(fd, o.key, header_bytes, es, total);
      ::close(fd);
      if (!why.empty() && o.note) o.note("herd worker: the packed weights " + path + " are not usable (" + why + "); rebuilding them");
    } else {
      why = "absent";
    }
  }
  if (!es.empty() && !why.empty()) {
    sw->stats_.rebuilt = true;
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    const int fd = open_waiting(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error(sys_error("cannot create", tmp));
    try {
      if (::ftruncate(fd, static_cast<off_t>(total)) != 0) throw std::runtime_error(sys_error("cannot size", tmp));
      for (size_t i = 0; i < es.size(); ++i) {
        WeightMatrix& m = *packed_ms[i];
        const PackedLayout pl = be.packed_layout(m);
        // A slab of whole groups at a time (the contract of PackedLayout), its source pages dropped once copied.
        const int64_t slab = std::max<int64_t>(
            pl.group_rows, static_cast<int64_t>(kSlabBytes / m.row_stride) / pl.group_rows * pl.group_rows);
        uint64_t done = 0;
        uint32_t crc = 0;
        for (int64_t r0 = 0; r0 < m.rows; r0 += slab) {
          WeightMatrix part = m;
          part.data = static_cast<const uint8_t*>(m.data) + static_cast<size_t>(r0) * m.row_stride;
          part.rows = std::min(m.rows, r0 + slab) - r0;
          part.packed = {};
          WeightMatrix* one = &part;
          be.prepare_matmul(std::span<WeightMatrix* const>(&one, 1));
          if (part.packed.layout != pl.id || !part.packed.data || part.packed.size != be.packed_layout(part).bytes)
            throw std::logic_error(be.name() + " did not pack rows " + std::to_string(r0) + ".. as its packed_layout says");
          pwrite_all(fd, part.packed.data, part.packed.size, es[i].offset + done, tmp);
          crc = transport::crc32(part.packed.data, part.packed.size, crc);
          done += part.packed.size;
          if (w.file_mapped && !w.owns(m)) model::release_pages(part);
        }
        if (done != es[i].bytes)
          throw std::logic_error(be.name() + " packed " + std::to_string(done) + " bytes in slabs, not the " +
                                 std::to_string(es[i].bytes) + " of its packed_layout");
        es[i].crc = crc;
        // Written pages leave the page cache once on disk (they would otherwise fill the budget).
        ::sync_file_range(fd, static_cast<off_t>(es[i].offset), static_cast<off_t>(done),
                          SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
        ::posix_fadvise(fd, static_cast<off_t>(es[i].offset), static_cast<off_t>(done), POSIX_FADV_DONTNEED);
      }
      const std::string head = header_text(o.key, header_bytes, es, total);
      if (head.size() > header_bytes) throw std::logic_error("the packed file's header outgrew its space");
      pwrite_all(fd, head.data(), head.size(), 0, tmp);
      if (::fsync(fd) != 0) throw std::runtime_error(sys_error("cannot fsync", tmp));
      ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      ::close(fd);
    } catch (...) {
      ::close(fd);
      ::unlink(tmp.c_str());
      throw;
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
      const std::string e = sys_error("cannot rename it to", path);
      ::unlink(tmp.c_str());
      throw std::runtime_error(e);
    }
  }

  // Map it and point the matrices at it.
  const uint8_t* base = nullptr;
  if (!es.empty()) {
    sw->fd_ = open_waiting(path, O_RDONLY | O_CLOEXEC);
    if (sw->fd_ < 0) throw std::runtime_error(sys_error("cannot open", path));
    void* p = ::mmap(nullptr, total, PROT_READ, MAP_SHARED, sw->fd_, 0);
    if (p == MAP_FAILED) throw std::runtime_error(sys_error("cannot map", path));
    sw->mapping_ = std::shared_ptr<const void>(p, [total](const void* q) { ::munmap(const_cast<void*>(q), total); });
    base = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < es.size(); ++i)
      packed_ms[i]->packed = PackedWeights{es[i].layout, es[i].bytes, base + es[i].offset, sw->mapping_};
  }
  // Where a matrix (or a piece of it) lives: the cache file, or (not packed) the GGUF mapping.
  auto ranges_of = [&](const WeightMatrix& v, const WeightMatrix& whole) {
    std::vector<Range> rs;
    if (v.packed.data)
      rs.push_back({v.packed.data, v.packed.size, static_cast<int64_t>(v.packed.data - base)});
    else if (w.file_mapped && !w.owns(whole))
      rs.push_back({static_cast<const uint8_t*>(v.data), matrix_bytes(v), -1});
    return rs;
  };
  // The resident prefix: populated once here, multiplied whole, never released. The units: every
  // other matrix in pass order, cut into pieces of at most o.piece_bytes, each piece a unit.
  std::vector<Range> prefix;
  int64_t unit = 0;
  for (const UnitMatrix& um : ums) {
    if (is_resident(um, w, sw->resident_layers_)) {
      for (const Range& r : ranges_of(*um.m, *um.m)) prefix.push_back(r);
      continue;
    }
    const auto cuts = cuts_of(*um.m, o.piece_bytes, be);
    auto& ps = sw->pieces_[um.m->data];
    for (size_t i = 0; i + 1 < cuts.size(); ++i, ++unit) {
      const WeightMatrix v = row_view(*um.m, cuts[i], cuts[i + 1], be);
      ps.push_back({v, cuts[i], unit});
      sw->units_.push_back(ranges_of(v, *um.m));
    }
  }
  sw->populate(prefix);
  for (const Range& r : prefix) sw->stats_.resident_bytes += r.n;
  if (w.range.embedding && w.file_mapped && !(w.range.output && w.tok_embd.data == w.output.data))
    sw->embedding_ = w.tok_embd;
  sw->state_.assign(sw->units_.size(), State::Idle);
  sw->thread_ = std::thread([raw = sw.get()] { raw->reader(); });
  return sw;
}

const std::vector<WeightResidency::Piece>* StreamedWeights::pieces(const WeightMatrix& w) const {
  const auto it = pieces_.find(w.data);
  return it == pieces_.end() ? nullptr : &it->second;
}

StreamedWeights::~StreamedWeights() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) ::close(fd_);
}

void StreamedWeights::populate(const std::vector<Range>& rs) {
  const uintptr_t page = page_size();
  // Start the reads of the whole unit first (the disk gets one long request), then map its pages.
  for (const Range& r : rs) {
    const uintptr_t lo = reinterpret_cast<uintptr_t>(r.p) / page * page;
    const uintptr_t hi = round_up(reinterpret_cast<uintptr_t>(r.p) + r.n, page);
    if (r.file_offset >= 0 && fd_ >= 0)
      ::posix_fadvise(fd_, static_cast<off_t>(r.file_offset), static_cast<off_t>(r.n), POSIX_FADV_WILLNEED);
    else
      ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_WILLNEED);
  }
  for (const Range& r : rs) {
    const uintptr_t lo = reinterpret_cast<uintptr_t>(r.p) / page * page;
    const uintptr_t hi = round_up(reinterpret_cast<uintptr_t>(r.p) + r.n, page);
#if defined(MADV_POPULATE_READ)
    if (::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_POPULATE_READ) == 0) continue;
#endif
    volatile uint8_t sink = 0;  // kernels before 5.14: touch every page
    for (uintptr_t a = lo; a < hi; a += page) sink = sink + *reinterpret_cast<const volatile uint8_t*>(a);
    (void)sink;
  }
}

void StreamedWeights::reader() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    const int64_t u = queue_.front();
    queue_.pop_front();
    const auto& rs = units_[static_cast<size_t>(u)];
    lk.unlock();
    populate(rs);
    uint64_t n = 0;
    for (const Range& r : rs) n += r.n;
    lk.lock();
    stats_.bytes_populated += n;
    state_[static_cast<size_t>(u)] = State::Ready;
    cv_.notify_all();
  }
}

void StreamedWeights::request(int64_t u) {
  if (state_[static_cast<size_t>(u)] != State::Idle) return;
  state_[static_cast<size_t>(u)] = State::Queued;
  queue_.push_back(u);
  cv_.notify_all();
}

void StreamedWeights::before(int64_t unit) {
  const int64_t n = units();
  if (unit < 0 || unit >= n) return;
  std::unique_lock<std::mutex> lk(mu_);
  // A unit outside the window (left by a pass that threw) is dropped first.
  for (int64_t v = 0; v < n; ++v) {
    const int64_t ahead = (v - unit + n) % n;
    if (ahead > prefetch_ && state_[static_cast<size_t>(v)] == State::Ready) {
      lk.unlock();
      release(v);
      lk.lock();
    }
  }
  request(unit);
  for (int64_t k = 1; k <= prefetch_ && k < n; ++k) request((unit + k) % n);
  const auto t0 = std::chrono::steady_clock::now();
  cv_.wait(lk, [&] { return state_[static_cast<size_t>(unit)] == State::Ready; });
  stats_.stall_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void StreamedWeights::after(int64_t unit) {
  if (unit < 0 || unit >= units()) return;
  release(unit);
}

void StreamedWeights::release(int64_t u) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (state_[static_cast<size_t>(u)] != State::Ready) return;  // queued: the reader owns it until Ready
    state_[static_cast<size_t>(u)] = State::Idle;
  }
  const uintptr_t page = page_size();
  for (const Range& r : units_[static_cast<size_t>(u)]) {
    // Whole pages inside the range only: a GGUF page shared with a neighbouring tensor stays.
    const uintptr_t lo = round_up(reinterpret_cast<uintptr_t>(r.p), page);
    const uintptr_t hi = (reinterpret_cast<uintptr_t>(r.p) + r.n) / page * page;
    if (hi <= lo) continue;
    ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
    if (r.file_offset >= 0 && fd_ >= 0)
      ::posix_fadvise(fd_, static_cast<off_t>(r.file_offset), static_cast<off_t>(r.n), POSIX_FADV_DONTNEED);
  }
}

void StreamedWeights::end_forward() {
  if (embedding_.data) model::release_pages(embedding_);
}

StreamedWeights::Stats StreamedWeights::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

}  // namespace herd
