#include "engine/read_bound.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <thread>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace herd {
namespace {

// Each pattern sums n 64-bit words at p (n a multiple of 64: 512 bytes) as integers.
using SumFn = uint64_t (*)(const uint64_t* p, size_t n);

template <int A>
uint64_t sum_u64(const uint64_t* p, size_t n) {
  uint64_t acc[A] = {};
  for (size_t i = 0; i < n; i += A)
    for (int k = 0; k < A; ++k) acc[k] += p[i + static_cast<size_t>(k)];
  uint64_t s = 0;
  for (int k = 0; k < A; ++k) s += acc[k];
  return s;
}

#if defined(__x86_64__)
template <int A>
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t* p, size_t n) {
  __m256i acc[A];
  for (int k = 0; k < A; ++k) acc[k] = _mm256_setzero_si256();
  for (size_t i = 0; i < n; i += 4 * A)
    for (int k = 0; k < A; ++k)
      acc[k] = _mm256_add_epi64(acc[k], _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 4 * k)));
  for (int k = 1; k < A; ++k) acc[0] = _mm256_add_epi64(acc[0], acc[k]);
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[0]);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

template <int A>
__attribute__((target("avx512f"))) uint64_t sum_avx512(const uint64_t* p, size_t n) {
  __m512i acc[A];
  for (int k = 0; k < A; ++k) acc[k] = _mm512_setzero_si512();
  for (size_t i = 0; i < n; i += 8 * A)
    for (int k = 0; k < A; ++k) acc[k] = _mm512_add_epi64(acc[k], _mm512_load_si512(p + i + 8 * k));
  for (int k = 1; k < A; ++k) acc[0] = _mm512_add_epi64(acc[0], acc[k]);
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, acc[0]);
  uint64_t s = 0;
  for (uint64_t v : lanes) s += v;
  return s;
}
#endif

#if defined(__x86_64__)
// S streams at once: the slice cut into S parts read side by side, one 64-byte vector of each per
// step. A matvec reads many rows at once and gets more of the memory system's parallelism than
// one sequential stream (on this project's VM a 7B decode on 1 thread read ~14 GB/s where one
// stream of AVX-512 loads read ~12).
template <int S>
__attribute__((target("avx512f"))) uint64_t sum_avx512_streams(const uint64_t* p, size_t n) {
  const size_t part = n / S / 8 * 8;  // whole vectors per stream
  __m512i acc[S];
  for (int k = 0; k < S; ++k) acc[k] = _mm512_setzero_si512();
  for (size_t i = 0; i < part; i += 8)
    for (int k = 0; k < S; ++k) acc[k] = _mm512_add_epi64(acc[k], _mm512_load_si512(p + static_cast<size_t>(k) * part + i));
  for (int k = 1; k < S; ++k) acc[0] = _mm512_add_epi64(acc[0], acc[k]);
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, acc[0]);
  uint64_t s = 0;
  for (uint64_t v : lanes) s += v;
  for (size_t i = part * S; i < n; ++i) s += p[i];  // the tail the parts left
  return s;
}
#endif

struct Pattern {
  const char* name;
  SumFn fn;
  bool (*supported)();
};

bool always() { return true; }
#if defined(__x86_64__)
bool has_avx2() { return __builtin_cpu_supports("avx2"); }
bool has_avx512() { return __builtin_cpu_supports("avx512f"); }
#endif

const Pattern kPatterns[] = {
    {"u64x4", sum_u64<4>, always},
    {"u64x8", sum_u64<8>, always},
#if defined(__x86_64__)
    {"avx2x4", sum_avx2<4>, has_avx2},
    {"avx2x8", sum_avx2<8>, has_avx2},
    {"avx512x4", sum_avx512<4>, has_avx512},
    {"avx512x8", sum_avx512<8>, has_avx512},
    {"avx512s4", sum_avx512_streams<4>, has_avx512},
    {"avx512s8", sum_avx512_streams<8>, has_avx512},
#endif
};

// The CPUs this process may run on, in order (for pinning thread k to the k-th).
std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

struct FreeDeleter {
  void operator()(uint64_t* p) const { std::free(p); }
};

}  // namespace

std::vector<std::string> read_patterns() {
  std::vector<std::string> names;
  for (const Pattern& p : kPatterns)
    if (p.supported()) names.emplace_back(p.name);
  return names;
}

ReadBound measure_read_bound(const ReadBoundOptions& o) {
  if (o.bytes == 0 || o.threads <= 0 || o.reps <= 0)
    throw std::invalid_argument("read bound: bytes, threads and reps must be positive");
  for (const std::string& n : o.only)
    if (std::none_of(std::begin(kPatterns), std::end(kPatterns), [&](const Pattern& p) { return n == p.name; }))
      throw std::invalid_argument("read bound: unknown pattern '" + n + "'");
  // Slices of whole 512-byte blocks (every pattern's stride divides 64 words).
  const size_t threads = static_cast<size_t>(o.threads);
  const size_t blocks = std::max<size_t>(threads, o.bytes / 512);
  const size_t words = blocks * 64;
  std::unique_ptr<uint64_t, FreeDeleter> buf(static_cast<uint64_t*>(std::aligned_alloc(64, words * sizeof(uint64_t))));
  if (!buf) throw std::runtime_error("read bound: cannot allocate " + std::to_string(words * 8) + " bytes");
  uint64_t* p = buf.get();
  for (size_t i = 0; i < words; ++i) p[i] = i * 0x9E3779B97F4A7C15ull;  // touches every page
  uint64_t expect = 0;
  for (size_t i = 0; i < words; ++i) expect += p[i];
  const std::vector<int> cpus = allowed_cpus();

  ReadBound r;
  for (const Pattern& pat : kPatterns) {
    if (!pat.supported()) continue;
    if (!o.only.empty() && std::find(o.only.begin(), o.only.end(), pat.name) == o.only.end()) continue;
    std::vector<uint64_t> part(threads * 8);  // one cache line per thread
    auto run = [&] {
      std::vector<std::thread> pool;
      auto work = [&](size_t k) {
        if (o.pin && !cpus.empty()) {
          cpu_set_t one;
          CPU_ZERO(&one);
          CPU_SET(cpus[k % cpus.size()], &one);
          (void)::pthread_setaffinity_np(pthread_self(), sizeof one, &one);
        }
        const size_t lo = blocks * k / threads * 64, hi = blocks * (k + 1) / threads * 64;
        part[k * 8] = pat.fn(p + lo, hi - lo);
      };
      const auto t0 = std::chrono::steady_clock::now();
      for (size_t k = 1; k < threads; ++k) pool.emplace_back(work, k);
      // The caller's thread works too, on its own pinning: restored afterwards.
      cpu_set_t before;
      const bool saved = ::sched_getaffinity(0, sizeof before, &before) == 0;
      work(0);
      for (auto& t : pool) t.join();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (saved) (void)::sched_setaffinity(0, sizeof before, &before);
      uint64_t sum = 0;
      for (size_t k = 0; k < threads; ++k) sum += part[k * 8];
      if (sum != expect) throw std::runtime_error(std::string("read bound: pattern ") + pat.name + " summed wrong");
      return static_cast<double>(words * sizeof(uint64_t)) / s;
    };
    run();  // untimed: page-table and cache warm-up
    std::vector<double> bps;
    for (int i = 0; i < o.reps; ++i) bps.push_back(run());
    std::sort(bps.begin(), bps.end());
    r.patterns.push_back({pat.name, bps.back(), bps[bps.size() / 2]});
    if (bps.back() > r.best_Bps) {
      r.best_Bps = bps.back();
      r.best = pat.name;
    }
  }
  return r;
}

}  // namespace herd
