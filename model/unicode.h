// UTF-8 coding and Unicode character classes for the tokenizers.
// Decoding never reads past the end of its input and never throws: a malformed or truncated
// sequence, an overlong form, a surrogate or a value above U+10FFFF decodes as U+FFFD covering
// exactly one byte, so callers can keep byte offsets into the original text and still move on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace herd::model::unicode {

inline constexpr uint32_t kReplacementChar = 0xFFFD;

struct Decoded {
  uint32_t cp = 0;   // code point (U+FFFD when !valid)
  uint32_t len = 0;  // bytes consumed, >= 1 when pos < s.size(), 0 at the end
  bool valid = false;
};

// Decodes the character starting at byte `pos` of `s` (pos >= s.size() gives len 0).
Decoded decode_utf8(std::string_view s, size_t pos);
// Appends the UTF-8 encoding of `cp` (surrogates and values > U+10FFFF become U+FFFD).
void append_utf8(std::string& out, uint32_t cp);
std::string encode_utf8(uint32_t cp);

// One decoded character with its byte span in the source text.
struct CodePoint {
  uint32_t cp;
  uint32_t offset;  // byte offset in the source
  uint32_t len;     // bytes in the source (1 for an invalid byte)
};
std::vector<CodePoint> decode_all(std::string_view s);

// Unicode general categories (order fixed: the generated tables index it).
enum class Category : uint8_t {
  Cn, Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No,
  Pc, Pd, Ps, Pe, Pi, Pf, Po, Sm, Sc, Sk, So,
  Zs, Zl, Zp, Cc, Cf, Cs, Co,
};
Category category(uint32_t cp);

bool is_letter(uint32_t cp);       // \p{L}
bool is_number(uint32_t cp);       // \p{N}
bool is_punctuation(uint32_t cp);  // \p{P}
bool is_symbol(uint32_t cp);       // \p{S}
bool is_mark(uint32_t cp);         // \p{M}
bool is_whitespace(uint32_t cp);   // \s: the White_Space property

namespace detail {
struct CategoryRange {
  uint32_t first, last;
  Category cat;
};
struct CodePointRange {
  uint32_t first, last;
};
extern const CategoryRange kCategoryRanges[];
extern const size_t kCategoryRangeCount;
extern const CodePointRange kWhiteSpaceRanges[];
extern const size_t kWhiteSpaceRangeCount;
}  // namespace detail

}  // namespace herd::model::unicode
