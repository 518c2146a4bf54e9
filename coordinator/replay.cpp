#include "coordinator/replay.h"

#include <stdexcept>
#include <string>

namespace herd {

std::vector<int32_t> replay_tokens(const LogitsFile& ref, const std::string& name) {
  std::vector<int32_t> tokens;
  for (size_t i = 0; i < ref.rows.size(); ++i) {
    if (ref.rows[i].pos != static_cast<int32_t>(i))
      throw std::runtime_error(name + ": row " + std::to_string(i) + " has pos " + std::to_string(ref.rows[i].pos) +
                               " (rows must be positions 0, 1, 2, ...)");
    tokens.push_back(ref.rows[i].input_token);
  }
  return tokens;
}

LogitsFile replay_logits(Pipeline& pipeline, const std::vector<int32_t>& tokens, int64_t n_prompt) {
  const int64_t n_vocab = pipeline.config().n_vocab;
  const auto n = static_cast<int64_t>(tokens.size());
  if (n == 0) throw std::runtime_error("nothing to evaluate (no tokens)");
  if (n_prompt < 0 || n_prompt > n) throw std::runtime_error("n_prompt outside the token sequence");
  if (n > pipeline.n_ctx())
    throw std::length_error(std::to_string(n) + " tokens do not fit the context of " +
                            std::to_string(pipeline.n_ctx()) + " (raise it with -c)");
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= n_vocab)
      throw std::runtime_error("row " + std::to_string(i) + ": token " + std::to_string(tokens[i]) +
                               " is outside the model's vocabulary of " + std::to_string(n_vocab));
  LogitsFile out;
  out.n_vocab = static_cast<int32_t>(n_vocab);
  out.n_prompt = static_cast<int32_t>(n_prompt);
  std::vector<float> logits;
  auto keep_rows = [&](int64_t first, int64_t count) {
    for (int64_t r = 0; r < count; ++r) {
      LogitsRow row;
      row.pos = static_cast<int32_t>(first + r);
      row.input_token = tokens[first + r];
      row.logits.assign(logits.begin() + r * n_vocab, logits.begin() + (r + 1) * n_vocab);
      out.rows.push_back(std::move(row));
    }
  };
  if (n_prompt > 0) {
    pipeline.eval(tokens.data(), n_prompt, 0, /*all_logits=*/true, logits);
    keep_rows(0, n_prompt);
  }
  for (int64_t i = n_prompt; i < n; ++i) {
    pipeline.eval(&tokens[i], 1, i, /*all_logits=*/true, logits);
    keep_rows(i, 1);
  }
  return out;
}

}  // namespace herd
