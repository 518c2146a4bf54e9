// Unicode classes, UTF-8 coding and the BPE pre-tokenizer splits. Expected splits were produced
// by Python's `regex` module running the very patterns the pre-tokenizers implement by hand.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "model/tokenizer_impl.h"
#include "model/unicode.h"

namespace herd::model {
namespace {

using detail::PreTokenizer;
namespace uc = unicode;

TEST(Unicode, DecodesValidSequences) {
  const std::string s = "a\xC3\xA9\xE2\x96\x81\xF0\x9F\xA6\x99";  // a é ▁ 🦙
  const auto cps = uc::decode_all(s);
  ASSERT_EQ(cps.size(), 4u);
  EXPECT_EQ(cps[0].cp, 0x61u);
  EXPECT_EQ(cps[1].cp, 0xE9u);
  EXPECT_EQ(cps[2].cp, 0x2581u);
  EXPECT_EQ(cps[3].cp, 0x1F999u);
  EXPECT_EQ(cps[3].offset, 6u);
  EXPECT_EQ(cps[3].len, 4u);
  for (const auto& c : cps) EXPECT_EQ(uc::encode_utf8(c.cp), s.substr(c.offset, c.len));
}

TEST(Unicode, InvalidBytesBecomeOneReplacementEach) {
  struct Case {
    std::string bytes;
    size_t n_chars;
  };
  const std::vector<Case> cases = {
      {"\x80", 1},                  // stray continuation
      {"\xC3", 1},                  // truncated at the end: must not read past it
      {"\xE2\x96", 2},              // truncated 3-byte sequence
      {"\xF0\x9F\xA6", 3},          // truncated 4-byte sequence
      {"\xC0\xAF", 2},              // overlong '/'
      {"\xED\xA0\x80", 3},          // surrogate U+D800
      {"\xF4\x90\x80\x80", 4},      // above U+10FFFF
      {"\xFF\xFE", 2},              // never valid
      {"\xC3(", 2},                 // bad continuation; '(' survives
  };
  for (const auto& c : cases) {
    const auto cps = uc::decode_all(c.bytes);
    ASSERT_EQ(cps.size(), c.n_chars) << testing::PrintToString(c.bytes);
    EXPECT_EQ(cps[0].cp, uc::kReplacementChar);
    EXPECT_EQ(cps[0].len, 1u);
    EXPECT_FALSE(uc::decode_utf8(c.bytes, 0).valid);
  }
  EXPECT_EQ(uc::decode_all("\xC3(")[1].cp, static_cast<uint32_t>('('));
  EXPECT_EQ(uc::decode_utf8("", 0).len, 0u);
  EXPECT_EQ(uc::encode_utf8(0xD800), "\xEF\xBF\xBD");
  EXPECT_EQ(uc::encode_utf8(0x110000), "\xEF\xBF\xBD");
}

TEST(Unicode, Categories) {
  EXPECT_EQ(uc::category('A'), uc::Category::Lu);
  EXPECT_EQ(uc::category('z'), uc::Category::Ll);
  EXPECT_EQ(uc::category('7'), uc::Category::Nd);
  EXPECT_EQ(uc::category(0x00B2), uc::Category::No);   // ²
  EXPECT_EQ(uc::category(0x2165), uc::Category::Nl);   // Ⅵ
  EXPECT_EQ(uc::category(0x4E2D), uc::Category::Lo);   // 中
  EXPECT_EQ(uc::category(0x0301), uc::Category::Mn);   // combining acute
  EXPECT_EQ(uc::category(0x1F999), uc::Category::So);  // 🦙
  EXPECT_EQ(uc::category(0x0378), uc::Category::Cn);   // unassigned
  EXPECT_EQ(uc::category(0x10FFFF), uc::Category::Cn);
  EXPECT_EQ(uc::category(0x20AC), uc::Category::Sc);   // €
  EXPECT_EQ(uc::category(','), uc::Category::Po);
  EXPECT_TRUE(uc::is_letter(0x00DF));                  // ß
  EXPECT_TRUE(uc::is_letter(0x0416));                  // Ж
  EXPECT_FALSE(uc::is_letter('_'));
  EXPECT_TRUE(uc::is_number(0x0663));                  // Arabic-Indic three
  EXPECT_TRUE(uc::is_punctuation('_'));
  EXPECT_TRUE(uc::is_symbol('+'));
  EXPECT_TRUE(uc::is_mark(0x0301));
  for (uint32_t cp : {0x09u, 0x0Au, 0x0Bu, 0x0Cu, 0x0Du, 0x20u, 0x85u, 0xA0u, 0x1680u, 0x2000u, 0x200Au, 0x2028u,
                      0x2029u, 0x202Fu, 0x205Fu, 0x3000u}) {
    EXPECT_TRUE(uc::is_whitespace(cp)) << cp;
  }
  for (uint32_t cp : {0x08u, 0x1Cu, 0x200Bu, 0xFEFFu, 0x41u, 0x180Eu}) EXPECT_FALSE(uc::is_whitespace(cp)) << cp;
}

struct SplitCase {
  PreTokenizer kind;
  std::string text;
  std::vector<std::string> pieces;
};

const std::vector<SplitCase>& split_cases() {
  static const std::vector<SplitCase> cases = {
    {PreTokenizer::Gpt2, "I'm sure you'LL DON'T 's", {"I", "'m", " sure", " you", "'", "LL", " DON", "'", "T", " '", "s"}},
    {PreTokenizer::Llama3, "I'm sure you'LL DON'T 's", {"I", "'m", " sure", " you", "'LL", " DON", "'T", " '", "s"}},
    {PreTokenizer::Qwen2, "I'm sure you'LL DON'T 's", {"I", "'m", " sure", " you", "'LL", " DON", "'T", " '", "s"}},
    {PreTokenizer::Smollm, "I'm sure you'LL DON'T 's", {"I", "'m", " sure", " you", "'", "LL", " DON", "'", "T", " '", "s"}},
    {PreTokenizer::Gpt2, "abc12345 67 x", {"abc", "12345", " 67", " x"}},
    {PreTokenizer::Llama3, "abc12345 67 x", {"abc", "123", "45", " ", "67", " x"}},
    {PreTokenizer::Qwen2, "abc12345 67 x", {"abc", "1", "2", "3", "4", "5", " ", "6", "7", " x"}},
    {PreTokenizer::Smollm, "abc12345 67 x", {"abc", "1", "2", "3", "4", "5", " ", "6", "7", " x"}},
    {PreTokenizer::Gpt2, "a  b\x09""\x09""c   \x0A""\x0A""  d  ", {"a", " ", " b", "\x09""", "\x09""", "c", "   \x0A""\x0A"" ", " d", "  "}},
    {PreTokenizer::Llama3, "a  b\x09""\x09""c   \x0A""\x0A""  d  ", {"a", " ", " b", "\x09""", "\x09""c", "   \x0A""\x0A""", " ", " d", "  "}},
    {PreTokenizer::Qwen2, "a  b\x09""\x09""c   \x0A""\x0A""  d  ", {"a", " ", " b", "\x09""", "\x09""c", "   \x0A""\x0A""", " ", " d", "  "}},
    {PreTokenizer::Smollm, "a  b\x09""\x09""c   \x0A""\x0A""  d  ", {"a", " ", " b", "\x09""", "\x09""", "c", "   \x0A""\x0A"" ", " d", "  "}},
    {PreTokenizer::Gpt2, "Hello,\x0D""\x0A""\x0D""\x0A""  world!!\x0A""", {"Hello", ",", "\x0D""\x0A""\x0D""\x0A"" ", " world", "!!", "\x0A"""}},
    {PreTokenizer::Llama3, "Hello,\x0D""\x0A""\x0D""\x0A""  world!!\x0A""", {"Hello", ",\x0D""\x0A""\x0D""\x0A""", " ", " world", "!!\x0A"""}},
    {PreTokenizer::Qwen2, "Hello,\x0D""\x0A""\x0D""\x0A""  world!!\x0A""", {"Hello", ",\x0D""\x0A""\x0D""\x0A""", " ", " world", "!!\x0A"""}},
    {PreTokenizer::Smollm, "Hello,\x0D""\x0A""\x0D""\x0A""  world!!\x0A""", {"Hello", ",", "\x0D""\x0A""\x0D""\x0A"" ", " world", "!!", "\x0A"""}},
    {PreTokenizer::Gpt2, "\xF0""\x9F""\xA6""\x99""\xF0""\x9F""\xA6""\x99"" emoji's ok \xF0""\x9F""\x91""\x8D""\xF0""\x9F""\x8F""\xBD""", {"\xF0""\x9F""\xA6""\x99""\xF0""\x9F""\xA6""\x99""", " emoji", "'s", " ok", " \xF0""\x9F""\x91""\x8D""\xF0""\x9F""\x8F""\xBD"""}},
    {PreTokenizer::Llama3, "\xF0""\x9F""\xA6""\x99""\xF0""\x9F""\xA6""\x99"" emoji's ok \xF0""\x9F""\x91""\x8D""\xF0""\x9F""\x8F""\xBD""", {"\xF0""\x9F""\xA6""\x99""\xF0""\x9F""\xA6""\x99""", " emoji", "'s", " ok", " \xF0""\x9F""\x91""\x8D""\xF0""\x9F""\x8F""\xBD"""}},
    {PreTokenizer::Qwen2, "\xF0""\x9F""\xA6""\x99""\xF0""\x9F""\xA6""\x99"" emoji's ok \xF0""\x9F""\x91""\x8D""\xF0""\x9F""\x8F""\xBD""", {"\xF0""\x9F""\xA6""\x99""\xF0""\x9F""\xA6""\x99""", " emoji", "'s", " ok", " \xF0""\x9F""\x91""\x8D""\xF0""\x9F""\x8F""\xBD"""}},
    {PreTokenizer::Smollm, "\xF0""\x9F""\xA6""\x99""\xF0""\x9F""\xA6""\x99"" emoji's ok \xF0""\x9F""\x91""\x8D""\xF0""\x9F""\x8F""\xBD""", {"\xF0""\x9F""\xA6""\x99""\xF0""\x9F""\xA6""\x99""", " emoji", "'s", " ok", " \xF0""\x9F""\x91""\x8D""\xF0""\x9F""\x8F""\xBD"""}},
    {PreTokenizer::Gpt2, "  leading and trailing   ", {" ", " leading", " and", " trailing", "   "}},
    {PreTokenizer::Llama3, "  leading and trailing   ", {" ", " leading", " and", " trailing", "   "}},
    {PreTokenizer::Qwen2, "  leading and trailing   ", {" ", " leading", " and", " trailing", "   "}},
    {PreTokenizer::Smollm, "  leading and trailing   ", {" ", " leading", " and", " trailing", "   "}},
    {PreTokenizer::Gpt2, "tab\x09""x\xC2""\xA0""nbsp\xE3""\x80""\x80""ideo", {"tab", "\x09""", "x", "\xC2""\xA0""", "nbsp", "\xE3""\x80""\x80""", "ideo"}},
    {PreTokenizer::Llama3, "tab\x09""x\xC2""\xA0""nbsp\xE3""\x80""\x80""ideo", {"tab", "\x09""x", "\xC2""\xA0""nbsp", "\xE3""\x80""\x80""ideo"}},
    {PreTokenizer::Qwen2, "tab\x09""x\xC2""\xA0""nbsp\xE3""\x80""\x80""ideo", {"tab", "\x09""x", "\xC2""\xA0""nbsp", "\xE3""\x80""\x80""ideo"}},
    {PreTokenizer::Smollm, "tab\x09""x\xC2""\xA0""nbsp\xE3""\x80""\x80""ideo", {"tab", "\x09""", "x", "\xC2""\xA0""", "nbsp", "\xE3""\x80""\x80""", "ideo"}},
    {PreTokenizer::Gpt2, "3.14159 + 2,000", {"3", ".", "14159", " +", " 2", ",", "000"}},
    {PreTokenizer::Llama3, "3.14159 + 2,000", {"3", ".", "141", "59", " +", " ", "2", ",", "000"}},
    {PreTokenizer::Qwen2, "3.14159 + 2,000", {"3", ".", "1", "4", "1", "5", "9", " +", " ", "2", ",", "0", "0", "0"}},
    {PreTokenizer::Smollm, "3.14159 + 2,000", {"3", ".", "1", "4", "1", "5", "9", " +", " ", "2", ",", "0", "0", "0"}},
    {PreTokenizer::Gpt2, "\xC3""\x84""\xC3""\x96""\xC3""\x9C"" stra\xC3""\x9F""e x\xC2""\xB2""", {"\xC3""\x84""\xC3""\x96""\xC3""\x9C""", " stra\xC3""\x9F""e", " x", "\xC2""\xB2"""}},
    {PreTokenizer::Llama3, "\xC3""\x84""\xC3""\x96""\xC3""\x9C"" stra\xC3""\x9F""e x\xC2""\xB2""", {"\xC3""\x84""\xC3""\x96""\xC3""\x9C""", " stra\xC3""\x9F""e", " x", "\xC2""\xB2"""}},
    {PreTokenizer::Qwen2, "\xC3""\x84""\xC3""\x96""\xC3""\x9C"" stra\xC3""\x9F""e x\xC2""\xB2""", {"\xC3""\x84""\xC3""\x96""\xC3""\x9C""", " stra\xC3""\x9F""e", " x", "\xC2""\xB2"""}},
    {PreTokenizer::Smollm, "\xC3""\x84""\xC3""\x96""\xC3""\x9C"" stra\xC3""\x9F""e x\xC2""\xB2""", {"\xC3""\x84""\xC3""\x96""\xC3""\x9C""", " stra\xC3""\x9F""e", " x", "\xC2""\xB2"""}},
    {PreTokenizer::Gpt2, "\x0A""", {"\x0A"""}},
    {PreTokenizer::Llama3, "\x0A""", {"\x0A"""}},
    {PreTokenizer::Qwen2, "\x0A""", {"\x0A"""}},
    {PreTokenizer::Smollm, "\x0A""", {"\x0A"""}},
    {PreTokenizer::Gpt2, " ", {" "}},
    {PreTokenizer::Llama3, " ", {" "}},
    {PreTokenizer::Qwen2, " ", {" "}},
    {PreTokenizer::Smollm, " ", {" "}},
    {PreTokenizer::Gpt2, "'", {"'"}},
    {PreTokenizer::Llama3, "'", {"'"}},
    {PreTokenizer::Qwen2, "'", {"'"}},
    {PreTokenizer::Smollm, "'", {"'"}},
    {PreTokenizer::Gpt2, "x'", {"x", "'"}},
    {PreTokenizer::Llama3, "x'", {"x", "'"}},
    {PreTokenizer::Qwen2, "x'", {"x", "'"}},
    {PreTokenizer::Smollm, "x'", {"x", "'"}},
    {PreTokenizer::Gpt2, "  \x0A""", {"  \x0A"""}},
    {PreTokenizer::Llama3, "  \x0A""", {"  \x0A"""}},
    {PreTokenizer::Qwen2, "  \x0A""", {"  \x0A"""}},
    {PreTokenizer::Smollm, "  \x0A""", {"  \x0A"""}},
  };
  return cases;
}

TEST(PreTokenizer, MatchesRegexSemantics) {
  for (const auto& c : split_cases()) {
    const auto got = detail::pre_tokenize(c.kind, c.text);
    std::vector<std::string> pieces(got.begin(), got.end());
    EXPECT_EQ(pieces, c.pieces) << "kind " << static_cast<int>(c.kind) << " text " << testing::PrintToString(c.text);
  }
}

TEST(PreTokenizer, Names) {
  EXPECT_EQ(detail::pre_tokenizer_from_name("llama-bpe"), PreTokenizer::Llama3);
  EXPECT_EQ(detail::pre_tokenizer_from_name("llama3"), PreTokenizer::Llama3);
  EXPECT_EQ(detail::pre_tokenizer_from_name("qwen2"), PreTokenizer::Qwen2);
  EXPECT_EQ(detail::pre_tokenizer_from_name("smollm"), PreTokenizer::Smollm);
  EXPECT_EQ(detail::pre_tokenizer_from_name("gpt2"), PreTokenizer::Gpt2);
  EXPECT_EQ(detail::pre_tokenizer_from_name("default"), PreTokenizer::Gpt2);
  try {
    detail::pre_tokenizer_from_name("deepseek-coder");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("deepseek-coder"), std::string::npos);
    EXPECT_NE(msg.find("smollm"), std::string::npos);
    EXPECT_NE(msg.find("tokenizer.ggml.pre"), std::string::npos);
  }
}

// Random bytes (mostly invalid UTF-8): every pre-tokenizer must cover the input exactly, in
// order, with non-empty pieces, and never crash.
TEST(PreTokenizer, RandomBytesAreCoveredExactly) {
  std::mt19937 rng(1234);
  const char alphabet[] = {' ', '\n', '\r', '\t', 'a', 'Z', '7', '\'', '!', '\xC3', '\xA9', '\xE2', '\x96',
                           '\x81', '\xF0', '\x9F', '\xFF', '\x80', '\0'};
  for (int iter = 0; iter < 2000; ++iter) {
    std::string s(rng() % 24, ' ');
    for (char& c : s) c = alphabet[rng() % sizeof alphabet];
    for (PreTokenizer k : {PreTokenizer::Gpt2, PreTokenizer::Llama3, PreTokenizer::Qwen2, PreTokenizer::Smollm}) {
      std::string joined;
      for (std::string_view p : detail::pre_tokenize(k, s)) {
        ASSERT_FALSE(p.empty());
        joined += p;
      }
      ASSERT_EQ(joined, s);
    }
  }
}

TEST(ByteAlphabet, IsABijectionOntoPrintableCodePoints) {
  EXPECT_EQ(detail::byte_to_unicode(' '), 0x120u);   // Ġ
  EXPECT_EQ(detail::byte_to_unicode('\n'), 0x10Au);  // Ċ
  EXPECT_EQ(detail::byte_to_unicode('A'), 0x41u);
  EXPECT_EQ(detail::byte_to_unicode(0xAD), 0x143u);
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = detail::byte_to_unicode(static_cast<uint8_t>(b));
    EXPECT_EQ(detail::unicode_to_byte(cp), b);
    EXPECT_FALSE(uc::is_whitespace(cp));
  }
  EXPECT_EQ(detail::unicode_to_byte(0x20), -1);
  EXPECT_EQ(detail::unicode_to_byte(0x2581), -1);
}

}  // namespace
}  // namespace herd::model
