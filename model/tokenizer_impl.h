// Private to model/: the vocabulary as plain vectors, the shared base of both tokenizers, the
// bigram merge loop they share, and the BPE pre-tokenizers. Tests include this header to drive
// the algorithms without a GGUF file.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/tokenizer.h"

namespace herd::model::detail {

// Everything a tokenizer is built from, as read from tokenizer.ggml.* (absent = empty/nullopt).
struct VocabData {
  std::string model;                // "llama" | "gpt2"
  std::string pre;                  // pre-tokenizer name (gpt2 only); "" = default
  std::vector<std::string> tokens;  // [n_vocab]
  std::vector<float> scores;        // [n_vocab] or empty (SentencePiece merge priority)
  std::vector<int32_t> types;       // [n_vocab] TokenType values, or empty (all Normal)
  std::vector<std::string> merges;  // "left right", rank = index (gpt2)
  // Special ids; nullopt = absent from the metadata (the model type's default applies).
  std::optional<int64_t> bos, eos, eot, eom, unk, pad;
  std::optional<bool> add_bos, add_eos, add_space_prefix;
};

// Validates (throws std::runtime_error naming the key) and builds the tokenizer for v.model.
std::unique_ptr<Tokenizer> make_tokenizer(VocabData v);

// The two kinds (model/tokenizer_spm.cpp, model/tokenizer_bpe.cpp); v is already validated.
std::unique_ptr<Tokenizer> make_spm_tokenizer(const VocabData& v);
std::unique_ptr<Tokenizer> make_bpe_tokenizer(const VocabData& v);

// Transparent hash so maps keyed by std::string can be probed with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// State shared by both tokenizer kinds: vocabulary, token types, special ids, special-token
// splitting and the decode loop.
class VocabBase : public Tokenizer {
 public:
  explicit VocabBase(const VocabData& v, int32_t default_bos, int32_t default_eos, int32_t default_unk,
                     bool default_add_bos);

  int32_t n_vocab() const override { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  bool is_eog(int32_t id) const override;
  bool add_bos() const override { return add_bos_; }
  const std::string& token_text(int32_t id) const override;
  TokenType token_type(int32_t id) const override;
  int32_t find_token(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids, bool render_special) const override;

  // A piece of input: either a special token found in the text, or plain text between them.
  struct Fragment {
    int32_t token;          // >= 0: a special token; -1: plain text
    std::string_view text;  // the plain text (never empty when token < 0)
  };
  // Splits out special tokens, longest first. UserDefined tokens are always recognised (as
  // llama.cpp does); Control and Unknown tokens only when parse_special is true.
  std::vector<Fragment> split_special(std::string_view text, bool parse_special) const;

 protected:
  void check_id(int32_t id) const;  // std::out_of_range for a bad id
  // Whether decode() drops the leading space of the first rendered text (SentencePiece prefix).
  virtual bool strips_leading_space() const { return false; }

  std::vector<std::string> tokens_;
  std::vector<TokenType> types_;
  TokenMap token_ids_;
  std::vector<int32_t> specials_;  // token ids, longest text first
  std::vector<int32_t> eog_ids_;   // sorted
  int32_t bos_ = -1, eos_ = -1, eot_ = -1, eom_ = -1, unk_ = -1, pad_ = -1;
  bool add_bos_ = false, add_eos_ = false;
};

// ---- shared bigram merge loop ----
// Symbols form a doubly linked list over one text; a symbol with len 0 has been merged away.
struct MergeSymbol {
  uint32_t offset;
  uint32_t len;
  int32_t prev;
  int32_t next;
};

// Repeatedly merges the adjacent pair with the highest priority (ties: the leftmost pair) until
// no adjacent pair has one. priority(joined_text, left_len) returns nullopt when the pair may
// not merge (joined_text starts with the left symbol's left_len bytes).
template <class PriorityFn>
void merge_bigrams(std::string_view text, std::vector<MergeSymbol>& syms, PriorityFn&& priority) {
  struct Candidate {
    double prio;
    int32_t left, right;
    uint32_t len;  // joined length when queued; a mismatch later means a side has changed
  };
  auto lower = [](const Candidate& a, const Candidate& b) {
    return a.prio < b.prio || (a.prio == b.prio && a.left > b.left);
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(lower)> queue(lower);
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const uint32_t len = syms[left].len + syms[right].len;
    const std::optional<double> p = priority(text.substr(syms[left].offset, len), syms[left].len);
    if (p) queue.push({*p, left, right, len});
  };
  for (size_t i = 0; i + 1 < syms.size(); ++i) try_add(static_cast<int32_t>(i), static_cast<int32_t>(i + 1));
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    MergeSymbol& l = syms[c.left];
    MergeSymbol& r = syms[c.right];
    if (l.len == 0 || r.len == 0 || l.next != c.right || l.len + r.len != c.len) continue;  // stale
    l.len += r.len;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    r.len = 0;
    try_add(l.prev, c.left);
    try_add(c.left, l.next);
  }
}

// ---- BPE pre-tokenizers (hand-written matchers of the regexes named by tokenizer.ggml.pre) ----
enum class PreTokenizer {
  Gpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Llama3,  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  Qwen2,   // Llama3 with \p{N} (one digit per word)
  Smollm,  // every \p{N} split apart first, then Gpt2 within each piece
};
// Throws std::runtime_error listing the supported names for an unknown one.
PreTokenizer pre_tokenizer_from_name(std::string_view name);
// Splits text into words (byte substrings of text, in order, covering it exactly). Invalid
// UTF-8 bytes are classed as U+FFFD and stay inside the words.
std::vector<std::string_view> pre_tokenize(PreTokenizer kind, std::string_view text);

// GPT-2 byte-level alphabet: byte -> code point, and back (-1 for a code point that is none).
uint32_t byte_to_unicode(uint8_t b);
int32_t unicode_to_byte(uint32_t cp);

}  // namespace herd::model::detail
