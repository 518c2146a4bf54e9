// SentencePiece-style tokenizer (tokenizer.ggml.model "llama"): spaces become U+2581, an
// optional "▁" prefix, then greedy merging of adjacent symbols by highest vocabulary score;
// characters outside the vocabulary fall back to byte tokens <0xNN> (or UNK).
#include <array>
#include <cstdio>

#include "model/tokenizer_impl.h"
#include "model/unicode.h"

namespace herd::model::detail {

namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK, "▁"

class SpmTokenizer final : public VocabBase {
 public:
  explicit SpmTokenizer(const VocabData& v)
      : VocabBase(v, /*bos*/ 1, /*eos*/ 2, /*unk*/ 0, /*add_bos*/ true),
        scores_(v.scores),
        add_space_prefix_(v.add_space_prefix.value_or(true)) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      byte_tokens_[b] = find_token(name);
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const override {
    std::vector<int32_t> out;
    if (add_special && add_bos_) out.push_back(bos_);
    // The prefix space goes before the text at the start and after every special token.
    bool after_special = true;
    for (const Fragment& f : split_special(text, parse_special)) {
      if (f.token >= 0) {
        out.push_back(f.token);
        after_special = true;
        continue;
      }
      std::string escaped;
      escaped.reserve(f.text.size() + 8);
      if (add_space_prefix_ && after_special) escaped += kSpace;
      for (char c : f.text) {
        if (c == ' ') {
          escaped += kSpace;
        } else {
          escaped += c;
        }
      }
      encode_escaped(escaped, out);
      after_special = false;
    }
    if (add_special && add_eos_) out.push_back(eos_);
    return out;
  }

  std::string token_to_piece(int32_t id, bool render_special) const override {
    check_id(id);
    const std::string& text = tokens_[id];
    switch (types_[id]) {
      case TokenType::Normal: {
        std::string s;
        s.reserve(text.size());
        for (size_t i = 0; i < text.size();) {
          if (text.compare(i, kSpace.size(), kSpace) == 0) {
            s += ' ';
            i += kSpace.size();
          } else {
            s += text[i++];
          }
        }
        return s;
      }
      case TokenType::Byte: {
        const int b = byte_value(text);
        return b >= 0 ? std::string(1, static_cast<char>(b)) : std::string();
      }
      case TokenType::UserDefined:
        return text;
      case TokenType::Control:
      case TokenType::Unknown:
        return render_special ? text : std::string();
      default:
        return {};
    }
  }

 protected:
  bool strips_leading_space() const override { return add_space_prefix_; }

 private:
  // "<0xNN>" -> NN, -1 otherwise.
  static int byte_value(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    auto hex = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int hi = hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }

  void encode_escaped(std::string_view text, std::vector<int32_t>& out) const {
    // Initial symbols: one per UTF-8 character (an invalid byte is a symbol of its own).
    std::vector<MergeSymbol> syms;
    syms.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
      const uint32_t len = unicode::decode_utf8(text, pos).len;
      const auto i = static_cast<int32_t>(syms.size());
      syms.push_back({static_cast<uint32_t>(pos), len, i - 1, -1});
      if (i > 0) syms[i - 1].next = i;
      pos += len;
    }
    merge_bigrams(text, syms, [&](std::string_view joined, uint32_t) -> std::optional<double> {
      const int32_t id = find_token(joined);
      if (id < 0) return std::nullopt;
      return scores_[id];
    });
    // Every merged symbol is a vocabulary token; single characters may not be.
    for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) {
      const std::string_view s = text.substr(syms[i].offset, syms[i].len);
      const int32_t id = find_token(s);
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
      bool all_bytes = true;
      for (char c : s) all_bytes = all_bytes && byte_tokens_[static_cast<uint8_t>(c)] >= 0;
      if (all_bytes) {
        for (char c : s) out.push_back(byte_tokens_[static_cast<uint8_t>(c)]);
      } else if (unk_ >= 0) {
        out.push_back(unk_);  // one UNK per unknown character, as SentencePiece does
      }
    }
  }

  std::vector<float> scores_;  // [n_vocab]
  bool add_space_prefix_;
  std::array<int32_t, 256> byte_tokens_{};  // byte -> id of "<0xNN>", -1 when absent
};

}  // namespace

std::unique_ptr<Tokenizer> make_spm_tokenizer(const VocabData& v) { return std::make_unique<SpmTokenizer>(v); }

}  // namespace herd::model::detail
