#include "coordinator/generator.h"

#include <algorithm>
#include <stdexcept>

#include "common/timer.h"

namespace herd {
namespace {

// Length of the UTF-8 sequence a lead byte announces; 0 for a continuation/invalid byte.
int utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 0;
}

}  // namespace

std::string Utf8Stream::push(const std::string& bytes) {
  pending_ += bytes;
  // Find the start of the last (possibly incomplete) sequence among the final 3 bytes.
  size_t cut = pending_.size();
  for (size_t back = 1; back <= 3 && back <= pending_.size(); ++back) {
    const auto c = static_cast<unsigned char>(pending_[pending_.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    const int need = utf8_len(c);
    if (need > static_cast<int>(back)) cut = pending_.size() - back;  // incomplete: hold it back
    break;
  }
  std::string out = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return out;
}

std::string Utf8Stream::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

Generator::Generator(Pipeline& pipeline, const model::Tokenizer& tokenizer, int64_t n_batch)
    : pipe_(pipeline), tok_(tokenizer), n_batch_(std::max<int64_t>(1, n_batch)) {}

GenerationStats Generator::generate(const std::vector<int32_t>& prompt, int64_t n_predict, Sampler& sampler,
                                    const std::function<bool(const std::string&)>& on_text) {
  GenerationStats st;
  const int64_t n_ctx = pipe_.n_ctx();
  if (prompt.empty()) throw std::invalid_argument("empty prompt (nothing to evaluate)");
  if (static_cast<int64_t>(prompt.size()) >= n_ctx)
    throw std::length_error("the prompt is " + std::to_string(prompt.size()) + " tokens but the context holds " +
                            std::to_string(n_ctx) + " (leave room to generate; raise it with -c)");

  // Reuse the longest cached prefix, but always evaluate at least the last prompt token (its
  // logits are what we sample from).
  const std::vector<int32_t>& cached = pipe_.cached(seq_);
  size_t keep = 0;
  while (keep < cached.size() && keep < prompt.size() && cached[keep] == prompt[keep]) ++keep;
  keep = std::min(keep, prompt.size() - 1);
  st.n_reused = static_cast<int64_t>(keep);

  // The last prompt batch is evaluated and sampled in one step (eval_sample: on a cluster the last
  // stage samples and only the token id comes back); the sampler sees the prompt first.
  Timer t;
  for (const int32_t id : prompt) sampler.accept(id);
  int32_t id = -1;
  for (size_t i = keep; i < prompt.size(); i += static_cast<size_t>(n_batch_)) {
    const size_t n = std::min(prompt.size() - i, static_cast<size_t>(n_batch_));
    if (i + n == prompt.size() && n_predict != 0) {
      id = pipe_.eval_sample(prompt.data() + i, static_cast<int64_t>(n), static_cast<int64_t>(i), sampler, seq_);
    } else {
      batch_.clear();
      batch_.add_run(prompt.data() + i, static_cast<int64_t>(n), static_cast<int32_t>(i), seq_, false);
      batch_.logits.back() = 0;  // a middle chunk of the prompt: nothing to output
      pipe_.eval(batch_);
    }
  }
  st.n_prompt = static_cast<int64_t>(prompt.size() - keep);
  st.prompt_seconds = t.seconds();

  t.reset();
  Utf8Stream utf8;
  st.stop_reason = "length";
  while (n_predict < 0 || st.n_generated < n_predict) {
    sampler.accept(id);
    ++st.n_generated;
    st.tokens.push_back(id);
    if (tok_.is_eog(id)) {
      st.stop_reason = "eog";
      break;
    }
    const std::string text = utf8.push(tok_.token_to_piece(id));
    if (!text.empty() && !on_text(text)) {
      st.stop_reason = "callback";
      break;
    }
    const auto n_cached = static_cast<int64_t>(pipe_.cached(seq_).size());
    if (n_cached >= n_ctx) {
      st.stop_reason = "context";
      break;
    }
    if (n_predict >= 0 && st.n_generated >= n_predict) break;  // no need to evaluate the last one
    const int32_t prev = id;
    id = pipe_.eval_sample(&prev, 1, n_cached, sampler, seq_);
  }
  if (std::string rest = utf8.flush(); !rest.empty()) on_text(rest);
  st.gen_seconds = t.seconds();
  return st;
}

}  // namespace herd
