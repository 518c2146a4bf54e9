// Sampler: greedy, filters on hand-computed examples, seeding, and a chi-square test that the
// draws follow softmax(logits / T).
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <stdexcept>
#include <vector>

namespace herd {
namespace {

// Only the draw: no top-k/top-p/min-p, no penalty.
SamplerParams plain(float temperature, uint64_t seed = 1234) {
  SamplerParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.repeat_penalty = 1.0f;
  p.seed = seed;
  return p;
}

std::set<int32_t> ids(const std::vector<TokenProb>& c) {
  std::set<int32_t> s;
  for (const auto& tp : c) s.insert(tp.id);
  return s;
}

// Logits whose temperature-1 softmax is exactly `probs` (up to float rounding).
std::vector<float> log_probs(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
  return l;
}

std::vector<double> softmax(const std::vector<float>& logits, double scale) {
  double mx = -1e300;
  for (float x : logits) mx = std::max(mx, scale * x);
  std::vector<double> p;
  double sum = 0;
  for (float x : logits) {
    p.push_back(std::exp(scale * x - mx));
    sum += p.back();
  }
  for (double& v : p) v /= sum;
  return p;
}

double chi_square(const std::vector<int>& counts, const std::vector<double>& probs, int n) {
  double chi2 = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double e = probs[i] * n;
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
  }
  return chi2;
}

// Upper 0.001 quantile of the chi-square distribution with 7 degrees of freedom (8 categories).
constexpr double kChi2Df7P001 = 24.322;

const std::vector<float> kEight = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, -1.0f, 0.3f, 1.5f};

TEST(Sampler, GreedyIsArgmaxLowestIdOnTies) {
  Sampler s(plain(0.0f), 6);
  const std::vector<float> a = {0.1f, 3.0f, -2.0f, 2.9f, 3.0f, 0.0f};
  EXPECT_EQ(s.sample(a.data()), 1);  // 1 and 4 tie at 3.0: lowest id
  const std::vector<float> b = {0.1f, 3.0f, -2.0f, 2.9f, 3.5f, 0.0f};
  EXPECT_EQ(s.sample(b.data()), 4);
  Sampler neg(plain(-1.0f), 3);  // any temperature <= 0 is greedy
  const std::vector<float> c = {-5.0f, -4.0f, -6.0f};
  EXPECT_EQ(neg.sample(c.data()), 1);
}

// Greedy sampling scans the logits in place; candidates() builds the full ranked list. They must
// pick the same token for any logits: ties, NaN, +-inf, penalised ids (also ones pushed to +inf).
TEST(Sampler, GreedyScanAgreesWithTheRankedCandidates) {
  std::mt19937 rng(7);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::max(), 1.0f, 0.0f};
  for (int trial = 0; trial < 2000; ++trial) {
    const int32_t n = 1 + static_cast<int32_t>(rng() % 300);
    SamplerParams p = plain(0.0f);
    if (trial % 2) {
      p.repeat_penalty = trial % 4 == 1 ? 1.3f : 0.5f;
      p.repeat_last_n = 1 + static_cast<int32_t>(rng() % 16);
    }
    Sampler s(p, n);
    for (int k = static_cast<int>(rng() % 24); k > 0; --k) s.accept(static_cast<int32_t>(rng() % n));
    std::vector<float> logits(static_cast<size_t>(n));
    for (auto& x : logits) {
      const uint32_t r = rng() % 10;
      x = r < 2 ? specials[rng() % 6] : static_cast<float>(static_cast<int>(rng() % 7) - 3);  // many ties
    }
    if (trial % 50 == 0) std::fill(logits.begin(), logits.end(), std::numeric_limits<float>::quiet_NaN());
    EXPECT_EQ(s.sample_with_draw(logits.data(), 0), s.candidates(logits.data()).front().id) << "trial " << trial;
  }
}

TEST(Sampler, TopK1IsGreedyAtAnyTemperature) {
  for (float t : {0.1f, 1.0f, 5.0f, 100.0f}) {
    SamplerParams p = plain(t, 99);
    p.top_k = 1;
    Sampler s(p, 8);
    for (int i = 0; i < 200; ++i) ASSERT_EQ(s.sample(kEight.data()), 4) << "temperature " << t;
  }
}

TEST(Sampler, TopKKeepsTheKLargest) {
  SamplerParams p = plain(1.0f);
  p.top_k = 3;
  Sampler s(p, 8);
  EXPECT_EQ(ids(s.candidates(kEight.data())), (std::set<int32_t>{4, 7, 0}));
}

std::vector<int32_t> run(uint64_t seed, int n) {
  SamplerParams p;  // llama.cpp-like defaults
  p.seed = seed;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.min_p = 0.0f;
  const int32_t n_vocab = 64;
  std::vector<float> logits(n_vocab);
  for (int32_t i = 0; i < n_vocab; ++i) logits[i] = static_cast<float>(std::sin(i * 0.7) * 2.0);
  Sampler s(p, n_vocab);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(s.sample(logits.data()));
  return out;
}

TEST(Sampler, SameSeedSameSequenceDifferentSeedDiffers) {
  const auto a = run(7, 1000);
  const auto b = run(7, 1000);
  const auto c = run(8, 1000);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_GT(std::set<int32_t>(a.begin(), a.end()).size(), 10u);  // really sampling, not stuck
}

TEST(Sampler, ResetRestartsTheStream) {
  SamplerParams p = plain(1.0f, 5);
  Sampler s(p, 8);
  std::vector<int32_t> first, second;
  for (int i = 0; i < 100; ++i) first.push_back(s.sample(kEight.data()));
  s.reset();
  for (int i = 0; i < 100; ++i) second.push_back(s.sample(kEight.data()));
  EXPECT_EQ(first, second);
}

std::vector<int> draw_counts(float temperature, int n, uint64_t seed) {
  Sampler s(plain(temperature, seed), 8);
  std::vector<int> counts(8, 0);
  for (int i = 0; i < n; ++i) counts[static_cast<size_t>(s.sample(kEight.data()))]++;
  return counts;
}

TEST(Sampler, ChiSquareTemperature1FollowsSoftmax) {
  const int n = 20000;
  const auto counts = draw_counts(1.0f, n, 2024);
  EXPECT_LT(chi_square(counts, softmax(kEight, 1.0), n), kChi2Df7P001);
  // The test has power: the same draws are far from softmax(2 * logits).
  EXPECT_GT(chi_square(counts, softmax(kEight, 2.0), n), 100 * kChi2Df7P001);
}

TEST(Sampler, ChiSquareTemperatureHalfFollowsSoftmaxOfDoubledLogits) {
  const int n = 20000;
  const auto counts = draw_counts(0.5f, n, 4242);
  EXPECT_LT(chi_square(counts, softmax(kEight, 2.0), n), kChi2Df7P001);
  EXPECT_GT(chi_square(counts, softmax(kEight, 1.0), n), 100 * kChi2Df7P001);
}

TEST(Sampler, CandidateProbabilitiesMatchSoftmax) {
  Sampler s(plain(0.5f), 8);
  const auto want = softmax(kEight, 2.0);
  const auto got = s.candidates(kEight.data());
  ASSERT_EQ(got.size(), 8u);
  for (size_t i = 1; i < got.size(); ++i) EXPECT_GE(got[i - 1].p, got[i].p);  // sorted
  for (const auto& tp : got) EXPECT_NEAR(tp.p, want[static_cast<size_t>(tp.id)], 1e-6);
}

// probabilities 0.1, 0.5, 0.15, 0.25 (ids shuffled so sorting matters)
const std::vector<double> kFour = {0.1, 0.5, 0.15, 0.25};

TEST(Sampler, TopPKeepsSmallestPrefixReachingP) {
  const auto logits = log_probs(kFour);
  SamplerParams p = plain(1.0f);
  p.top_p = 0.7f;  // 0.5 < 0.7 <= 0.5 + 0.25
  EXPECT_EQ(ids(Sampler(p, 4).candidates(logits.data())), (std::set<int32_t>{1, 3}));
  p.top_p = 0.8f;  // 0.75 < 0.8 <= 0.9
  EXPECT_EQ(ids(Sampler(p, 4).candidates(logits.data())), (std::set<int32_t>{1, 3, 2}));
  p.top_p = 0.4f;  // the best alone already reaches p
  EXPECT_EQ(ids(Sampler(p, 4).candidates(logits.data())), (std::set<int32_t>{1}));
  p.top_p = 1.0f;
  EXPECT_EQ(Sampler(p, 4).candidates(logits.data()).size(), 4u);

  // Survivors are renormalised: {0.5, 0.25} -> {2/3, 1/3}; sampling never leaves the set.
  p.top_p = 0.7f;
  Sampler s(p, 4);
  const auto c = s.candidates(logits.data());
  EXPECT_NEAR(c[0].p, 2.0 / 3.0, 1e-6);
  EXPECT_NEAR(c[1].p, 1.0 / 3.0, 1e-6);
  for (int i = 0; i < 2000; ++i) {
    const int32_t t = s.sample(logits.data());
    ASSERT_TRUE(t == 1 || t == 3) << t;
  }
}

TEST(Sampler, MinPDropsBelowFractionOfBest) {
  const auto logits = log_probs(kFour);
  SamplerParams p = plain(1.0f);
  p.min_p = 0.25f;  // threshold 0.125: keeps 0.5, 0.25, 0.15
  EXPECT_EQ(ids(Sampler(p, 4).candidates(logits.data())), (std::set<int32_t>{1, 3, 2}));
  p.min_p = 0.35f;  // threshold 0.175: keeps 0.5, 0.25
  EXPECT_EQ(ids(Sampler(p, 4).candidates(logits.data())), (std::set<int32_t>{1, 3}));
  p.min_p = 1.0f;  // only the best
  EXPECT_EQ(ids(Sampler(p, 4).candidates(logits.data())), (std::set<int32_t>{1}));
}

TEST(Sampler, MinPUsesTemperature1ProbabilitiesNotTempered) {
  // At T = 0.5 the tempered ratio of 0.15 to 0.5 is 0.09 < 0.25, but min-p runs before
  // temperature (llama.cpp's order), so 0.15 (ratio 0.3) survives.
  const auto logits = log_probs(kFour);
  SamplerParams p = plain(0.5f);
  p.min_p = 0.25f;
  EXPECT_EQ(ids(Sampler(p, 4).candidates(logits.data())), (std::set<int32_t>{1, 3, 2}));
}

TEST(Sampler, RepeatPenaltyChangesArgmax) {
  SamplerParams p = plain(0.0f);
  p.repeat_penalty = 1.5f;
  Sampler s(p, 4);
  const std::vector<float> pos = {2.0f, 1.8f, -1.0f, -3.0f};
  EXPECT_EQ(s.sample(pos.data()), 0);
  s.accept(0);  // 2.0 / 1.5 = 1.33 < 1.8
  EXPECT_EQ(s.sample(pos.data()), 1);
  s.reset();
  EXPECT_EQ(s.sample(pos.data()), 0);
}

TEST(Sampler, RepeatPenaltyMultipliesNegativeLogits) {
  // Dividing -0.5 by 1.5 would make it *more* likely (-0.33); multiplying gives -0.75 < -0.6.
  SamplerParams p = plain(0.0f);
  p.repeat_penalty = 1.5f;
  Sampler s(p, 2);
  const std::vector<float> neg = {-0.5f, -0.6f};
  s.accept(0);
  EXPECT_EQ(s.sample(neg.data()), 1);

  // Exact values through the candidate probabilities: logits {-1, -1}, token 0 penalised x2
  // gives {-2, -1}: p0 = 1 / (1 + e).
  SamplerParams q = plain(1.0f);
  q.repeat_penalty = 2.0f;
  Sampler t(q, 2);
  t.accept(0);
  const std::vector<float> eq = {-1.0f, -1.0f};
  const auto c = t.candidates(eq.data());
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[1].id, 0);
  EXPECT_NEAR(c[1].p, 1.0 / (1.0 + std::exp(1.0)), 1e-9);
}

TEST(Sampler, RepeatPenaltyOncePerDistinctTokenAndOnlyInWindow) {
  SamplerParams p = plain(0.0f);
  p.repeat_penalty = 1.5f;
  p.repeat_last_n = 3;
  Sampler s(p, 3);
  const std::vector<float> l = {2.0f, 1.0f, 0.0f};
  s.accept(0);
  s.accept(0);
  s.accept(0);  // penalised once: 1.33 > 1.0 (three times would be 0.59)
  EXPECT_EQ(s.sample(l.data()), 0);
  const std::vector<float> l2 = {1.4f, 1.0f, 0.0f};  // 1.4 / 1.5 = 0.93 < 1.0
  EXPECT_EQ(s.sample(l2.data()), 1);
  s.accept(2);
  s.accept(2);
  s.accept(2);  // token 0 has left the window of 3
  EXPECT_EQ(s.sample(l2.data()), 0);
}

TEST(Sampler, TopKSelectionMatchesAFullRankingWithTiesPenaltiesAndNonFinite) {
  // Brute force: rank every token (penalised, sanitised) by logit then id, keep k; the one-pass
  // heap selection must give the same ids in the same order with the same probabilities.
  std::mt19937 rng(7);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int trial = 0; trial < 200; ++trial) {
    const int32_t n = 1 + static_cast<int32_t>(rng() % 300);
    std::vector<float> l(static_cast<size_t>(n));
    for (float& x : l) {
      const unsigned r = rng() % 20;
      x = r == 0 ? nan : r == 1 ? -inf : r == 2 ? inf : static_cast<float>(static_cast<int>(rng() % 9) - 4) * 0.5f;
    }
    SamplerParams p = plain(1.0f);
    p.top_k = 1 + static_cast<int>(rng() % 12);
    p.repeat_penalty = 1.3f;
    p.frequency_penalty = 0.25f;
    p.repeat_last_n = 6;
    Sampler s(p, n);
    std::vector<int32_t> window;
    for (int i = 0; i < 6; ++i) window.push_back(static_cast<int32_t>(rng() % static_cast<unsigned>(n)));
    for (int32_t t : window) s.accept(t);
    // The expected ranking.
    std::vector<std::pair<float, int32_t>> all;
    for (int32_t i = 0; i < n; ++i) {
      float x = l[static_cast<size_t>(i)];
      if (std::isnan(x)) x = -inf;
      if (x == inf) x = std::numeric_limits<float>::max();
      const auto c = static_cast<int32_t>(std::count(window.begin(), window.end(), i));
      if (c > 0 && x != -inf) x = (x > 0 ? x / 1.3f : x * 1.3f) - static_cast<float>(c) * 0.25f;
      if (x != -inf) all.push_back({x, i});
    }
    std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
    const auto got = s.candidates(l.data());
    if (all.empty()) {
      ASSERT_EQ(got.size(), 1u);
      EXPECT_EQ(got[0].id, 0);
      continue;
    }
    const size_t k = std::min(all.size(), static_cast<size_t>(p.top_k));
    ASSERT_EQ(got.size(), k) << "trial " << trial;
    double sum = 0;
    for (size_t i = 0; i < k; ++i) sum += std::exp(static_cast<double>(all[i].first) - all[0].first);
    for (size_t i = 0; i < k; ++i) {
      EXPECT_EQ(got[i].id, all[i].second) << "trial " << trial << " rank " << i;
      EXPECT_NEAR(got[i].p, std::exp(static_cast<double>(all[i].first) - all[0].first) / sum, 1e-12);
    }
  }
}

TEST(Sampler, FrequencyAndPresencePenaltiesSubtractPerOccurrence) {
  // Token 0 occurs twice in the window, token 1 once: logit -= count * 0.5 + 0.25.
  SamplerParams p = plain(1.0f);
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  Sampler s(p, 3);
  s.accept(0);
  s.accept(1);
  s.accept(0);
  const std::vector<float> l = {1.0f, 1.0f, 1.0f};
  const std::vector<double> want = softmax({1.0f - 1.25f, 1.0f - 0.75f, 1.0f}, 1.0);
  for (const TokenProb& tp : s.candidates(l.data())) EXPECT_NEAR(tp.p, want[static_cast<size_t>(tp.id)], 1e-6);

  // The greedy scan applies the same penalties: 2.0 - 1.25 = 0.75 < 1.0 - 0.75 + ... token 2 (0.9) wins.
  p.temperature = 0.0f;
  Sampler g(p, 3);
  g.accept(0);
  g.accept(1);
  g.accept(0);
  const std::vector<float> l2 = {2.0f, 1.6f, 0.9f};
  EXPECT_EQ(g.sample(l2.data()), 2);  // 0.75, 0.85, 0.9
  // A negative presence penalty encourages the seen tokens instead.
  p.presence_penalty = -1.0f;
  p.frequency_penalty = 0.0f;
  Sampler e(p, 3);
  e.accept(1);
  EXPECT_EQ(e.sample(l2.data()), 1);  // 2.0 vs 2.6
}

TEST(Sampler, NonFiniteLogitsDoNotCrash) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  Sampler greedy(plain(0.0f), 4);
  const std::vector<float> a = {nan, 1.0f, nan, 0.5f};
  EXPECT_EQ(greedy.sample(a.data()), 1);
  const std::vector<float> all_bad = {nan, -inf, nan, -inf};
  EXPECT_EQ(greedy.sample(all_bad.data()), 0);

  Sampler s(plain(1.0f), 4);
  EXPECT_EQ(s.sample(all_bad.data()), 0);
  for (int i = 0; i < 200; ++i) {
    const int32_t t = s.sample(a.data());
    ASSERT_TRUE(t == 1 || t == 3) << t;  // NaN is never drawn
  }
  const std::vector<float> pinf = {0.0f, inf, 3.0f, inf};
  for (int i = 0; i < 200; ++i) {
    const int32_t t = s.sample(pinf.data());
    ASSERT_TRUE(t == 1 || t == 3) << t;  // +inf dominates
  }
}

TEST(Sampler, AcceptRejectsOutOfRangeToken) {
  Sampler s(plain(1.0f), 4);
  EXPECT_THROW(s.accept(4), std::out_of_range);
  EXPECT_THROW(s.accept(-1), std::out_of_range);
}

TEST(Sampler, InvalidParamsThrow) {
  auto bad = [](auto mutate) {
    SamplerParams p;
    mutate(p);
    EXPECT_THROW(Sampler(p, 10), std::invalid_argument);
  };
  bad([](SamplerParams& p) { p.top_p = 0.0f; });
  bad([](SamplerParams& p) { p.top_p = 1.01f; });
  bad([](SamplerParams& p) { p.top_p = std::numeric_limits<float>::quiet_NaN(); });
  bad([](SamplerParams& p) { p.min_p = -0.1f; });
  bad([](SamplerParams& p) { p.min_p = 1.5f; });
  bad([](SamplerParams& p) { p.top_k = -1; });
  bad([](SamplerParams& p) { p.repeat_penalty = 0.0f; });
  bad([](SamplerParams& p) { p.repeat_penalty = -1.0f; });
  bad([](SamplerParams& p) { p.repeat_last_n = -1; });
  bad([](SamplerParams& p) { p.frequency_penalty = 2.5f; });
  bad([](SamplerParams& p) { p.presence_penalty = -2.01f; });
  bad([](SamplerParams& p) { p.presence_penalty = std::numeric_limits<float>::quiet_NaN(); });
  bad([](SamplerParams& p) { p.temperature = std::numeric_limits<float>::quiet_NaN(); });
  EXPECT_THROW(Sampler(SamplerParams{}, 0), std::invalid_argument);

  try {
    SamplerParams p;
    p.top_p = 2.0f;
    Sampler s(p, 10);
    FAIL() << "no throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("top_p"), std::string::npos) << e.what();
  }
  // Boundaries are valid.
  SamplerParams ok;
  ok.top_p = 1.0f;
  ok.min_p = 0.0f;
  ok.top_k = 0;
  EXPECT_NO_THROW(Sampler(ok, 10));
  ok.min_p = 1.0f;
  EXPECT_NO_THROW(Sampler(ok, 10));
}

}  // namespace
}  // namespace herd
