// The shard plan of tensor parallelism: which part of every layer each rank of a group holds.
// A pure function of the model's shape and the ranks' relative speeds, so it can be tested
// exhaustively and every rank (or, later, every worker process) computes the same plan.
//
//   attention: a contiguous range of KV-head groups per rank (a group = one KV head and the
//              n_head / n_head_kv query heads that read it), at least one each, so each rank
//              keeps whole GQA groups and the KV cache of its heads only; in units of kv_unit
//              groups, so that attn_output's columns are cut at whole quant blocks;
//   FFN:       a contiguous range of the n_ff rows of gate/up (= columns of down) in whole quant
//              blocks of ffn_down's type (its columns are cut there), at least one block each;
//   output:    a contiguous range of vocabulary rows (logits), at least one each.
// Shares are proportional to the weights (largest-remainder rounding, docs/architecture.md §3
// "Tensor parallelism").
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace herd {

struct ShardRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const ShardRange&) const = default;
};

struct ShardShape {
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  // KV heads per attention unit: the fewest whole groups whose attn_output columns are whole quant
  // blocks (1 unless a block is wider than a group: a K-quant's 256 columns over groups of 64).
  int64_t kv_unit = 1;
  int64_t n_ff = 0;
  int64_t ffn_block = 1;  // values per quant block of ffn_down's type (its columns are the n_ff)
  int64_t n_vocab = 0;
};

struct ShardPlan {
  std::vector<ShardRange> kv_heads;  // per rank: KV heads [begin, end) (query heads x n_head / n_head_kv)
  std::vector<ShardRange> ffn_rows;  // per rank: rows of gate/up, columns of down (multiples of ffn_block)
  std::vector<ShardRange> vocab;     // per rank: rows of the output matrix
  int64_t n_ranks() const { return static_cast<int64_t>(kv_heads.size()); }
};

// n_units split into weights.size() contiguous ranges in rank order, rank r getting about
// n_units * w_r / sum(w): floor of each quota, then one more unit to the ranks with the largest
// remainders (ties: the lower rank). Then every rank below min_each takes units, one at a time,
// from the rank whose count most exceeds its quota (ties: the lower rank) among those above
// min_each. Throws std::invalid_argument naming the numbers when n_units < min_each * ranks, or a
// weight is not finite and positive, or there are no ranks.
std::vector<ShardRange> proportional_ranges(int64_t n_units, std::span<const double> weights, int64_t min_each);

// Measured speeds differ between identical hosts by the measurement's noise (two idle workers
// on one host measured 52:48), and shares cut from that noise make the busier rank the slower one
// on every layer. Rates within `tolerance` of each other are taken as equal: sorted, each run of
// rates whose largest is at most (1 + tolerance) x its smallest gets the run's mean; the rest keep
// theirs. A real difference below the tolerance then costs its group at most tolerance / 2 of
// its speed. Throws std::invalid_argument when a rate is not finite and positive.
constexpr double kSameSpeedTolerance = 0.10;
std::vector<double> same_speed_weights(std::span<const double> rates, double tolerance = kSameSpeedTolerance);

// The plan for one group. weights: one per rank, the ranks' relative speeds (e.g. measured
// profiles); equal weights split evenly. Throws std::invalid_argument naming the numbers when a
// rank could not get one attention unit (KV-head group), one FFN block or one vocabulary row.
ShardPlan plan_shards(const ShardShape& s, std::span<const double> weights);

}  // namespace herd
