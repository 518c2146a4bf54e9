#include "engine/shard_plan.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace herd {

std::vector<double> same_speed_weights(std::span<const double> rates, double tolerance) {
  for (double r : rates)
    if (!std::isfinite(r) || r <= 0) throw std::invalid_argument("rate " + std::to_string(r) + " is not finite and positive");
  std::vector<size_t> order(rates.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return rates[a] < rates[b]; });
  std::vector<double> out(rates.begin(), rates.end());
  for (size_t b = 0; b < order.size();) {
    size_t e = b + 1;
    while (e < order.size() && rates[order[e]] <= rates[order[b]] * (1.0 + tolerance)) ++e;
    double sum = 0;
    for (size_t i = b; i < e; ++i) sum += rates[order[i]];
    for (size_t i = b; i < e; ++i) out[order[i]] = sum / static_cast<double>(e - b);
    b = e;
  }
  return out;
}

std::vector<ShardRange> proportional_ranges(int64_t n_units, std::span<const double> weights, int64_t min_each) {
  const int64_t n = static_cast<int64_t>(weights.size());
  if (n == 0) throw std::invalid_argument("shard plan: no ranks");
  double total = 0;
  for (size_t r = 0; r < weights.size(); ++r) {
    if (!std::isfinite(weights[r]) || weights[r] <= 0)
      throw std::invalid_argument("shard plan: rank " + std::to_string(r) + "'s weight " + std::to_string(weights[r]) +
                                  " is not a positive number");
    total += weights[r];
  }
  if (n_units < min_each * n)
    throw std::invalid_argument("shard plan: " + std::to_string(n_units) + " units cannot give " + std::to_string(n) +
                                " ranks at least " + std::to_string(min_each) + " each");
  std::vector<double> quota(static_cast<size_t>(n));
  std::vector<int64_t> count(static_cast<size_t>(n));
  int64_t given = 0;
  for (int64_t r = 0; r < n; ++r) {
    quota[r] = static_cast<double>(n_units) * weights[r] / total;
    count[r] = static_cast<int64_t>(std::floor(quota[r]));
    given += count[r];
  }
  // Largest remainders first; the loop picks the lowest rank among equal remainders. Rounding can
  // leave the floors' sum a unit off either way; both directions are handled.
  while (given < n_units) {
    int64_t best = 0;
    for (int64_t r = 1; r < n; ++r)
      if (quota[r] - count[r] > quota[best] - count[best]) best = r;
    ++count[best];
    ++given;
  }
  while (given > n_units) {
    int64_t best = -1;
    for (int64_t r = 0; r < n; ++r)
      if (count[r] > 0 && (best < 0 || count[r] - quota[r] > count[best] - quota[best])) best = r;
    --count[best];
    --given;
  }
  for (int64_t r = 0; r < n; ++r)
    while (count[r] < min_each) {
      int64_t donor = -1;
      for (int64_t d = 0; d < n; ++d)
        if (count[d] > min_each && (donor < 0 || count[d] - quota[d] > count[donor] - quota[donor])) donor = d;
      --count[donor];  // exists: n_units >= min_each * n
      ++count[r];
    }
  std::vector<ShardRange> out;
  int64_t at = 0;
  for (int64_t r = 0; r < n; ++r) {
    out.push_back({at, at + count[r]});
    at += count[r];
  }
  return out;
}

ShardPlan plan_shards(const ShardShape& s, std::span<const double> weights) {
  const std::string ranks = std::to_string(weights.size()) + " ranks";
  if (s.n_head_kv <= 0 || s.n_head % s.n_head_kv != 0)
    throw std::invalid_argument("tensor parallelism: " + std::to_string(s.n_head) + " query heads are not whole groups of " +
                                std::to_string(s.n_head_kv) + " KV heads");
  if (s.kv_unit <= 0 || s.n_head_kv % s.kv_unit != 0)
    throw std::invalid_argument("tensor parallelism: " + std::to_string(s.n_head_kv) + " KV heads are not whole units of " +
                                std::to_string(s.kv_unit));
  const int64_t kv_units = s.n_head_kv / s.kv_unit;
  if (static_cast<int64_t>(weights.size()) > kv_units) {
    std::string why = "the model has only " + std::to_string(s.n_head_kv) + " KV heads (each rank needs a whole KV-head group";
    if (s.kv_unit > 1)
      why += ", and attn_output's quant blocks span " + std::to_string(s.kv_unit) + " groups: " +
             std::to_string(kv_units) + " units";
    throw std::invalid_argument("tensor parallelism over " + ranks + ": " + why + "; at most " +
                                std::to_string(kv_units) + " ranks)");
  }
  if (s.ffn_block <= 0 || s.n_ff % s.ffn_block != 0)
    throw std::invalid_argument("tensor parallelism: n_ff " + std::to_string(s.n_ff) + " is not whole blocks of " +
                                std::to_string(s.ffn_block));
  const int64_t ffn_blocks = s.n_ff / s.ffn_block;
  if (static_cast<int64_t>(weights.size()) > ffn_blocks)
    throw std::invalid_argument("tensor parallelism over " + ranks + ": the feed-forward has only " +
                                std::to_string(ffn_blocks) + " quant blocks of " + std::to_string(s.ffn_block) +
                                " rows");
  ShardPlan p;
  p.kv_heads = proportional_ranges(kv_units, weights, 1);
  for (ShardRange& r : p.kv_heads) r = {r.begin * s.kv_unit, r.end * s.kv_unit};
  p.ffn_rows = proportional_ranges(ffn_blocks, weights, 1);
  for (ShardRange& r : p.ffn_rows) r = {r.begin * s.ffn_block, r.end * s.ffn_block};
  p.vocab = proportional_ranges(s.n_vocab, weights, 1);
  return p;
}

}  // namespace herd
