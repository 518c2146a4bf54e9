// The nccl-tests-style checks every Comm implementation must pass, run on one rank (a thread of a
// test, a process started by a test, an mpirun rank). Header-only and gtest-free so the helper
// executables use exactly the checks the in-process tests use. Each returns "" or the first failure.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/comm.h"

namespace herd::test {

// Sizes in floats: tiny, around the rank counts, around the ring's 16384-float chunk, up to 4 MiB.
inline std::vector<size_t> comm_check_sizes() {
  return {1, 2, 3, 7, 31, 32, 33, 1000, 4097, 16383, 16384, 16385, 65536, 100003, size_t{1} << 20};
}

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Rank r's non-integer input, element i: magnitudes from 1e-3 to 1e3 and both signs, so rounding
// depends on the order of the additions. Any rank can regenerate any rank's input.
inline float random_input(uint64_t seed, int rank, size_t i) {
  const uint64_t h = splitmix64(seed * 0x1000193u ^ (uint64_t(rank) << 48) ^ i);
  const float u = static_cast<float>(h >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;  // [-1, 1)
  static const float scale[] = {1e-3f, 1e-1f, 1.0f, 3.0f, 1e2f, 1e3f};
  return u * scale[(h >> 8) % 6];
}

struct CommCheckOptions {
  std::vector<size_t> sizes = comm_check_sizes();
  uint64_t seed = 1;
  int max_delay_ms = 0;  // a random sleep before each collective, so ranks arrive in varying order
};

namespace detail {
inline std::string where(const Comm& c, const char* what, size_t n, size_t i) {
  return c.name() + " rank " + std::to_string(c.rank()) + "/" + std::to_string(c.size()) + " " + what + " n=" +
         std::to_string(n) + " element " + std::to_string(i);
}
}  // namespace detail

inline std::string run_comm_checks(Comm& c, const CommCheckOptions& o = {}) {
  const int r = c.rank(), n_ranks = c.size();
  std::mt19937 delay_rng(static_cast<uint32_t>(o.seed * 31 + r));
  auto maybe_delay = [&] {
    if (o.max_delay_ms > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_rng() % (o.max_delay_ms + 1)));
  };
  for (size_t n : o.sizes) {
    // Exact sums: integers held in floats, every partial sum below 2^24.
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(r * 1000 + int(i % 997));
    maybe_delay();
    if (auto e = c.all_reduce_sum(x.data(), n); !e.empty()) return "all_reduce_sum n=" + std::to_string(n) + ": " + e;
    for (size_t i = 0; i < n; ++i) {
      const float want = static_cast<float>(1000 * n_ranks * (n_ranks - 1) / 2 + n_ranks * int(i % 997));
      if (x[i] != want)
        return detail::where(c, "all_reduce_sum", n, i) + ": " + std::to_string(x[i]) + " != " + std::to_string(want);
    }
    // All-gather: block b is rank b's input, element by element.
    std::vector<float> in(n), out(n * n_ranks, -1.0f);
    for (size_t i = 0; i < n; ++i) in[i] = static_cast<float>(r * 100000 + int(i % 9973));
    maybe_delay();
    if (auto e = c.all_gather(in.data(), n, out.data()); !e.empty()) return "all_gather n=" + std::to_string(n) + ": " + e;
    for (int b = 0; b < n_ranks; ++b)
      for (size_t i = 0; i < n; ++i)
        if (out[b * n + i] != static_cast<float>(b * 100000 + int(i % 9973)))
          return detail::where(c, "all_gather", n, b * n + i) + ": " + std::to_string(out[b * n + i]);
    // Broadcast from the first and the last rank.
    for (int root : {0, n_ranks - 1}) {
      std::vector<float> d(n, -1.0f);
      if (r == root)
        for (size_t i = 0; i < n; ++i) d[i] = static_cast<float>(root * 7 + int(i % 1009));
      maybe_delay();
      if (auto e = c.broadcast(d.data(), n, root); !e.empty()) return "broadcast n=" + std::to_string(n) + ": " + e;
      for (size_t i = 0; i < n; ++i)
        if (d[i] != static_cast<float>(root * 7 + int(i % 1009)))
          return detail::where(c, "broadcast", n, i) + " root " + std::to_string(root) + ": " + std::to_string(d[i]);
    }
    // Bit identity with non-integer data: the rank-order f32 sum, computed here from every rank's
    // regenerated input, must equal the collective's result bit for bit.
    std::vector<std::vector<float>> all(n_ranks, std::vector<float>(n));
    for (int p = 0; p < n_ranks; ++p)
      for (size_t i = 0; i < n; ++i) all[p][i] = random_input(o.seed + n, p, i);
    std::vector<const float*> parts;
    for (auto& a : all) parts.push_back(a.data());
    std::vector<float> want(n);
    rank_order_sum(parts.data(), n_ranks, n, want.data());
    std::vector<float> got = all[r];
    maybe_delay();
    if (auto e = c.all_reduce_sum(got.data(), n); !e.empty()) return "all_reduce_sum (random) n=" + std::to_string(n) + ": " + e;
    if (n && std::memcmp(got.data(), want.data(), n * sizeof(float)) != 0) {
      size_t i = 0;
      while (std::memcmp(&got[i], &want[i], sizeof(float)) == 0) ++i;
      return detail::where(c, "all_reduce_sum (random, bitwise)", n, i) + ": " + std::to_string(got[i]) +
             " != " + std::to_string(want[i]);
    }
  }
  return {};
}

}  // namespace herd::test
