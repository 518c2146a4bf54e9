#include "engine/stage.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace herd {

Stage::Stage(const model::ModelConfig& config, model::StageWeights weights, Backend& backend, int64_t n_ctx)
    : config_(config), w_(std::move(weights)), be_(backend), cache_(w_.range.size(), n_ctx, config.kv_dim()) {
  // The backend may keep a copy of each matmul weight in its faster layout (Backend::prepare_matmul,
  // e.g. 16 interleaved rows on x86); the file pages it was copied from are then dropped, so the
  // stage holds its weights once. An untied tok_embd stays in the mapping (get_rows reads a few
  // rows a step). A tied one is the output's bytes: it shares the output's copy, which the
  // backend's get_rows then reads, so the dropped pages are not faulted back in (as whole large
  // page-cache folios: the table would be held twice).
  std::vector<WeightMatrix*> ms;
  for (auto& l : w_.layers)
    for (WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) ms.push_back(m);
  if (w_.range.output) ms.push_back(&w_.output);
  const bool drop = w_.file_mapped;
  be_.prepare_matmul(ms, [drop](const WeightMatrix& rows_copied) {
    if (drop) model::release_pages(rows_copied);
  });
  if (w_.range.output && w_.tok_embd.data == w_.output.data) w_.tok_embd.packed = w_.output.packed;
}

void Stage::forward(const int32_t* tokens, const float* hidden, int64_t n, int64_t pos0, bool all_logits,
                    std::vector<float>& out) {
  const auto& c = config_;
  if (n <= 0) throw std::invalid_argument("Stage::forward: no tokens");
  if (pos0 < 0 || pos0 + n > cache_.n_ctx())
    throw std::out_of_range("context full: positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + n - 1) +
                            " exceed the context size " + std::to_string(cache_.n_ctx()));
  const int64_t d = c.n_embd;
  x_.resize(static_cast<size_t>(n * d));
  if (w_.range.embedding) {
    if (!tokens) throw std::invalid_argument("Stage::forward: first stage needs token ids");
    for (int64_t t = 0; t < n; ++t)
      if (tokens[t] < 0 || tokens[t] >= c.n_vocab)
        throw std::out_of_range("token id " + std::to_string(tokens[t]) + " outside the vocabulary (" +
                                std::to_string(c.n_vocab) + ")");
    be_.get_rows(w_.tok_embd, tokens, n, x_.data(), d);
  } else {
    if (!hidden) throw std::invalid_argument("Stage::forward: stage needs the hidden state");
    std::memcpy(x_.data(), hidden, sizeof(float) * n * d);
  }

  pos_.resize(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) pos_[t] = static_cast<int32_t>(pos0 + t);
  for (int64_t il = 0; il < w_.range.size(); ++il) layer(il, n, pos0);

  if (!w_.range.output) {
    out.assign(x_.begin(), x_.end());
    return;
  }
  const int64_t n_out = all_logits ? n : 1;
  const float* rows = x_.data() + (n - n_out) * d;
  cur_.resize(static_cast<size_t>(n_out * d));
  be_.rmsnorm(rows, d, w_.output_norm.data(), n_out, d, c.rms_eps, cur_.data(), d);
  out.resize(static_cast<size_t>(n_out * c.n_vocab));
  be_.matmul(w_.output, cur_.data(), n_out, d, out.data(), c.n_vocab);
}

void Stage::layer(int64_t il, int64_t n, int64_t pos0) {
  const auto& c = config_;
  const auto& w = w_.layers[static_cast<size_t>(il)];
  const int64_t d = c.n_embd, qd = c.q_dim(), kvd = c.kv_dim();
  cur_.resize(static_cast<size_t>(n * d));
  q_.resize(static_cast<size_t>(n * qd));
  k_.resize(static_cast<size_t>(n * kvd));
  v_.resize(static_cast<size_t>(n * kvd));
  attn_.resize(static_cast<size_t>(n * qd));

  // Attention block: x += Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x)).
  be_.rmsnorm(x_.data(), d, w.attn_norm.data(), n, d, c.rms_eps, cur_.data(), d);
  be_.matmul(w.wq, cur_.data(), n, d, q_.data(), qd);
  be_.matmul(w.wk, cur_.data(), n, d, k_.data(), kvd);
  be_.matmul(w.wv, cur_.data(), n, d, v_.data(), kvd);
  if (c.has_qkv_bias) {
    for (int64_t t = 0; t < n; ++t) {
      be_.add(q_.data() + t * qd, w.bq.data(), q_.data() + t * qd, qd);
      be_.add(k_.data() + t * kvd, w.bk.data(), k_.data() + t * kvd, kvd);
      be_.add(v_.data() + t * kvd, w.bv.data(), v_.data() + t * kvd, kvd);
    }
  }
  RopeParams rp;
  rp.mode = c.rope_mode;
  rp.n_rot = c.n_rot;
  rp.freq_base = c.rope_freq_base;
  rp.freq_scale = c.rope_freq_scale;
  rp.freq_factors = w_.rope_freqs.empty() ? nullptr : w_.rope_freqs.data();
  be_.rope(q_.data(), n, qd, c.n_heads, c.head_dim, pos_.data(), rp);
  be_.rope(k_.data(), n, kvd, c.n_kv_heads, c.head_dim, pos_.data(), rp);
  for (int64_t t = 0; t < n; ++t) {
    std::memcpy(cache_.k(il, pos0 + t), k_.data() + t * kvd, sizeof(float) * kvd);
    std::memcpy(cache_.v(il, pos0 + t), v_.data() + t * kvd, sizeof(float) * kvd);
  }
  AttentionShape s{n, c.n_heads, c.n_kv_heads, c.head_dim, pos0 + n};
  be_.attention(q_.data(), qd, cache_.k(il, 0), cache_.v(il, 0), kvd, s,
                1.0f / std::sqrt(static_cast<float>(c.head_dim)), attn_.data(), qd);
  be_.matmul(w.wo, attn_.data(), n, qd, cur_.data(), d);
  be_.add(x_.data(), cur_.data(), x_.data(), n * d);

  // Feed-forward block: x += Wdown · (silu(Wgate·norm(x)) * Wup·norm(x)).
  gate_.resize(static_cast<size_t>(n * c.n_ff));
  up_.resize(static_cast<size_t>(n * c.n_ff));
  be_.rmsnorm(x_.data(), d, w.ffn_norm.data(), n, d, c.rms_eps, cur_.data(), d);
  be_.matmul(w.w_gate, cur_.data(), n, d, gate_.data(), c.n_ff);
  be_.matmul(w.w_up, cur_.data(), n, d, up_.data(), c.n_ff);
  be_.silu_mul(gate_.data(), up_.data(), gate_.data(), n * c.n_ff);
  be_.matmul(w.w_down, gate_.data(), n, c.n_ff, cur_.data(), d);
  be_.add(x_.data(), cur_.data(), x_.data(), n * d);
}

}  // namespace herd
