// BPE pre-tokenizers: hand-written matchers, over code points, of the split regexes that
// tokenizer.ggml.pre names. Each matcher returns the length of the leftmost alternative that
// matches at a position, with the regex's backtracking worked out by hand (std::regex has no
// \p{L}). Lookahead never sees past the end of the piece being split.
#include <stdexcept>

#include "model/tokenizer_impl.h"
#include "model/unicode.h"

namespace herd::model::detail {

namespace {

using unicode::CodePoint;

struct Cursor {
  const std::vector<CodePoint>& cps;
  size_t end;  // one past the last code point of the piece
  uint32_t at(size_t i) const { return cps[i].cp; }
  bool letter(size_t i) const { return i < end && unicode::is_letter(at(i)); }
  bool number(size_t i) const { return i < end && unicode::is_number(at(i)); }
  bool space(size_t i) const { return i < end && unicode::is_whitespace(at(i)); }
  bool newline(size_t i) const { return i < end && (at(i) == '\r' || at(i) == '\n'); }
  // [^\s\p{L}\p{N}]
  bool other(size_t i) const { return i < end && !space(i) && !letter(i) && !number(i); }
  size_t run(size_t i, bool (Cursor::*pred)(size_t) const) const {
    size_t j = i;
    while ((this->*pred)(j)) ++j;
    return j - i;
  }
};

uint32_t lower_ascii(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// 's|'t|'re|'ve|'m|'ll|'d, optionally ASCII case-insensitive.
size_t match_contraction(const Cursor& c, size_t i, bool ignore_case) {
  if (i >= c.end || c.at(i) != '\'' || i + 1 >= c.end) return 0;
  auto ch = [&](size_t k) { return ignore_case ? lower_ascii(c.at(k)) : c.at(k); };
  const uint32_t a = ch(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 < c.end) {
    const uint32_t b = ch(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  }
  return 0;
}

// \s+(?!\S) then \s+ : a whitespace run leaves its last character to the word that follows it,
// unless the run ends the piece or is a single character.
size_t match_trailing_space(const Cursor& c, size_t i) {
  const size_t n = c.run(i, &Cursor::space);
  if (n == 0) return 0;
  if (i + n == c.end || n == 1) return n;
  return n - 1;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t match_gpt2(const Cursor& c, size_t i) {
  if (size_t n = match_contraction(c, i, false)) return n;
  const size_t sp = c.at(i) == ' ' ? 1 : 0;
  if (size_t n = c.run(i + sp, &Cursor::letter)) return sp + n;
  if (size_t n = c.run(i + sp, &Cursor::number)) return sp + n;
  if (size_t n = c.run(i + sp, &Cursor::other)) return sp + n;
  return match_trailing_space(c, i);
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}| ?[^\s\p{L}\p{N}]+[\r\n]*
// |\s*[\r\n]+|\s+(?!\S)|\s+
size_t match_llama3(const Cursor& c, size_t i, size_t max_digits) {
  if (size_t n = match_contraction(c, i, true)) return n;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (!c.newline(i) && !c.letter(i) && !c.number(i) && c.letter(i + 1)) return 1 + c.run(i + 1, &Cursor::letter);
  if (size_t n = c.run(i, &Cursor::letter)) return n;
  // \p{N}{1,max_digits}
  if (size_t n = c.run(i, &Cursor::number)) return n < max_digits ? n : max_digits;
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  {
    const size_t sp = c.at(i) == ' ' ? 1 : 0;
    if (size_t n = c.run(i + sp, &Cursor::other)) {
      const size_t j = i + sp + n;
      return sp + n + c.run(j, &Cursor::newline);
    }
  }
  // \s*[\r\n]+ : up to and including the last newline of the whitespace run
  const size_t ws = c.run(i, &Cursor::space);
  for (size_t k = ws; k > 0; --k) {
    if (c.newline(i + k - 1)) return k;
  }
  return match_trailing_space(c, i);
}

void split_with(const std::vector<CodePoint>& cps, size_t begin, size_t end, PreTokenizer kind, std::string_view text,
                std::vector<std::string_view>& out) {
  const Cursor c{cps, end};
  for (size_t i = begin; i < end;) {
    size_t n = 0;
    switch (kind) {
      case PreTokenizer::Gpt2:
      case PreTokenizer::Smollm: n = match_gpt2(c, i); break;
      case PreTokenizer::Llama3: n = match_llama3(c, i, 3); break;
      case PreTokenizer::Qwen2: n = match_llama3(c, i, 1); break;
    }
    if (n == 0) n = 1;  // unreachable for these patterns (every class is covered); never stall
    const size_t from = cps[i].offset;
    const size_t to = cps[i + n - 1].offset + cps[i + n - 1].len;
    out.push_back(text.substr(from, to - from));
    i += n;
  }
}

}  // namespace

PreTokenizer pre_tokenizer_from_name(std::string_view name) {
  if (name == "llama3" || name == "llama-bpe") return PreTokenizer::Llama3;
  if (name == "qwen2") return PreTokenizer::Qwen2;
  if (name == "smollm") return PreTokenizer::Smollm;
  if (name == "gpt2" || name == "default") return PreTokenizer::Gpt2;
  throw std::runtime_error("tokenizer: tokenizer.ggml.pre: unsupported pre-tokenizer \"" + std::string(name) +
                           "\" (supported: llama3, llama-bpe, qwen2, smollm, gpt2, default)");
}

std::vector<std::string_view> pre_tokenize(PreTokenizer kind, std::string_view text) {
  std::vector<std::string_view> out;
  const std::vector<CodePoint> cps = unicode::decode_all(text);
  if (kind != PreTokenizer::Smollm) {
    split_with(cps, 0, cps.size(), kind, text, out);
    return out;
  }
  // Smollm: \p{N} splits first (each digit alone, the runs between kept), then GPT-2 per piece.
  size_t start = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    if (!unicode::is_number(cps[i].cp)) continue;
    split_with(cps, start, i, kind, text, out);
    split_with(cps, i, i + 1, kind, text, out);
    start = i + 1;
  }
  split_with(cps, start, cps.size(), kind, text, out);
  return out;
}

}  // namespace herd::model::detail
