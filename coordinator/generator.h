// The generation loop: prompt tokens in (reusing whatever prefix is already in the KV cache, so a
// chat turn only evaluates what is new), sampled tokens out, streamed as complete UTF-8 text.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/pipeline.h"
#include "engine/sampler.h"
#include "model/tokenizer.h"

namespace herd {

struct GenerationStats {
  int64_t n_prompt = 0;     // prompt tokens evaluated in this call (excludes the reused prefix)
  int64_t n_reused = 0;     // prompt tokens found already in the cache
  int64_t n_generated = 0;  // tokens sampled
  double prompt_seconds = 0;
  double gen_seconds = 0;
  std::string stop_reason;  // "eog", "length", "context", "callback"
  std::vector<int32_t> tokens;  // every sampled id, in order (including a final end-of-generation id)
};

// Holds back the tail of a byte stream until it is a complete UTF-8 sequence, so a multibyte
// character split over byte-fallback tokens is printed whole.
class Utf8Stream {
 public:
  std::string push(const std::string& bytes);  // returns what can be printed now
  std::string flush();                         // whatever is left (possibly invalid) at the end
 private:
  std::string pending_;
};

class Generator {
 public:
  Generator(Pipeline& pipeline, const model::Tokenizer& tokenizer, int64_t n_batch = 512);

  // Evaluates `prompt` (tokens from position 0; a cached common prefix is skipped), then samples up
  // to n_predict tokens (< 0: until end-of-generation or a full context). `on_text` receives printable
  // text as it is produced and may return false to stop. Throws std::length_error when the prompt
  // does not fit the context.
  GenerationStats generate(const std::vector<int32_t>& prompt, int64_t n_predict, Sampler& sampler,
                           const std::function<bool(const std::string&)>& on_text);

  // Tokens whose keys/values are in the cache, from position 0 (prompt + generated): the
  // pipeline's record of the sequence (Pipeline::cached).
  const std::vector<int32_t>& history() const { return pipe_.cached(seq_); }
  void reset() { pipe_.forget(seq_); }

 private:
  Pipeline& pipe_;
  const model::Tokenizer& tok_;
  int64_t n_batch_;
  int32_t seq_ = 0;  // the pipeline's sequence slot this generator drives
  Batch batch_;
};

}  // namespace herd
