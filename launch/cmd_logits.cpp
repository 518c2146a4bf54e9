// herd logits: teacher-forced logits in the LOG1 format of ../shared/reference, so that any
// backend, split or (later) cluster plan can be checked against llama.cpp's numbers.
#include <cstdio>

#include "coordinator/logits_file.h"
#include "coordinator/replay.h"
#include "launch/options.h"

namespace herd::cli {

int cmd_logits(const Args& args) {
  ModelOptions mo;
  std::string replay, out, prompt;
  ArgParser p("herd logits [-m MODEL] (--replay REF.log1 | -p PROMPT) --out OUT.log1 [options]",
              "With --replay: feeds the input tokens of REF's rows in order (its first n_prompt rows as one batch, "
              "then one token at a time, as llama.cpp produced them) and writes this engine's logits for every row. "
              "With -p: writes the logits of every prompt position.");
  add_model_options(p, mo, "f32");
  p.add("--replay", "REF.log1", "reference dump whose input tokens to replay", &replay);
  p.add("-p,--prompt", "TEXT", "prompt to evaluate instead of a replay (BOS added as the model says)", &prompt);
  p.add("-o,--out", "OUT.log1", "where to write the logits", &out);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  apply_security_options(mo.security);
  if (out.empty()) throw UsageError("--out is required");
  if (replay.empty() == prompt.empty()) throw UsageError("give exactly one of --replay and -p");

  std::vector<int32_t> tokens;
  int64_t n_prompt = 0;
  if (!replay.empty()) {
    const LogitsFile ref = LogitsFile::read(replay);
    tokens = replay_tokens(ref, replay);
    n_prompt = ref.n_prompt;
  }
  ModelSession s = ModelSession::open(resolve_model(mo), session_for(mo));
  if (!prompt.empty()) {
    tokens = s.tokenizer->encode(prompt, /*add_special=*/true, /*parse_special=*/true);
    n_prompt = static_cast<int64_t>(tokens.size());
  }
  const LogitsFile result = replay_logits(*s.pipeline, tokens, n_prompt);
  result.write(out);
  std::fprintf(stderr, "wrote %zu rows of %d logits to %s\n", result.rows.size(), result.n_vocab, out.c_str());
  return 0;
}

}  // namespace herd::cli
