// The `optimal` strategy: dynamic programming over contiguous layer ranges and device order.
//
// Objective (Prediction::token_s): max(latency / k, bottleneck), where latency is one token's
// trip through every stage and hop plus the coordinator round trip and bottleneck is the
// busiest stage or link (k = --parallel sequences in flight). With k = 1 this is the sum of
// stage and hop times, which the DP minimises directly. With k > 1, a bound B on every stage's
// and link's busy time turns it into "minimise latency subject to busy <= B"; the optimum is
// min over B of max(g(B) / k, B) where g(B) is that constrained minimum. g never increases with
// B, so a binary search over the finitely many candidate B (every feasible stage time and link
// busy time) finds the crossing; both neighbours of the crossing are evaluated.
//
// DP (<= kOptimalExactDevices devices): dp[S][d][l] = least latency so far with the devices of
// set S used, d last, layers [0, l) placed. "Arrive" at device d at layer l over a hop from the
// previous device, then let d take [l, l') for every l' its memory allows. Every order of every
// subset is covered, so the result is exact. For more devices, the same DP runs over a fixed
// order (each device used or skipped) for a few orders, and the best is kept.
#include <algorithm>
#include <cstdio>
#include <functional>
#include <limits>
#include <numeric>

#include "partition/strategies.h"
#include "partition/tp_model.h"

namespace herd::partition {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Tables {
  std::vector<std::vector<int>> units;         // [n] the devices of each unit: one, or a tensor-parallel group
  int n = 0;
  int64_t L = 0;
  std::vector<DeviceCost> cost;                // [n]
  std::vector<std::vector<int64_t>> max_end;   // [n][L] last end (exclusive) device d can hold from l
  std::vector<double> hop, busy;               // [n * n] decode time and busy time of the hop a -> b
  std::vector<double> ctl_in, ctl_out;         // [n] coordinator -> d, d -> coordinator
  double stage(int d, int64_t l, int64_t e) const { return cost[static_cast<size_t>(d)].range_s(l, e, L); }
};

// units: each a device, or a group of devices run as one tensor-parallel stage.
Tables make_tables(const ModelShape& m, const Cluster& c, const PlanOptions& o, std::vector<std::vector<int>> units) {
  Tables t;
  t.units = std::move(units);
  t.n = static_cast<int>(t.units.size());
  t.L = m.n_layers();
  const double hb = hop_bytes_per_token(m, o);
  for (int u = 0; u < t.n; ++u) {
    const std::vector<int>& devs = t.units[static_cast<size_t>(u)];
    std::vector<int64_t> ends(static_cast<size_t>(t.L));
    if (devs.size() == 1) {
      const DeviceProfile& dev = c.devices[static_cast<size_t>(devs[0])];
      t.cost.push_back(device_cost(m, dev, o));
      for (int64_t l = 0; l < t.L; ++l) ends[static_cast<size_t>(l)] = l + max_layers_from(m, dev, l, o);
    } else {
      const TpGroup g = make_tp_group(m, c, devs);
      t.cost.push_back(tp_group_cost(m, c, g, o));
      for (int64_t l = 0; l < t.L; ++l) ends[static_cast<size_t>(l)] = l + tp_max_layers_from(m, c, g, l, o);
    }
    t.max_end.push_back(std::move(ends));
    t.ctl_in.push_back(control_in_s(c, devs));
    t.ctl_out.push_back(control_s(c.link(devs[0], -1)));
  }
  t.hop.assign(static_cast<size_t>(t.n * t.n), 0.0);
  t.busy.assign(static_cast<size_t>(t.n * t.n), 0.0);
  for (int a = 0; a < t.n; ++a)
    for (int b = 0; b < t.n; ++b) {
      const HopCost h = group_hop(c, t.units[static_cast<size_t>(a)][0], t.units[static_cast<size_t>(b)], hb);
      t.hop[static_cast<size_t>(a * t.n + b)] = h.decode_s;
      t.busy[static_cast<size_t>(a * t.n + b)] = h.busy_s;
    }
  return t;
}

std::vector<std::vector<int>> singletons(int n) {
  std::vector<std::vector<int>> u;
  for (int d = 0; d < n; ++d) u.push_back({d});
  return u;
}

struct Result {
  double latency = kInf;
  std::vector<StagePlan> stages;
};

// The DP over device subsets in every order. `bound`: busy-time limit per stage and link.
// `with[d]` (optional out): the least latency of any complete plan that uses device d.
Result dp_subsets(const Tables& t, double bound, std::vector<double>* with) {
  const int n = t.n;
  const int64_t L = t.L;
  const size_t nS = size_t{1} << n, W = static_cast<size_t>(L + 1);
  auto at = [&](uint32_t S, int d, int64_t l) { return (static_cast<size_t>(S) * n + d) * W + static_cast<size_t>(l); };
  std::vector<double> dp(nS * n * W, kInf), arrive(nS * n * W, kInf);
  std::vector<int8_t> prev(nS * n * W, -1);     // arrive: previous device (-1: from the coordinator)
  std::vector<int32_t> from(nS * n * W, -1);    // dp: start layer of the last stage
  for (uint32_t S = 1; S < nS; ++S)
    for (int d = 0; d < n; ++d) {
      if (!(S & (1u << d))) continue;
      const uint32_t R = S ^ (1u << d);
      if (R == 0) {
        arrive[at(S, d, 0)] = t.ctl_in[static_cast<size_t>(d)];
      } else {
        for (int p = 0; p < n; ++p) {
          if (!(R & (1u << p)) || t.busy[static_cast<size_t>(p * n + d)] > bound) continue;
          const double h = t.hop[static_cast<size_t>(p * n + d)];
          for (int64_t l = 1; l < L; ++l) {
            const double v = dp[at(R, p, l)] + h;
            if (v < arrive[at(S, d, l)]) arrive[at(S, d, l)] = v, prev[at(S, d, l)] = static_cast<int8_t>(p);
          }
        }
      }
      for (int64_t l = 0; l < L; ++l) {
        const double a = arrive[at(S, d, l)];
        if (a == kInf) continue;
        const int64_t last = t.max_end[static_cast<size_t>(d)][static_cast<size_t>(l)];
        for (int64_t e = l + 1; e <= last; ++e) {
          const double s = t.stage(d, l, e);
          // Not `break`: a stage's time need not grow with e (a longer streaming stage may keep a
          // layer resident that a shorter one must stream: the embedding table leaves memory).
          if (s > bound) continue;
          if (a + s < dp[at(S, d, e)]) dp[at(S, d, e)] = a + s, from[at(S, d, e)] = static_cast<int32_t>(l);
        }
      }
    }
  Result best;
  uint32_t bS = 0;
  int bd = -1;
  if (with) with->assign(static_cast<size_t>(n), kInf);
  for (uint32_t S = 1; S < nS; ++S)
    for (int d = 0; d < n; ++d) {
      if (!(S & (1u << d))) continue;
      const double v = dp[at(S, d, L)] + t.ctl_out[static_cast<size_t>(d)];
      if (v < best.latency) best.latency = v, bS = S, bd = d;
      if (with)
        for (int x = 0; x < n; ++x)
          if (S & (1u << x)) (*with)[static_cast<size_t>(x)] = std::min((*with)[static_cast<size_t>(x)], v);
    }
  if (bd < 0) return best;
  int64_t e = L;
  uint32_t S = bS;
  int d = bd;
  while (true) {
    const int64_t l = from[at(S, d, e)];
    best.stages.push_back(make_stage(d, l, e));
    const int p = prev[at(S, d, l)];
    if (p < 0) break;
    S ^= 1u << d;
    d = p;
    e = l;
  }
  std::reverse(best.stages.begin(), best.stages.end());
  return best;
}

// The same DP over one fixed order: each device in turn is used (for a range) or skipped.
Result dp_ordered(const Tables& t, const std::vector<int>& order, double bound) {
  const int n = t.n;
  const int64_t L = t.L;
  const size_t W = static_cast<size_t>(L + 1);
  std::vector<double> dp(static_cast<size_t>(n) * W, kInf);  // by position in `order`
  std::vector<int32_t> from(static_cast<size_t>(n) * W, -1), prev(static_cast<size_t>(n) * W, -1);
  for (int i = 0; i < n; ++i) {
    const int d = order[static_cast<size_t>(i)];
    std::vector<double> arrive(W, kInf);
    std::vector<int32_t> arrive_prev(W, -1);
    arrive[0] = t.ctl_in[static_cast<size_t>(d)];
    for (int j = 0; j < i; ++j) {
      const int p = order[static_cast<size_t>(j)];
      if (t.busy[static_cast<size_t>(p * n + d)] > bound) continue;
      for (int64_t l = 1; l < L; ++l) {
        const double v = dp[static_cast<size_t>(j) * W + static_cast<size_t>(l)] + t.hop[static_cast<size_t>(p * n + d)];
        if (v < arrive[static_cast<size_t>(l)]) arrive[static_cast<size_t>(l)] = v, arrive_prev[static_cast<size_t>(l)] = j;
      }
    }
    for (int64_t l = 0; l < L; ++l) {
      if (arrive[static_cast<size_t>(l)] == kInf) continue;
      for (int64_t e = l + 1; e <= t.max_end[static_cast<size_t>(d)][static_cast<size_t>(l)]; ++e) {
        const double s = t.stage(d, l, e);
        if (s > bound) continue;  // (as above)
        const size_t k = static_cast<size_t>(i) * W + static_cast<size_t>(e);
        if (arrive[static_cast<size_t>(l)] + s < dp[k])
          dp[k] = arrive[static_cast<size_t>(l)] + s, from[k] = static_cast<int32_t>(l), prev[k] = arrive_prev[static_cast<size_t>(l)];
      }
    }
  }
  Result best;
  int bi = -1;
  for (int i = 0; i < n; ++i) {
    const double v = dp[static_cast<size_t>(i) * W + static_cast<size_t>(L)] + t.ctl_out[static_cast<size_t>(order[static_cast<size_t>(i)])];
    if (v < best.latency) best.latency = v, bi = i;
  }
  if (bi < 0) return best;
  int64_t e = L;
  for (int i = bi; i >= 0;) {
    const size_t k = static_cast<size_t>(i) * W + static_cast<size_t>(e);
    const int64_t l = from[k];
    best.stages.push_back(make_stage(order[static_cast<size_t>(i)], l, e));
    i = prev[k];
    e = l;
  }
  std::reverse(best.stages.begin(), best.stages.end());
  return best;
}

std::vector<std::vector<int>> orders_to_try(const Cluster& c) {
  const int n = static_cast<int>(c.devices.size());
  std::vector<int> given(static_cast<size_t>(n));
  std::iota(given.begin(), given.end(), 0);
  std::vector<int> by_bw = given;
  std::stable_sort(by_bw.begin(), by_bw.end(), [&](int a, int b) {
    return c.devices[static_cast<size_t>(a)].bandwidth_Bps > c.devices[static_cast<size_t>(b)].bandwidth_Bps;
  });
  // Host-grouped: hosts in order of their fastest device, devices of a host together.
  std::vector<int> by_host;
  for (int d : by_bw) {
    if (std::find(by_host.begin(), by_host.end(), d) != by_host.end()) continue;
    for (int e : by_bw)
      if (c.devices[static_cast<size_t>(e)].host == c.devices[static_cast<size_t>(d)].host) by_host.push_back(e);
  }
  return {given, by_bw, by_host};
}

Result solve(const Tables& t, const Cluster& c, const PlanOptions& o, double bound, std::vector<double>* with) {
  if (o.keep_order) {
    std::vector<int> given(static_cast<size_t>(t.n));
    std::iota(given.begin(), given.end(), 0);
    return dp_ordered(t, given, bound);
  }
  if (t.n <= kOptimalExactDevices) return dp_subsets(t, bound, with);
  Result best;
  for (const auto& order : orders_to_try(c)) {
    Result r = dp_ordered(t, order, bound);
    if (r.latency < best.latency) best = std::move(r);
  }
  return best;
}

std::string ms(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f ms", s * 1e3);
  return buf;
}

using Solver = std::function<Result(double bound, std::vector<double>* with)>;

std::vector<StagePlan> unit_stages(const Tables& t, const Result& r) {
  std::vector<StagePlan> out;
  for (const auto& s : r.stages) out.push_back(make_tp_stage(t.units[static_cast<size_t>(s.device)], s.first, s.end));
  return out;
}

// The least token_s over the plans `solve` finds on t (see the top of this file); empty stages
// when nothing fits. *bound_used: the pipeline bound mattered (k > 1).
Plan best_plan(const ModelShape& m, const Cluster& c, const PlanOptions& o, const Tables& t, const Solver& solve,
               std::vector<double>* with, bool* bound_used) {
  const double k = static_cast<double>(std::max<int64_t>(o.n_parallel, 1));
  Plan best;
  best.strategy = "optimal";
  Result r = solve(kInf, with);
  if (r.stages.empty()) return best;
  best.stages = unit_stages(t, r);
  finish_plan(best, m, c, o);
  if (k > 1 && best.pred.bottleneck_s * k > best.pred.latency_s) {
    // The pipeline bound matters: binary search the busy-time bound (see the top of this file).
    std::vector<double> cand;
    for (int d = 0; d < t.n; ++d)
      for (int64_t l = 0; l < t.L; ++l)
        for (int64_t e = l + 1; e <= t.max_end[static_cast<size_t>(d)][static_cast<size_t>(l)]; ++e) cand.push_back(t.stage(d, l, e));
    for (double b : t.busy) cand.push_back(b);
    std::sort(cand.begin(), cand.end());
    cand.erase(std::unique(cand.begin(), cand.end()), cand.end());
    auto eval = [&](size_t i) {
      Result x = solve(cand[i], nullptr);
      if (x.stages.empty()) return kInf;
      Plan p;
      p.strategy = "optimal";
      p.stages = unit_stages(t, x);
      finish_plan(p, m, c, o);
      if (p.pred.token_s < best.pred.token_s) best = p;
      return x.latency;
    };
    size_t lo = 0, hi = cand.size() - 1;
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      if (cand[mid] * k >= eval(mid)) hi = mid;
      else lo = mid + 1;
    }
    eval(lo);
    if (lo > 0) eval(lo - 1);
    if (bound_used) *bound_used = true;
  }
  return best;
}

std::string group_names(const Cluster& c, const std::vector<std::vector<int>>& groups) {
  std::string s;
  for (const auto& g : groups) {
    s += s.empty() ? "{" : " {";
    for (size_t i = 0; i < g.size(); ++i) s += (i ? "," : "") + c.devices[static_cast<size_t>(g[i])].name;
    s += "}";
  }
  return s;
}

}  // namespace

std::vector<std::vector<std::vector<int>>> tp_groupings(int n, int max_tp) {
  std::vector<std::vector<std::vector<int>>> out;
  auto add = [&](const std::vector<int>& sizes) {
    int biggest = 0;
    for (int z : sizes) biggest = std::max(biggest, z);
    if (biggest < 2 || biggest > max_tp) return;
    std::vector<std::vector<int>> g;
    int at = 0;
    for (int z : sizes) {
      std::vector<int> grp(static_cast<size_t>(z));
      std::iota(grp.begin(), grp.end(), at);
      at += z;
      g.push_back(std::move(grp));
    }
    if (std::find(out.begin(), out.end(), g) == out.end()) out.push_back(std::move(g));
  };
  for (int t = 2; t <= std::min(n, max_tp); ++t) {  // blocks of t, the n mod t left over as a last block
    std::vector<int> sizes(static_cast<size_t>(n / t), t);
    if (n % t) sizes.push_back(n % t);
    add(sizes);
  }
  for (int g = 1; g < n; ++g) {  // g blocks as equal as possible, the larger first
    std::vector<int> sizes;
    for (int i = 0; i < g; ++i) sizes.push_back(n / g + (i < n % g ? 1 : 0));
    add(sizes);
  }
  return out;
}

Plan plan_tp_grouping(const ModelShape& m, const Cluster& c, const PlanOptions& o, const std::vector<std::vector<int>>& groups) {
  const Tables t = make_tables(m, c, o, groups);  // std::invalid_argument when a group cannot be split
  std::vector<int> order(static_cast<size_t>(t.n));
  std::iota(order.begin(), order.end(), 0);
  bool bound_used = false;
  Plan p = best_plan(m, c, o, t, [&](double bound, std::vector<double>*) { return dp_ordered(t, order, bound); }, nullptr,
                     &bound_used);
  if (p.stages.empty()) {
    // What each group holds (from layer 1: neither the embedding nor the output), against the layers.
    std::string holds;
    int64_t total = 0;
    for (int u = 0; u < t.n; ++u) {
      const int64_t from = std::min<int64_t>(1, t.L - 1);
      const int64_t k = t.max_end[static_cast<size_t>(u)][static_cast<size_t>(from)] - from;
      total += k;
      holds += (u ? ", " : "") + group_names(c, {t.units[static_cast<size_t>(u)]}) + " " + std::to_string(k);
    }
    throw PlanError("optimal over " + group_names(c, groups) + " does not fit:\n  the groups hold at most " + holds +
                    " layers (together " + std::to_string(total) + ") of " + std::to_string(t.L) +
                    " (from layer 1, without the embedding or output; in a group each rank holds its share of every layer)");
  }
  p.notes.push_back("groups of consecutive devices " + group_names(c, groups) +
                    " as pipeline stages in that order (each used or skipped); a group of several is tensor-parallel");
  if (bound_used)
    p.notes.push_back("objective: pipeline of " + std::to_string(o.n_parallel) +
                      " sequences, max(latency / k, busiest stage or link)");
  return p;
}

Plan plan_tp(const ModelShape& m, const Cluster& c, const PlanOptions& o, int tp) {
  const int n = static_cast<int>(c.devices.size());
  if (tp < 1 || n % tp != 0)
    throw PlanError("--tp " + std::to_string(tp) + ": " + std::to_string(n) + " devices do not form groups of " +
                    std::to_string(tp));
  std::vector<std::vector<int>> groups;
  for (int d = 0; d < n; d += tp) {
    std::vector<int> g(static_cast<size_t>(tp));
    std::iota(g.begin(), g.end(), d);
    groups.push_back(std::move(g));
  }
  try {
    Plan p = plan_tp_grouping(m, c, o, groups);
    p.strategy = "tp " + std::to_string(tp);
    return p;
  } catch (const std::invalid_argument& e) {
    throw PlanError(e.what());
  }
}

std::string grouping_name(const std::vector<std::vector<int>>& groups) {
  bool uniform = true;
  for (const auto& g : groups) uniform &= g.size() == groups.front().size();
  if (uniform)
    return "tp " + std::to_string(groups.front().size()) + (groups.size() > 1 ? " x pp " + std::to_string(groups.size()) : "");
  std::string s = "tp ";
  for (size_t i = 0; i < groups.size(); ++i) s += (i ? "+" : "") + std::to_string(groups[i].size());
  return s;
}

std::string plan_shape(const Plan& p, const Cluster& c) {
  std::vector<std::vector<int>> groups;
  bool uniform = true;
  for (const auto& s : p.stages) {
    groups.push_back(s.ranks.empty() ? std::vector<int>{s.device} : s.ranks);
    uniform &= s.tp() == p.stages.front().tp();
  }
  const std::string n = std::to_string(p.stages.size());
  std::string shape;
  if (p.tp() == 1) {
    shape = "pp " + n;
  } else if (uniform) {
    shape = "tp " + std::to_string(p.tp()) + (p.stages.size() > 1 ? " x pp " + n : "");
  } else {
    shape = "tp ";
    for (size_t i = 0; i < p.stages.size(); ++i) shape += (i ? "+" : "") + std::to_string(p.stages[i].tp());
    shape += " (pp " + n + ")";
  }
  return shape + ": stages " + group_names(c, groups);
}

Plan plan_optimal(const ModelShape& m, const Cluster& c, const PlanOptions& o) {
  const Tables t = make_tables(m, c, o, singletons(static_cast<int>(c.devices.size())));
  std::vector<double> with;
  bool bound_used = false;
  Plan best = best_plan(m, c, o, t, [&](double bound, std::vector<double>* w) { return solve(t, c, o, bound, w); }, &with,
                        &bound_used);
  // Tensor parallelism: groups of consecutive devices (tp_groupings), each grouping's best split.
  const int max_tp = static_cast<int>(std::min<int64_t>(o.max_tp, max_tp_ranks(m)));
  int tried = 0;
  if (max_tp >= 2)
    for (const auto& groups : tp_groupings(static_cast<int>(c.devices.size()), max_tp)) {
      Plan p;
      try {
        p = plan_tp_grouping(m, c, o, groups);
      } catch (const PlanError&) {
        continue;
      } catch (const std::invalid_argument&) {
        continue;
      }
      ++tried;
      if (best.stages.empty() || p.pred.token_s < best.pred.token_s) {
        p.strategy = "optimal";
        p.notes.clear();
        best = std::move(p);
        bound_used = false;
      }
    }
  if (best.stages.empty()) throw PlanError(shortfall_report(m, c, o, "optimal"));
  if (bound_used)
    best.notes.push_back("objective: pipeline of " + std::to_string(o.n_parallel) +
                         " sequences, max(latency / k, busiest stage or link)");
  if (max_tp >= 2)
    best.notes.push_back("shape: " + plan_shape(best, c) + " (of the pipeline over every device order and " +
                         std::to_string(tried) + " tensor-parallel groupings that fit)");
  // Say why each unused device is out.
  for (int d = 0; d < t.n; ++d) {
    bool used = false;
    for (const auto& s : best.stages) {
      used |= s.device == d;
      for (int r : s.ranks) used |= r == d;
    }
    if (used) continue;
    bool holds_one = false;
    for (int64_t l = 0; l < t.L; ++l) holds_one |= t.max_end[static_cast<size_t>(d)][static_cast<size_t>(l)] > l;
    std::string why;
    if (!holds_one) {
      why = "cannot hold a single layer (" + gb(stage_memory(m, c.devices[static_cast<size_t>(d)], 1, std::min<int64_t>(2, t.L), o).total()) +
            " needed, " + gb(c.devices[static_cast<size_t>(d)].free_bytes) + " free)";
    } else if (best.tp() == 1 && !with.empty() && with[static_cast<size_t>(d)] < kInf) {
      why = "left out: faster without it (best latency using it " + ms(with[static_cast<size_t>(d)]) + " vs " +
            ms(best.pred.latency_s) + " per token)";
    } else {
      why = "left out: faster without it";
    }
    best.excluded.erase(std::remove_if(best.excluded.begin(), best.excluded.end(), [&](const Excluded& e) { return e.device == d; }),
                        best.excluded.end());
    best.excluded.push_back({d, why});
  }
  std::sort(best.excluded.begin(), best.excluded.end(), [](const Excluded& a, const Excluded& b) { return a.device < b.device; });
  if (o.keep_order)
    best.notes.push_back("devices kept in the given order (each used or skipped)");
  else if (t.n > kOptimalExactDevices)
    best.notes.push_back("more than " + std::to_string(kOptimalExactDevices) +
                         " devices: searched the given, bandwidth and host-grouped orders, not every order");
  return best;
}

}  // namespace herd::partition
