#include "engine/host_probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>
#include <memory>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <span>
#include <sstream>
#include <thread>
#include <vector>

#include "common/timer.h"
#include "engine/read_bound.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/quant.h"

namespace herd {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

// Runs fn once untimed, then `reps` timed; the median seconds.
template <class F>
double time_median(int reps, F&& fn) {
  fn();
  std::vector<double> s;
  for (int i = 0; i < reps; ++i) {
    Timer t;
    fn();
    s.push_back(t.seconds());
  }
  return median(s);
}

// /proc/meminfo through one descriptor opened on first use and kept: pread from offset 0 makes the
// kernel write the file afresh, and a process whose descriptors are all taken (a worker under a
// flood of silent connections, [trust] item 4) still reads it. A read that fails anyway answers
// the last value read for `key`, so a transient failure never reports "0 bytes free".
uint64_t meminfo_bytes_impl(const std::string& key) {
  static std::mutex mu;
  static int fd = -1;
  static std::map<std::string, uint64_t> last;
  std::lock_guard lock(mu);
  if (fd < 0) fd = ::open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
  char buf[16384];
  ssize_t n = fd >= 0 ? ::pread(fd, buf, sizeof buf - 1, 0) : -1;
  if (n <= 0) {
    const auto it = last.find(key);
    return it == last.end() ? 0 : it->second;
  }
  buf[n] = 0;
  std::istringstream f(std::string(buf, static_cast<size_t>(n)));
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key + ":", 0) == 0) {
      std::istringstream ls(line.substr(key.size() + 1));
      uint64_t kb = 0;
      ls >> kb;
      return last[key] = kb * 1024;
    }
  return 0;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      std::string v = line.substr(line.find(':') + 1);
      v.erase(0, v.find_first_not_of(' '));
      return v;
    }
  return "unknown";
}

// A [rows x cols] matrix of type t filling about `bytes`: 64 distinct quantized random rows, repeated.
struct TestMatrix {
  std::vector<uint8_t> data;
  WeightMatrix w;
};
TestMatrix make_matrix(DType t, int64_t cols, size_t bytes) {
  const size_t rb = row_bytes(t, cols);
  const int64_t rows = std::max<int64_t>(64, static_cast<int64_t>(bytes / rb));
  TestMatrix m;
  m.data.resize(rb * static_cast<size_t>(rows));
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < 64; ++r) {
    for (auto& v : row) v = nd(rng);
    quantize_row(t, row.data(), m.data.data() + rb * static_cast<size_t>(r), cols);
  }
  for (int64_t r = 64; r < rows; ++r)
    std::memcpy(m.data.data() + rb * static_cast<size_t>(r), m.data.data() + rb * static_cast<size_t>(r % 64), rb);
  m.w = {t, m.data.data(), rows, cols, rb};
  return m;
}

// As a stage does at load (engine/stage.cpp): the backend may keep the matrix in a faster layout,
// and a stage's matmuls run on that copy, so that is what the probe must time.
void prepare(Backend& be, TestMatrix& m) {
  WeightMatrix* w = &m.w;
  be.prepare_matmul(std::span<WeightMatrix* const>(&w, 1));
}

// One-way latency of a 64-byte message between two threads over TCP on 127.0.0.1 (ping-pong / 2):
// the floor of a hop between two workers on this host (ZeroMQ adds its I/O thread on each side).
double loopback_latency(int round_trips) {
  const int ls = ::socket(AF_INET, SOCK_STREAM, 0);
  if (ls < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t al = sizeof a;
  if (::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(ls, 1) != 0 ||
      ::getsockname(ls, reinterpret_cast<sockaddr*>(&a), &al) != 0) {
    ::close(ls);
    return 0;
  }
  auto exact = [](int fd, char* buf, bool send) {
    size_t done = 0;
    while (done < 64) {
      const ssize_t r = send ? ::send(fd, buf + done, 64 - done, MSG_NOSIGNAL) : ::recv(fd, buf + done, 64 - done, 0);
      if (r <= 0) return false;
      done += static_cast<size_t>(r);
    }
    return true;
  };
  std::thread echo([&] {
    const int fd = ::accept(ls, nullptr, nullptr);
    if (fd < 0) return;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[64];
    while (exact(fd, buf, false) && exact(fd, buf, true)) {
    }
    ::close(fd);
  });
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  double lat = 0;
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[64] = {};
    std::vector<double> s;
    for (int i = 0; i < round_trips + 20; ++i) {
      Timer t;
      if (!exact(fd, buf, true) || !exact(fd, buf, false)) break;
      if (i >= 20) s.push_back(t.seconds() / 2);  // first 20: warm-up
    }
    lat = median(s);
  }
  if (fd >= 0) ::close(fd);  // the echo thread sees EOF and ends
  echo.join();
  ::close(ls);
  return lat;
}

// What a worker measures at startup when it does not know its model's types: the types of the
// common GGUF files (legacy quants, K-quants, 8-bit, f16/f32 for norms and small models).
const DType kStartupTypes[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q8_0, DType::Q4_K,
                               DType::Q5_K, DType::Q6_K, DType::F16, DType::F32};

}  // namespace

uint64_t meminfo_bytes(const std::string& key) { return meminfo_bytes_impl(key); }

uint64_t proc_status_bytes(const std::string& key, int pid) {
  std::ifstream in("/proc/" + (pid == 0 ? std::string("self") : std::to_string(pid)) + "/status");
  for (std::string k; in >> k;) {
    if (k == key + ":") {
      uint64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
    std::string rest;
    std::getline(in, rest);
  }
  return 0;
}

namespace {

// Reads [begin, end) of fd in blocks of at most kBlock into buf; "" or the error.
std::string read_range(int fd, void* buf, size_t block, uint64_t begin, uint64_t end, const std::string& path,
                       size_t* done) {
  for (uint64_t off = begin; off < end;) {
    const ssize_t n = ::pread(fd, buf, static_cast<size_t>(std::min<uint64_t>(block, end - off)), static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return "cannot read " + path + " to time its disk: " + std::strerror(errno);
    if (n == 0) break;
    off += static_cast<uint64_t>(n);
    *done += static_cast<size_t>(n);
  }
  return {};
}

}  // namespace

double disk_read_bps(const std::string& path, size_t max_bytes, int rounds) {
  // 64 MiB requests, and the better of one reader and of four reading a quarter each: what a reader
  // with readahead (the streaming worker's MADV_POPULATE_READ) keeps in flight. One reader of 16 MiB
  // requests read this project's virtual disk at half of that (0.6 against 1.2-1.4 GB/s), below
  // what the worker streamed from it (1.0 GB/s). The same as bench/offload.sh's read speed.
  constexpr size_t kBlock = size_t(64) << 20;
  constexpr int kReaders = 4;
  bool direct = true;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
  if (fd < 0 && errno == EINVAL) {  // no O_DIRECT on this file system: drop the cached pages instead
    direct = false;
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  }
  if (fd < 0) throw std::runtime_error("cannot open " + path + " to time its disk: " + std::strerror(errno));
  struct stat st{};
  const uint64_t size = ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  const uint64_t n = std::min<uint64_t>(size, max_bytes) / 4096 * 4096;  // O_DIRECT: whole pages
  const size_t block = static_cast<size_t>(std::min<uint64_t>(kBlock, std::max<uint64_t>(n, 4096)));
  std::vector<std::unique_ptr<void, void (*)(void*)>> bufs;
  for (int i = 0; i < kReaders; ++i) {
    void* raw = std::aligned_alloc(4096, block);
    if (!raw) {
      ::close(fd);
      throw std::runtime_error("cannot allocate a read buffer for " + path);
    }
    bufs.emplace_back(raw, std::free);
  }
  size_t done = 0;
  std::string error;
  // One pass of `readers` threads over [0, n), a contiguous part each: bytes/s ("" error) or 0.
  auto pass = [&](int readers) {
    if (!direct) (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    std::vector<size_t> got(static_cast<size_t>(readers), 0);
    std::vector<std::string> errs(static_cast<size_t>(readers));
    const uint64_t part = (n / static_cast<uint64_t>(readers) + 4095) / 4096 * 4096;
    Timer t;
    std::vector<std::thread> ts;
    for (int r = 0; r < readers; ++r)
      ts.emplace_back([&, r] {
        const size_t i = static_cast<size_t>(r);
        const uint64_t b = std::min<uint64_t>(n, i * part), e = std::min<uint64_t>(n, b + part);
        errs[i] = read_range(fd, bufs[i].get(), block, b, e, path, &got[i]);
      });
    for (auto& th : ts) th.join();
    const double sec = t.seconds();
    for (const auto& e : errs)
      if (!e.empty() && error.empty()) error = e;
    size_t total = 0;
    for (size_t g : got) total += g;
    done = std::max(done, total);
    return sec > 0 ? static_cast<double>(total) / sec : 0.0;
  };
  std::vector<double> per_round;
  for (int round = 0; round < std::max(1, rounds) && error.empty(); ++round)
    per_round.push_back(std::max(pass(1), pass(kReaders)));
  if (!direct) (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  if (!error.empty()) throw std::runtime_error(error);
  if (done < (size_t(1) << 20))
    throw std::runtime_error(path + " holds " + std::to_string(done) + " bytes: too little to time a disk (give a file of "
                             "hundreds of MiB, e.g. the model)");
  // The median round: a virtual disk's speed swings between passes over a small file (0.8-1.5 GB/s
  // over 111 MiB here), and one pass at either end mispredicts a streaming worker by 30-40%.
  std::sort(per_round.begin(), per_round.end());
  return per_round[per_round.size() / 2];
}

uint64_t last_level_cache_bytes() {
  uint64_t best = 0;
#ifdef _SC_LEVEL3_CACHE_SIZE
  if (const long v = ::sysconf(_SC_LEVEL3_CACHE_SIZE); v > 0) best = static_cast<uint64_t>(v);
#endif
  // sysfs, for hosts where glibc does not know (Arm): the largest cache of cpu0, "491520K".
  for (int i = 0; i < 8; ++i) {
    std::ifstream f("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size");
    std::string v;
    if (!(f >> v) || v.empty()) continue;
    uint64_t n = 0;
    size_t at = 0;
    while (at < v.size() && v[at] >= '0' && v[at] <= '9') n = n * 10 + static_cast<uint64_t>(v[at++] - '0');
    const char unit = at < v.size() ? v[at] : ' ';
    n <<= unit == 'K' ? 10 : unit == 'M' ? 20 : unit == 'G' ? 30 : 0;
    best = std::max(best, n);
  }
  return best;
}

size_t probe_working_set_bytes(const HostProbeOptions& o, uint64_t llc_bytes, uint64_t mem_available_bytes,
                               bool plain_read) {
  // The startup profile (a worker's Hello, under ~1 s) keeps small fixed sizes: it sets shares,
  // which need ratios between hosts, not absolute rates.
  if (o.startup) return plain_read ? (64ull << 20) : (24ull << 20);
  const uint64_t floor = o.quick ? (plain_read ? 192ull << 20 : 40ull << 20) : (plain_read ? 512ull << 20 : 96ull << 20);
  // Beyond the last-level cache, or the rates are the cache's: this VM's host has a 480 MiB L3,
  // and 96 MiB matrices read 16 GB/s on 1 thread and 38 GB/s on 2 where a 7B decode gets 14 and 25.
  const uint64_t beyond = o.quick ? llc_bytes + llc_bytes / 4 : 2 * llc_bytes;
  // A matrix and the backend's repacked copy exist at once: at most a sixth of what is free each.
  const uint64_t cap = std::max(floor, std::min<uint64_t>(mem_available_bytes / 6, 2ull << 30));
  return static_cast<size_t>(std::min(std::max(floor, beyond), cap));
}

// The kernel rates of a probe (matvec per type, prefill FLOP/s, the per-call overhead, decode
// attention), measured through the Backend seam as a stage runs them: operands in the backend's
// memory (alloc, copy_in), matrices prepared (a device backend uploads them), and every timed call
// ending with a copy_out of one float, so an asynchronous device is timed to completion.
void probe_kernel_rates(Backend& be, const HostProbeOptions& o, size_t mat_bytes, ProbeResult& r) {
  const bool small = o.quick || o.startup;
  const int reps = small ? 3 : 7;
  auto to_backend = [&be](const std::vector<float>& v) {
    Buffer b = be.alloc(v.size() * sizeof(float));
    be.copy_in(b.data(), v.data(), v.size() * sizeof(float));
    return b;
  };
  float done = 0;
  auto finish = [&be, &done](const Buffer& out) { be.copy_out(&done, out.data(), sizeof(float)); };

  // Matvec (decode): weight bytes per second of a 1-token matmul, per type, 4096 columns.
  const int64_t cols = 4096;
  std::vector<float> xh(static_cast<size_t>(cols) * 128);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : xh) v = nd(rng);
  const Buffer x = to_backend(xh);
  std::vector<DType> types;
  if (!o.types.empty()) {
    for (uint32_t t : o.types)
      if (dtype_traits(t)) types.push_back(static_cast<DType>(t));
  } else if (o.startup) {
    types.assign(std::begin(kStartupTypes), std::end(kStartupTypes));
  } else {
    for (const auto& tr : kDTypes) types.push_back(tr.type);
  }
  // Weight bytes/s of one matvec over a matrix of `bytes`, each call reading the same matrix again
  // (as a decode reads the same weights every token).
  auto matvec_rate = [&](DType t, size_t bytes, int runs) {
    TestMatrix m = make_matrix(t, cols, bytes);
    prepare(be, m);
    const Buffer y = be.alloc(static_cast<size_t>(m.w.rows) * sizeof(float));
    const double s = time_median(runs, [&] {
      be.matmul(m.w, x.as<float>(), 1, cols, y.as<float>(), m.w.rows);
      finish(y);
    });
    return static_cast<double>(m.data.size()) / s;
  };
  r.matvec_bytes = mat_bytes;
  for (DType t : types) {
    if (!be.supports(Op::MatMul, t)) continue;
    r.matvec_Bps[static_cast<uint32_t>(t)] = matvec_rate(t, mat_bytes, o.startup ? 2 : reps);
    // The cache curve (a full probe of the host only: the planner prices CPU devices by it): the
    // sizes well under mat_bytes.
    if (small || be.device().kind != Device::Kind::Host) continue;
    for (const uint64_t b : kCacheCurveBytes)
      if (b * 3 / 2 <= mat_bytes)
        r.matvec_cached_Bps[static_cast<uint32_t>(t)].emplace_back(b, matvec_rate(t, b, reps));
  }

  // Matmul (prefill): FLOP/s of 128 tokens through a Q4_0 matrix (2 FLOPs per weight per token).
  if (be.supports(Op::MatMul, DType::Q4_0)) {
    TestMatrix m = make_matrix(DType::Q4_0, cols, row_bytes(DType::Q4_0, cols) * (o.startup ? 256 : 1024));
    prepare(be, m);
    const Buffer y = be.alloc(static_cast<size_t>(m.w.rows) * 128 * sizeof(float));
    const double s = time_median(small ? 2 : 3, [&] {
      be.matmul(m.w, x.as<float>(), 128, cols, y.as<float>(), m.w.rows);
      finish(y);
    });
    r.matmul_flops = 2.0 * static_cast<double>(m.w.rows) * static_cast<double>(cols) * 128.0 / s;
  }

  // Per-op overhead: a matvec so small (32 x 256 Q8_0, 8.5 KB) that its time is the call itself:
  // dispatch, activation quantization setup and thread-pool fork/join (a device: the launches).
  if (be.supports(Op::MatMul, DType::Q8_0)) {
    TestMatrix m = make_matrix(DType::Q8_0, 256, row_bytes(DType::Q8_0, 256) * 32);
    m.w.rows = 32;
    prepare(be, m);
    const Buffer y = be.alloc(32 * sizeof(float));
    const int calls = o.startup ? 500 : 2000;
    std::vector<double> s;
    for (int rep = 0; rep < reps + 1; ++rep) {
      Timer t;
      for (int i = 0; i < calls; ++i) be.matmul(m.w, x.as<float>(), 1, 256, y.as<float>(), 32);
      finish(y);
      if (rep > 0) s.push_back(t.seconds() / calls);
    }
    r.op_overhead_s = median(s);
  }

  // Decode attention: one query of 32 heads (8 KV heads, head_dim 64) over cached positions (f32).
  {
    const int64_t heads = 32, kv_heads = 8, hd = 64, n_kv = o.startup ? 1024 : 2048;
    std::vector<float> qh(static_cast<size_t>(heads * hd)), kh(static_cast<size_t>(n_kv * kv_heads * hd)), vh(kh.size());
    for (auto& e : qh) e = nd(rng);
    for (auto& e : kh) e = nd(rng);
    for (auto& e : vh) e = nd(rng);
    const Buffer q = to_backend(qh), k = to_backend(kh), v = to_backend(vh), out = to_backend(qh);
    AttentionShape sh{1, heads, kv_heads, hd, n_kv};
    const double s = time_median(reps, [&] {
      be.attention(q.as<float>(), heads * hd, k.as<float>(), v.as<float>(), kv_heads * hd, sh, 0.125f, out.as<float>(),
                   heads * hd);
      finish(out);
    });
    r.attn_Bps = static_cast<double>((kh.size() + vh.size()) * sizeof(float)) / s;
  }
}

ProbeResult probe_device(Backend& be, const HostProbeOptions& o, size_t mat_bytes) {
  ProbeResult r;
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  r.host = host;
  r.isa = be.name();
  r.threads = be.threads();
  r.hw_threads = r.threads;
  probe_kernel_rates(be, o, mat_bytes, r);
  return r;
}

ProbeResult probe_host(const HostProbeOptions& o) {
  const int hw = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int nt = o.threads <= 0 ? hw : o.threads;
  const bool small = o.quick || o.startup;
  const int reps = small ? 3 : 7;
  const uint64_t llc = last_level_cache_bytes(), avail = meminfo_bytes("MemAvailable");
  const size_t mat_bytes = probe_working_set_bytes(o, llc, avail, false);

  ProbeResult r;
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  r.host = host;
  r.cpu = cpu_model();
  r.threads = nt;
  r.hw_threads = hw;
  r.mem_total_bytes = meminfo_bytes("MemTotal");
  r.mem_available_bytes = std::min(meminfo_bytes("MemAvailable"), r.mem_total_bytes);

  auto be = make_cpu_backend({.exact = false, .isa = o.isa});
  be->set_threads(nt);
  r.isa = be->name();

  // The read bound as bench/membw measures it (engine/read_bound.h): best pattern, best run.
  ReadBoundOptions rb;
  rb.bytes = probe_working_set_bytes(o, llc, avail, true);
  rb.threads = nt;
  rb.reps = o.startup ? 3 : std::max(5, reps);
  if (small) rb.only = {read_patterns().back()};  // startup, --quick: one pattern, the last (AVX-512: 8 streams)
  r.read_bw_Bps = measure_read_bound(rb).best_Bps;

  probe_kernel_rates(*be, o, mat_bytes, r);

  if (!o.startup) r.loopback_latency_s = loopback_latency(o.quick ? 300 : 2000);
  return r;
}

const ProbeResult& cached_startup_profile(int threads, const std::vector<uint32_t>& types) {
  static std::mutex mu;
  static std::map<std::pair<int, std::vector<uint32_t>>, ProbeResult> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_pair(threads, types);
  auto it = cache.find(key);
  if (it == cache.end()) {
    HostProbeOptions o;
    o.threads = threads;
    o.startup = true;
    o.types = types;
    it = cache.emplace(key, probe_host(o)).first;
  }
  return it->second;
}

}  // namespace herd
