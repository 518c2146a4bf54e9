// GPT-2 style byte-level BPE (tokenizer.ggml.model "gpt2"): the text is split into words by the
// pre-tokenizer, each word's bytes are written in the GPT-2 byte alphabet (every byte one
// printable code point), and adjacent symbols are merged lowest merge rank first.
#include <array>

#include "model/tokenizer_impl.h"
#include "model/unicode.h"

namespace herd::model::detail {

namespace {

// GPT-2's table: printable Latin-1 bytes stand for themselves; the other 68 bytes (controls,
// space, DEL, NBSP, soft hyphen) take U+0100.. in byte order so no byte maps to whitespace.
struct ByteAlphabet {
  std::array<uint32_t, 256> to_cp{};
  ByteAlphabet() {
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_cp[b] = printable ? b : next++;
    }
  }
};
const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

class BpeTokenizer final : public VocabBase {
 public:
  explicit BpeTokenizer(const VocabData& v)
      : VocabBase(v, /*bos*/ -1, /*eos*/ -1, /*unk*/ -1, /*add_bos*/ false),
        pre_(pre_tokenizer_from_name(v.pre.empty() ? "default" : v.pre)),
        // Llama 3's tokenizer takes a word that is itself a token as is, before any merge.
        ignore_merges_(pre_ == PreTokenizer::Llama3) {
    merge_ranks_.reserve(v.merges.size());
    for (size_t i = 0; i < v.merges.size(); ++i) merge_ranks_.emplace(v.merges[i], static_cast<int32_t>(i));
    for (uint32_t b = 0; b < 256; ++b) byte_strings_[b] = unicode::encode_utf8(alphabet().to_cp[b]);
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const override {
    std::vector<int32_t> out;
    if (add_special && add_bos_) out.push_back(bos_);
    for (const Fragment& f : split_special(text, parse_special)) {
      if (f.token >= 0) {
        out.push_back(f.token);
        continue;
      }
      for (std::string_view word : pre_tokenize(pre_, f.text)) encode_word(word, out);
    }
    if (add_special && add_eos_) out.push_back(eos_);
    return out;
  }

  std::string token_to_piece(int32_t id, bool render_special) const override {
    check_id(id);
    const std::string& text = tokens_[id];
    switch (types_[id]) {
      case TokenType::Normal:
      case TokenType::Byte: {
        std::string s;
        s.reserve(text.size());
        for (size_t pos = 0; pos < text.size();) {
          const unicode::Decoded d = unicode::decode_utf8(text, pos);
          const int32_t b = d.valid ? unicode_to_byte(d.cp) : -1;
          if (b >= 0) {
            s += static_cast<char>(b);
          } else {
            s.append(text, pos, d.len);  // not in the byte alphabet: keep as written
          }
          pos += d.len;
        }
        return s;
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

 private:
  void encode_word(std::string_view word, std::vector<int32_t>& out) const {
    std::string mapped;  // the word in the byte alphabet: one symbol per source byte
    mapped.reserve(word.size() * 2);
    std::vector<MergeSymbol> syms;
    syms.reserve(word.size());
    auto push_byte = [&](uint8_t b) {
      const auto i = static_cast<int32_t>(syms.size());
      const std::string& s = byte_strings_[b];
      syms.push_back({static_cast<uint32_t>(mapped.size()), static_cast<uint32_t>(s.size()), i - 1, -1});
      if (i > 0) syms[i - 1].next = i;
      mapped += s;
    };
    // An invalid UTF-8 byte is encoded as U+FFFD, as llama.cpp does: byte-level vocabularies
    // often lack the bytes that valid UTF-8 never contains (0xC0, 0xC1, 0xF5..0xFF).
    for (size_t pos = 0; pos < word.size();) {
      const unicode::Decoded d = unicode::decode_utf8(word, pos);
      if (d.valid) {
        for (uint32_t k = 0; k < d.len; ++k) push_byte(static_cast<uint8_t>(word[pos + k]));
      } else {
        for (char c : std::string_view("\xEF\xBF\xBD")) push_byte(static_cast<uint8_t>(c));
      }
      pos += d.len;
    }
    if (ignore_merges_) {
      const int32_t id = find_token(mapped);
      if (id >= 0) {
        out.push_back(id);
        return;
      }
    }
    // A merge is a pair, not a joined string ("a bc" and "ab c" differ): probe "left right".
    const std::string_view text = mapped;
    std::string key;
    merge_bigrams(text, syms, [&](std::string_view joined, uint32_t left_len) -> std::optional<double> {
      key.assign(joined.substr(0, left_len));
      key += ' ';
      key.append(joined.substr(left_len));
      const auto it = merge_ranks_.find(key);
      if (it == merge_ranks_.end()) return std::nullopt;
      return -static_cast<double>(it->second);
    });
    for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) {
      const std::string_view s = text.substr(syms[i].offset, syms[i].len);
      const int32_t id = find_token(s);
      if (id >= 0) {
        out.push_back(id);
      } else if (unk_ >= 0) {
        out.push_back(unk_);
      }
    }
  }

  PreTokenizer pre_;
  bool ignore_merges_;
  TokenMap merge_ranks_;  // "left right" -> rank (first occurrence wins)
  std::array<std::string, 256> byte_strings_;  // byte -> its alphabet character in UTF-8
};

}  // namespace

uint32_t byte_to_unicode(uint8_t b) { return alphabet().to_cp[b]; }

int32_t unicode_to_byte(uint32_t cp) {
  static const std::array<int32_t, 324> inverse = [] {
    std::array<int32_t, 324> inv;
    inv.fill(-1);
    for (uint32_t b = 0; b < 256; ++b) inv[alphabet().to_cp[b]] = static_cast<int32_t>(b);
    return inv;
  }();
  return cp < inverse.size() ? inverse[cp] : -1;
}

std::unique_ptr<Tokenizer> make_bpe_tokenizer(const VocabData& v) { return std::make_unique<BpeTokenizer>(v); }

}  // namespace herd::model::detail
