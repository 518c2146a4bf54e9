// Batch invariance, the check shared by the single-process and the cluster tests: sequences with
// different prompts, lengths and start steps run together through one Pipeline (a batch per step
// holding one sequence's whole prompt beside the others' decode tokens) must get, row for row,
// the logits each gets alone (its prompt as one batch, then one token at a time).
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "engine/pipeline.h"

namespace herd::test {

struct SeqScript {
  std::vector<int32_t> prompt;  // evaluated as one run; its last row's logits are kept
  std::vector<int32_t> decode;  // then one token per step, each row's logits kept
  int join_step = 0;            // the together-run step at which the prompt goes in
};

using SeqLogits = std::vector<std::vector<float>>;  // one logits row per prompt end / decode token

// Scripts of n sequences: token ids from a seeded LCG below n_vocab, prompts of 1..9 tokens, each
// joining a step later than the previous.
inline std::vector<SeqScript> make_scripts(int n, int32_t n_vocab, uint32_t seed = 7) {
  std::vector<SeqScript> out;
  uint32_t x = seed;
  auto next = [&] {
    x = x * 1664525u + 1013904223u;
    return static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(n_vocab));
  };
  for (int s = 0; s < n; ++s) {
    SeqScript sc;
    const int n_prompt = 1 + (3 * s + 5) % 9, n_decode = 4 + s;
    for (int i = 0; i < n_prompt; ++i) sc.prompt.push_back(next());
    for (int i = 0; i < n_decode; ++i) sc.decode.push_back(next());
    sc.join_step = s;
    out.push_back(sc);
  }
  return out;
}

inline SeqLogits run_alone(Pipeline& p, const SeqScript& sc, int32_t seq = 0) {
  const int64_t V = p.config().n_vocab;
  SeqLogits rows;
  Batch b;
  b.add_run(sc.prompt.data(), static_cast<int64_t>(sc.prompt.size()), 0, seq, false);
  rows.push_back(p.eval(b).logits);
  int32_t pos = static_cast<int32_t>(sc.prompt.size());
  for (int32_t t : sc.decode) {
    b.clear();
    b.add(t, pos++, seq, true);
    rows.push_back(p.eval(b).logits);
  }
  for (auto& r : rows) r.resize(static_cast<size_t>(V));
  return rows;
}

// Micro-batches: the sequences in `groups` interleaved groups (s % groups), each group's step its
// own batch; every group's step is submitted before any is polled, so on a cluster several
// batches are in flight at once. Rows as run_together.
inline std::vector<SeqLogits> run_in_flight(Pipeline& p, const std::vector<SeqScript>& scripts, int groups) {
  const int64_t V = p.config().n_vocab;
  std::vector<SeqLogits> out(scripts.size());
  std::vector<size_t> next(scripts.size(), 0);
  for (int step = 0;; ++step) {
    std::vector<std::pair<uint64_t, std::vector<int>>> sent;  // ticket, output row -> sequence
    bool pending = false;
    for (int g = 0; g < groups; ++g) {
      Batch b;
      std::vector<int> owner;
      for (size_t s = static_cast<size_t>(g); s < scripts.size(); s += static_cast<size_t>(groups)) {
        const SeqScript& sc = scripts[s];
        const auto seq = static_cast<int32_t>(s);
        if (step == sc.join_step) {
          b.add_run(sc.prompt.data(), static_cast<int64_t>(sc.prompt.size()), 0, seq, false);
          owner.push_back(static_cast<int>(s));
        } else if (step > sc.join_step && next[s] < sc.decode.size()) {
          b.add(sc.decode[next[s]], static_cast<int32_t>(sc.prompt.size() + next[s]), seq, true);
          ++next[s];
          owner.push_back(static_cast<int>(s));
        }
        pending = pending || step < sc.join_step || next[s] < sc.decode.size();
      }
      if (!b.empty()) sent.push_back({p.submit(b), owner});
    }
    for (const auto& [ticket, owner] : sent) {
      std::optional<BatchOutput> o;
      while (!(o = p.poll(-1))) {
      }
      if (o->ticket != ticket) return {};  // out of order: the caller's comparison fails
      for (size_t r = 0; r < owner.size(); ++r)
        out[static_cast<size_t>(owner[r])].emplace_back(o->logits.begin() + static_cast<std::ptrdiff_t>(r * V),
                                                         o->logits.begin() + static_cast<std::ptrdiff_t>((r + 1) * V));
    }
    if (!pending) break;
  }
  return out;
}

// Sampled generation of every prompt at once (sequence s in slot s, its own Sampler seeded
// seed0 + s, the prompt accepted first), n_new tokens each, one batch per step: the last stage
// samples on a cluster. Returns each sequence's tokens.
inline std::vector<std::vector<int32_t>> sample_together(Pipeline& p, const std::vector<std::vector<int32_t>>& prompts,
                                                         int n_new, SamplerParams params, uint64_t seed0) {
  std::vector<Sampler> samplers;
  for (size_t s = 0; s < prompts.size(); ++s) {
    params.seed = seed0 + s;
    samplers.emplace_back(params, static_cast<int32_t>(p.config().n_vocab));
    for (int32_t t : prompts[s]) samplers.back().accept(t);
  }
  std::vector<Sampler*> order;
  for (auto& s : samplers) order.push_back(&s);
  std::vector<std::vector<int32_t>> out(prompts.size());
  Batch b;
  for (size_t s = 0; s < prompts.size(); ++s)
    b.add_run(prompts[s].data(), static_cast<int64_t>(prompts[s].size()), 0, static_cast<int32_t>(s), false);
  for (int step = 0; step < n_new; ++step) {
    const BatchOutput o = p.eval(b, order);
    b.clear();
    for (size_t s = 0; s < prompts.size(); ++s) {
      const int32_t t = o.tokens.at(s);
      samplers[s].accept(t);
      out[s].push_back(t);
      b.add(t, static_cast<int32_t>(prompts[s].size() + out[s].size() - 1), static_cast<int32_t>(s), true);
    }
  }
  return out;
}

// All scripts together, sequence s in slot s, one batch per step.
inline std::vector<SeqLogits> run_together(Pipeline& p, const std::vector<SeqScript>& scripts) {
  return run_in_flight(p, scripts, 1);
}

// "" when every row is bit-identical, else the first difference.
inline std::string compare_bits(const std::vector<SeqLogits>& together, const std::vector<SeqLogits>& alone) {
  if (together.size() != alone.size()) return "sequence counts differ";
  for (size_t s = 0; s < alone.size(); ++s) {
    if (together[s].size() != alone[s].size())
      return "sequence " + std::to_string(s) + ": " + std::to_string(together[s].size()) + " rows, alone " +
             std::to_string(alone[s].size());
    for (size_t r = 0; r < alone[s].size(); ++r)
      if (together[s][r].size() != alone[s][r].size() ||
          std::memcmp(together[s][r].data(), alone[s][r].data(), alone[s][r].size() * sizeof(float)) != 0)
        return "sequence " + std::to_string(s) + " row " + std::to_string(r) + " differs";
  }
  return "";
}

}  // namespace herd::test
