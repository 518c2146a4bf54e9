// The tokenizers on arbitrary text: SentencePiece (the shared llama vocab,
// ../shared/models/ggml-vocab-llama-spm.gguf) and GPT-2 BPE (SmolLM2's vocab: models/ or
// HERD_FUZZ_BPE_VOCAB; skipped when absent). Encode with and without special-token parsing, decode
// the ids back, render every id's piece, and decode arbitrary id lists (out-of-range ids must be
// refused cleanly). Byte 0 picks the tokenizer and the flags.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>

#include "fuzz/fuzz_util.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

using namespace herd::model;

namespace {

std::unique_ptr<Tokenizer> load(const std::string& path, bool required) {
  try {
    auto f = GgufFile::open(path, {.map_all = false});
    return Tokenizer::from_gguf(*f);
  } catch (const std::exception& e) {
    if (required) {
      std::fprintf(stderr, "fuzz_tokenizer: %s\n", e.what());
      std::abort();
    }
    std::fprintf(stderr, "fuzz_tokenizer: no BPE vocab (%s): fuzzing SentencePiece only\n", e.what());
    return nullptr;
  }
}

const Tokenizer* pick(uint8_t b) {
  static const auto spm = load(herd::fuzz::shared_path("models/ggml-vocab-llama-spm.gguf"), true);
  static const auto bpe = [] {
    const char* env = std::getenv("HERD_FUZZ_BPE_VOCAB");
    return load(env && *env ? env : herd::fuzz::source_path("models/SmolLM2-135M-Instruct.Q4_1.gguf"), false);
  }();
  return (b & 1) && bpe ? bpe.get() : spm.get();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  herd::fuzz::Input in{data, size};
  const uint8_t b = in.byte();
  const Tokenizer* tok = pick(b);
  const std::string text = in.rest();
  const auto ids = tok->encode(text, b & 2, b & 4);
  (void)tok->decode(ids, b & 8);
  for (int32_t id : ids) (void)tok->token_to_piece(id, b & 8);
  // Arbitrary ids, read from the text's bytes: invalid ones must be refused, not read out of bounds.
  std::vector<int32_t> raw;
  for (size_t i = 0; i + 4 <= text.size() && raw.size() < 64; i += 4) {
    int32_t v;
    std::memcpy(&v, text.data() + i, 4);
    raw.push_back((b & 16) ? v : static_cast<int32_t>(static_cast<uint32_t>(v) % (tok->n_vocab() + 8u)));
  }
  try {
    (void)tok->decode(raw, b & 8);
  } catch (const std::exception&) {
  }
  return 0;
}
