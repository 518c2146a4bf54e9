// Token sampler: turns one row of logits into a token id, as llama.cpp's default chain does.
//
// Chain (in this order, as llama.cpp's default):
//   penalties (repeat, frequency, presence) -> top-k -> top-p -> min-p -> temperature -> draw from the softmax.
// top-p and min-p look at the temperature-1 probabilities of the candidates left by the
// previous step; temperature only reshapes the distribution that is finally drawn from.
// temperature <= 0 means greedy: the argmax (lowest id on ties) after the repeat penalty.
//
// Non-finite logits: NaN counts as -inf (never chosen); +inf counts as the largest finite
// float (so several +inf logits share the mass equally). When every logit is -inf/NaN the
// sampler returns token 0, deterministically, instead of failing: a broken row must not
// abort the coordinator, and the caller can detect the case with the returned candidates().
//
// Randomness: std::mt19937_64 seeded with `seed`; the uniform draw is built from the top
// 53 bits (no std::uniform_real_distribution, whose output differs between standard
// libraries), so the same seed gives the same tokens on every platform.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace herd {

struct SamplerParams {
  // Fixed default so an unseeded run is reproducible; the CLI may pass a random seed.
  static constexpr uint64_t kDefaultSeed = 0x9E3779B97F4A7C15ull;

  float temperature = 0.8f;    // <= 0: greedy
  int top_k = 40;              // 0: disabled
  float top_p = 0.95f;         // in (0, 1]; 1: disabled
  float min_p = 0.05f;         // in [0, 1]; 0: disabled
  float repeat_penalty = 1.0f; // > 0; 1: disabled
  // OpenAI's penalties over the same window: logit -= count * frequency_penalty + presence_penalty
  // for every token that occurs `count` > 0 times in it (after the repeat penalty). In [-2, 2]; 0: off.
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  int repeat_last_n = 64;      // >= 0: how many recent accepted tokens are penalised
  uint64_t seed = kDefaultSeed;
};

// Throws std::invalid_argument naming the offending field and its allowed range.
void validate(const SamplerParams& p);

struct TokenProb {
  int32_t id;
  double p;  // probability in the distribution that sample() draws from
};

class Sampler {
 public:
  // Throws std::invalid_argument for invalid params or n_vocab <= 0.
  Sampler(SamplerParams params, int32_t n_vocab);

  // logits: [n_vocab]. Returns the chosen token id in [0, n_vocab).
  // Same as sample_with_draw(logits, next_draw()).
  int32_t sample(const float* logits);

  // Split form of sample() for a remote last pipeline stage: the coordinator keeps the RNG and
  // calls next_draw() (advances the stream exactly as sample() would: one 64-bit draw per
  // non-greedy step, none when greedy; returns 0 then); the stage that holds the logits calls
  // sample_with_draw() on a Sampler with the same params and recent() history. Same seed, same
  // tokens, local or distributed.
  uint64_t next_draw();
  int32_t sample_with_draw(const float* logits, uint64_t draw) const;

  // The accepted tokens in the repeat-penalty window, oldest first (at most repeat_last_n).
  std::vector<int32_t> recent() const;

  // The candidates that survive the chain, sorted by probability (descending, ties by id),
  // with the probabilities sample() would draw from. Greedy: one candidate with p = 1.
  // Does not advance the RNG. All logits -inf/NaN: {0, 1.0}.
  std::vector<TokenProb> candidates(const float* logits) const;

  // Records a generated (or prompt) token for the repeat penalty.
  // Throws std::out_of_range when token is not in [0, n_vocab).
  void accept(int32_t token);

  // Forgets the history and restarts the RNG from the seed.
  void reset();

  const SamplerParams& params() const { return params_; }
  int32_t n_vocab() const { return n_vocab_; }

 private:
  // Greedy without materialising n_vocab candidates: the same token candidates() would rank first.
  int32_t greedy(const float* logits) const;
  bool penalises() const;
  // The distinct ids of the window, ascending, with how often each occurs (empty when no penalty is on).
  std::vector<std::pair<int32_t, int32_t>> window_counts() const;
  float penalised(float x, int32_t count) const;

  SamplerParams params_;
  int32_t n_vocab_;
  std::vector<int32_t> history_;  // [<= repeat_last_n] ring buffer of the last accepted tokens
  size_t history_next_ = 0;       // ring position of the next write once history_ is full
  std::mt19937_64 rng_;
};

}  // namespace herd
