#include "model/unicode.h"

#include <algorithm>
#include <array>

namespace herd::model::unicode {

Decoded decode_utf8(std::string_view s, size_t pos) {
  if (pos >= s.size()) return {0, 0, false};
  const Decoded bad{kReplacementChar, 1, false};
  const auto b0 = static_cast<uint8_t>(s[pos]);
  if (b0 < 0x80) return {b0, 1, true};
  uint32_t n;        // continuation bytes
  uint32_t cp;
  uint32_t min_cp;   // smallest value this length may encode (rejects overlong forms)
  if ((b0 & 0xE0) == 0xC0) {
    n = 1, cp = b0 & 0x1F, min_cp = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 2, cp = b0 & 0x0F, min_cp = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 3, cp = b0 & 0x07, min_cp = 0x10000;
  } else {
    return bad;  // stray continuation byte or 0xF8..0xFF
  }
  if (s.size() - pos <= n) return bad;  // truncated: would need bytes past the end
  for (uint32_t i = 1; i <= n; ++i) {
    const auto b = static_cast<uint8_t>(s[pos + i]);
    if ((b & 0xC0) != 0x80) return bad;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return bad;
  return {cp, n + 1, true};
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = kReplacementChar;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string encode_utf8(uint32_t cp) {
  std::string s;
  append_utf8(s, cp);
  return s;
}

std::vector<CodePoint> decode_all(std::string_view s) {
  std::vector<CodePoint> out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    const Decoded d = decode_utf8(s, pos);
    out.push_back({d.cp, static_cast<uint32_t>(pos), d.len});
    pos += d.len;
  }
  return out;
}

namespace {

// ASCII is hot in every tokenizer loop: answer it from a small table.
struct AsciiCategories {
  std::array<Category, 128> cat{};
  AsciiCategories() {
    for (uint32_t c = 0; c < 128; ++c) cat[c] = lookup(c);
  }
  static Category lookup(uint32_t cp) {
    const auto* begin = detail::kCategoryRanges;
    const auto* end = begin + detail::kCategoryRangeCount;
    // First range whose last >= cp.
    const auto* it = std::lower_bound(begin, end, cp,
                                      [](const detail::CategoryRange& r, uint32_t v) { return r.last < v; });
    if (it == end || it->first > cp) return Category::Cn;
    return it->cat;
  }
};
const AsciiCategories& ascii() {
  static const AsciiCategories t;
  return t;
}

}  // namespace

Category category(uint32_t cp) {
  if (cp < 128) return ascii().cat[cp];
  return AsciiCategories::lookup(cp);
}

bool is_letter(uint32_t cp) {
  const Category c = category(cp);
  return c >= Category::Lu && c <= Category::Lo;
}
bool is_number(uint32_t cp) {
  const Category c = category(cp);
  return c >= Category::Nd && c <= Category::No;
}
bool is_punctuation(uint32_t cp) {
  const Category c = category(cp);
  return c >= Category::Pc && c <= Category::Po;
}
bool is_symbol(uint32_t cp) {
  const Category c = category(cp);
  return c >= Category::Sm && c <= Category::So;
}
bool is_mark(uint32_t cp) {
  const Category c = category(cp);
  return c >= Category::Mn && c <= Category::Me;
}
bool is_whitespace(uint32_t cp) {
  for (size_t i = 0; i < detail::kWhiteSpaceRangeCount; ++i) {
    if (cp < detail::kWhiteSpaceRanges[i].first) return false;  // sorted
    if (cp <= detail::kWhiteSpaceRanges[i].last) return true;
  }
  return false;
}

}  // namespace herd::model::unicode
