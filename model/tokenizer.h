// Tokenizers built from GGUF metadata (tokenizer.ggml.*):
//   model "llama" -> SentencePiece-style (scores, byte fallback <0xNN>, "▁" for spaces)
//   model "gpt2"  -> byte-level BPE (merges), with the pre-tokenizer named by tokenizer.ggml.pre
//                    (llama3 / llama-bpe, qwen2, smollm, gpt2, default)
// Special and control tokens are recognised in the text when parse_special is true.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace herd::model {

class GgufFile;

enum class TokenType : int32_t {  // tokenizer.ggml.token_type values
  Undefined = 0, Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6,
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Throws std::runtime_error naming the missing/invalid key when the vocabulary is unusable,
  // or "unsupported tokenizer model X (supported: llama, gpt2)".
  static std::unique_ptr<Tokenizer> from_gguf(const GgufFile& f);

  // add_special: prepend BOS (and append EOS) as the model's metadata says
  // (tokenizer.ggml.add_bos_token / add_eos_token, defaulting per model type).
  // parse_special: recognise special/control tokens written literally in the text.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const = 0;

  // Bytes of one token as it appears in output text (byte tokens become their byte; "▁" a space;
  // GPT-2 byte-level characters are mapped back to bytes). Control tokens render as "" unless
  // render_special is true. The first token's leading space is *not* stripped here.
  virtual std::string token_to_piece(int32_t id, bool render_special = false) const = 0;
  // Whole sequence; SentencePiece strips the single leading space the encoder adds.
  virtual std::string decode(const std::vector<int32_t>& ids, bool render_special = false) const = 0;

  virtual int32_t n_vocab() const = 0;
  virtual int32_t bos_id() const = 0;   // -1 when none
  virtual int32_t eos_id() const = 0;   // -1 when none
  virtual bool is_eog(int32_t id) const = 0;  // end of generation: EOS, EOT (<|im_end|>, <|eot_id|>...)
  virtual bool add_bos() const = 0;
  virtual const std::string& token_text(int32_t id) const = 0;  // raw vocabulary string
  virtual TokenType token_type(int32_t id) const = 0;
  virtual int32_t find_token(std::string_view text) const = 0;  // exact vocabulary match, -1 if none
};

}  // namespace herd::model
