#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace herd {

namespace {

struct Candidate {
  int32_t id;
  float logit;
};

// Higher logit first; the lower id wins ties so every step is deterministic.
bool before(const Candidate& a, const Candidate& b) {
  if (a.logit != b.logit) return a.logit > b.logit;
  return a.id < b.id;
}

[[noreturn]] void bad_param(const std::string& what) {
  throw std::invalid_argument("sampler: " + what);
}

}  // namespace

void validate(const SamplerParams& p) {
  if (std::isnan(p.temperature)) bad_param("temperature is NaN (use <= 0 for greedy)");
  if (p.top_k < 0) bad_param("top_k = " + std::to_string(p.top_k) + " must be >= 0 (0 disables it)");
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    bad_param("top_p = " + std::to_string(p.top_p) + " must be in (0, 1] (1 disables it)");
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f))
    bad_param("min_p = " + std::to_string(p.min_p) + " must be in [0, 1] (0 disables it)");
  if (!(p.repeat_penalty > 0.0f) || !std::isfinite(p.repeat_penalty))
    bad_param("repeat_penalty = " + std::to_string(p.repeat_penalty) + " must be finite and > 0 (1 disables it)");
  for (const auto& [name, v] : {std::pair{"frequency_penalty", p.frequency_penalty},
                                 std::pair{"presence_penalty", p.presence_penalty}})
    if (!(v >= -2.0f && v <= 2.0f)) bad_param(std::string(name) + " = " + std::to_string(v) + " must be in [-2, 2] (0 disables it)");
  if (p.repeat_last_n < 0)
    bad_param("repeat_last_n = " + std::to_string(p.repeat_last_n) + " must be >= 0 (0 disables the penalty)");
}

Sampler::Sampler(SamplerParams params, int32_t n_vocab) : params_(params), n_vocab_(n_vocab), rng_(params.seed) {
  validate(params_);
  if (n_vocab <= 0) bad_param("n_vocab = " + std::to_string(n_vocab) + " must be > 0");
  history_.reserve(static_cast<size_t>(params_.repeat_last_n));
}

void Sampler::accept(int32_t token) {
  if (token < 0 || token >= n_vocab_)
    throw std::out_of_range("sampler: accepted token " + std::to_string(token) + " outside [0, " +
                            std::to_string(n_vocab_) + ")");
  const size_t window = static_cast<size_t>(params_.repeat_last_n);
  if (window == 0) return;
  if (history_.size() < window) {
    history_.push_back(token);
  } else {
    history_[history_next_] = token;
    history_next_ = (history_next_ + 1) % window;
  }
}

void Sampler::reset() {
  history_.clear();
  history_next_ = 0;
  rng_.seed(params_.seed);
}

std::vector<TokenProb> Sampler::candidates(const float* logits) const {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  // Each logit sanitised (NaN is never chosen; +inf becomes the largest float so the softmax stays
  // finite) and penalised once per distinct token in the window (as llama.cpp's penalties
  // sampler), scanned in id order: the window's ids are sorted, so a merge finds them.
  const auto counts = window_counts();
  auto scan = [&](auto&& visit) {
    auto sanitised = [&](float x) {
      if (std::isnan(x)) return kNegInf;
      return x == std::numeric_limits<float>::infinity() ? std::numeric_limits<float>::max() : x;
    };
    size_t w = 0;
    for (int32_t i = 0; i < n_vocab_; ++i) {
      float x = sanitised(logits[i]);
      if (w < counts.size() && counts[w].first == i) {
        if (x != kNegInf) x = penalised(x, counts[w].second);
        ++w;
      }
      if (x != kNegInf) visit(Candidate{i, x});  // candidates with non-zero probability only
    }
  };

  std::vector<Candidate> cand;
  const bool greedy_only = params_.temperature <= 0.0f;
  const auto k = static_cast<size_t>(params_.top_k);
  if (!greedy_only && k > 0 && k < static_cast<size_t>(n_vocab_)) {
    // top-k in one pass over the vocabulary: a heap of the k best so far (its front is the worst
    // of them), so most logits cost one comparison; the same k survivors as a full ranking.
    cand.reserve(k);
    scan([&](const Candidate& c) {
      if (cand.size() < k) {
        cand.push_back(c);
        std::push_heap(cand.begin(), cand.end(), before);
      } else if (before(c, cand.front())) {
        std::pop_heap(cand.begin(), cand.end(), before);
        cand.back() = c;
        std::push_heap(cand.begin(), cand.end(), before);
      }
    });
  } else {
    cand.reserve(static_cast<size_t>(n_vocab_));
    scan([&](const Candidate& c) { cand.push_back(c); });
  }
  if (cand.empty()) return {{0, 1.0}};  // documented: every logit -inf/NaN -> token 0

  if (greedy_only) {
    auto best = std::min_element(cand.begin(), cand.end(), before);
    return {{best->id, 1.0}};
  }
  // The survivors (top-k's, or all when it is off), ranked.
  std::sort(cand.begin(), cand.end(), before);

  // Temperature-1 weights relative to the best candidate: w_i = exp(l_i - l_max) in (0, 1].
  const double l_max = cand.front().logit;
  std::vector<double> w(cand.size());  // [n_candidates]
  double total = 0.0;
  for (size_t i = 0; i < cand.size(); ++i) {
    w[i] = std::exp(static_cast<double>(cand[i].logit) - l_max);
    total += w[i];
  }

  // top-p: the smallest prefix whose probability reaches p (at least one candidate).
  if (params_.top_p < 1.0f) {
    const double target = static_cast<double>(params_.top_p) * total;
    double cum = 0.0;
    size_t keep = cand.size();
    for (size_t i = 0; i < cand.size(); ++i) {
      cum += w[i];
      if (cum >= target) {
        keep = i + 1;
        break;
      }
    }
    cand.resize(keep);
    w.resize(keep);
  }

  // min-p: drop candidates with p < min_p * p_max, i.e. w_i < min_p (w of the best is 1).
  if (params_.min_p > 0.0f) {
    size_t keep = 1;
    while (keep < cand.size() && w[keep] >= static_cast<double>(params_.min_p)) ++keep;
    cand.resize(keep);
  }

  // Temperature, then the softmax that sample() draws from.
  const double inv_t = 1.0 / static_cast<double>(params_.temperature);
  std::vector<TokenProb> out(cand.size());
  double sum = 0.0;
  for (size_t i = 0; i < cand.size(); ++i) {
    const double p = std::exp((static_cast<double>(cand[i].logit) - l_max) * inv_t);
    out[i] = {cand[i].id, p};
    sum += p;
  }
  for (auto& tp : out) tp.p /= sum;  // sum >= 1: the best candidate contributes exp(0)
  return out;
}

bool Sampler::penalises() const {
  return !history_.empty() &&
         (params_.repeat_penalty != 1.0f || params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f);
}

std::vector<std::pair<int32_t, int32_t>> Sampler::window_counts() const {
  std::vector<std::pair<int32_t, int32_t>> out;
  if (!penalises()) return out;
  std::vector<int32_t> ids = history_;
  std::sort(ids.begin(), ids.end());
  for (int32_t id : ids) {
    if (!out.empty() && out.back().first == id) ++out.back().second;
    else out.push_back({id, 1});
  }
  return out;
}

float Sampler::penalised(float x, int32_t count) const {
  x = x > 0.0f ? x / params_.repeat_penalty : x * params_.repeat_penalty;
  return x - static_cast<float>(count) * params_.frequency_penalty - params_.presence_penalty;
}

int32_t Sampler::sample(const float* logits) { return sample_with_draw(logits, next_draw()); }

uint64_t Sampler::next_draw() {
  // One draw per non-greedy step, even with a single candidate, so the RNG stream does not
  // depend on how many candidates the filters left.
  return params_.temperature <= 0.0f ? 0 : rng_();
}

std::vector<int32_t> Sampler::recent() const {
  std::vector<int32_t> out;
  out.reserve(history_.size());
  for (size_t i = 0; i < history_.size(); ++i) out.push_back(history_[(history_next_ + i) % history_.size()]);
  return out;
}

int32_t Sampler::greedy(const float* logits) const {
  // candidates()' rules, scanned in place (it copies the logits and builds n_vocab candidates,
  // tens of µs per token for a 32k vocabulary): NaN never wins, +inf counts as the largest float,
  // the penalised tokens take their penalised value, the first (lowest) id wins a tie, and 0 is
  // the answer when nothing is finite or +inf.
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  auto sanitised = [](float x) {
    if (std::isnan(x)) return kNegInf;
    return x == std::numeric_limits<float>::infinity() ? std::numeric_limits<float>::max() : x;
  };
  const auto counts = window_counts();  // distinct ids of the window, ascending (at most repeat_last_n)
  int32_t best = -1;
  float best_x = kNegInf;
  auto offer = [&](int32_t id, float x) {  // ids arrive in ascending order
    if (x != kNegInf && (best < 0 || x > best_x)) {
      best = id;
      best_x = x;
    }
  };
  int32_t i = 0;
  for (const auto& [id, count] : counts) {
    for (; i < id; ++i) offer(i, sanitised(logits[i]));
    const float x = sanitised(logits[id]);
    offer(id, x == kNegInf ? x : penalised(x, count));
    i = id + 1;
  }
  for (; i < n_vocab_; ++i) offer(i, sanitised(logits[i]));
  return best < 0 ? 0 : best;
}

int32_t Sampler::sample_with_draw(const float* logits, uint64_t draw) const {
  if (params_.temperature <= 0.0f) return greedy(logits);
  std::vector<TokenProb> cand = candidates(logits);

  // Top 53 bits -> double in [0, 1).
  const double u = static_cast<double>(draw >> 11) * 0x1.0p-53;
  double cum = 0.0;
  for (const TokenProb& tp : cand) {
    cum += tp.p;
    if (u < cum) return tp.id;
  }
  return cand.back().id;  // u landed in the rounding slack above the final cumulative sum
}

}  // namespace herd
