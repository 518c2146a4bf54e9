// Stage::moe_ffn: a mixture-of-experts feed-forward block (stage.h), as llama.cpp's build_moe_ffn
// computes it with softmax gating and renormalised weights (Mixtral, Qwen3-MoE).
//
// Batch invariance (docs/architecture.md §6): a token's routing depends on its own row only; the
// rows that chose an expert go through that expert's matrices in one call, whose per-row results
// do not depend on the other rows in the call (every backend's matmul is row-independent, which
// the batch-invariance tests check); and each token's weighted sum runs in the fixed rank order of
// its choices. So a sequence gets the same bits batched with others, alone, or after any split.
//
// The routing reads the router logits on the host (every backend today computes in host memory).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "engine/stage.h"

namespace herd {

void Stage::moe_ffn(int64_t il) {
  const auto& c = config_;
  const auto& w = w_.layers[static_cast<size_t>(il)];
  if (w.e_gate.empty()) throw std::logic_error("Stage::moe_ffn: the stage's weights have no experts");
  if (!begin_feed_forward(il)) return;
  const int64_t n = n_, d = c.n_embd, n_exp = c.n_expert, k = c.n_expert_used, ff = c.n_ff_exp;
  float* x = x_.as<float>();
  float* cur = scratch(cur_, n * d);
  be_.rmsnorm(x, d, w.ffn_norm.data(), n, d, c.rms_eps, cur, d);
  float* logits = scratch(router_logits_, n * n_exp);
  matmul(w.w_router, cur, n, d, logits, n_exp);

  // Routing: per token the k most probable experts, in rank order, and their weights.
  route_e_.resize(static_cast<size_t>(n * k));
  route_w_.resize(static_cast<size_t>(n * k));
  probs_.resize(static_cast<size_t>(n_exp));
  taken_.resize(static_cast<size_t>(n_exp));
  expert_slots_.resize(static_cast<size_t>(n_exp));
  for (auto& s : expert_slots_) s.clear();
  for (int64_t t = 0; t < n; ++t) {
    const float* l = logits + t * n_exp;
    float mx = l[0];
    for (int64_t e = 1; e < n_exp; ++e) mx = std::max(mx, l[e]);
    double sum = 0;  // softmax as ggml's: f32 exponentials, their sum in double, one f32 scale
    for (int64_t e = 0; e < n_exp; ++e) {
      probs_[e] = std::exp(l[e] - mx);
      sum += probs_[e];
    }
    const auto inv = static_cast<float>(1.0 / sum);
    for (int64_t e = 0; e < n_exp; ++e) probs_[e] *= inv;
    std::fill(taken_.begin(), taken_.end(), 0);
    float chosen_sum = 0;
    for (int64_t r = 0; r < k; ++r) {
      int64_t best = -1;  // the largest p not taken yet; a tie goes to the lower expert index
      for (int64_t e = 0; e < n_exp; ++e)
        if (!taken_[e] && (best < 0 || probs_[e] > probs_[best])) best = e;
      taken_[best] = 1;
      route_e_[t * k + r] = static_cast<int32_t>(best);
      route_w_[t * k + r] = probs_[best];
      chosen_sum += probs_[best];
    }
    for (int64_t r = 0; r < k; ++r) {
      route_w_[t * k + r] /= chosen_sum;
      expert_slots_[route_e_[t * k + r]].push_back(t * k + r);  // ascending slots: token order
    }
  }

  // Each chosen expert once, on the rows that chose it: gather, SwiGLU, scatter to the row's slot.
  float* outs = scratch(moe_out_, n * k * d);  // [n, k, d]: token t's rank-r expert output
  for (int64_t e = 0; e < n_exp; ++e) {
    const auto& slots = expert_slots_[e];
    const auto m = static_cast<int64_t>(slots.size());
    if (m == 0) continue;  // an expert no token chose is never read (decode touches k of them)
    float* in = scratch(moe_in_, m * d);
    for (int64_t i = 0; i < m; ++i) std::memcpy(in + i * d, cur + (slots[i] / k) * d, sizeof(float) * d);
    float* gate = scratch(gate_, m * ff);
    float* up = scratch(up_, m * ff);
    matmul(w.e_gate[e], in, m, d, gate, ff);
    matmul(w.e_up[e], in, m, d, up, ff);
    be_.silu_mul(gate, up, gate, m * ff);
    matmul(w.e_down[e], gate, m, ff, in, d);  // the gathered input is spent: reuse it for the output
    for (int64_t i = 0; i < m; ++i) std::memcpy(outs + slots[i] * d, in + i * d, sizeof(float) * d);
  }
  // Per token: ((w0·y0 + w1·y1) + w2·y2) + ... in rank order (as llama.cpp adds its views), then x += it.
  for (int64_t t = 0; t < n; ++t) {
    float* acc = cur + t * d;
    const float* y = outs + t * k * d;
    const float w0 = route_w_[t * k];
    for (int64_t j = 0; j < d; ++j) acc[j] = w0 * y[j];
    for (int64_t r = 1; r < k; ++r) {
      const float wr = route_w_[t * k + r];
      const float* yr = y + r * d;
      for (int64_t j = 0; j < d; ++j) acc[j] += wr * yr[j];
    }
  }
  be_.add(x, cur, x, n * d);
}

}  // namespace herd
