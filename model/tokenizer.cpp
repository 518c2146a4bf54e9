// Tokenizer construction from GGUF metadata, validation, and what both kinds share.
#include "model/tokenizer.h"

#include <algorithm>
#include <stdexcept>

#include "model/gguf.h"
#include "model/tokenizer_impl.h"

namespace herd::model {

namespace detail {

namespace {

[[noreturn]] void fail(const std::string& key, const std::string& what) {
  throw std::runtime_error("tokenizer: " + key + ": " + what);
}

// Special ids are stored as uint32 in GGUF; some converters write 0xFFFFFFFF (or -1) for "none".
std::optional<int32_t> checked_id(const std::optional<int64_t>& v, const char* key, size_t n_vocab) {
  if (!v) return std::nullopt;
  if (*v == -1 || *v == 0xFFFFFFFFLL) return -1;
  if (*v < 0 || static_cast<uint64_t>(*v) >= n_vocab) {
    fail(key, "id " + std::to_string(*v) + " out of range (n_vocab " + std::to_string(n_vocab) + ")");
  }
  return static_cast<int32_t>(*v);
}

// Names of end-of-turn tokens that llama.cpp also treats as end of generation when present.
constexpr std::string_view kEogNames[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>", "<end_of_turn>", "<|eom_id|>",
    "<EOT>",      "<|end_of_text|>", "<|return|>", "<|call|>", "<|end_of_turn|>", "<｜end▁of▁sentence｜>",
};

}  // namespace

VocabBase::VocabBase(const VocabData& v, int32_t default_bos, int32_t default_eos, int32_t default_unk,
                     bool default_add_bos)
    : tokens_(v.tokens) {
  const size_t n = tokens_.size();
  types_.resize(n, TokenType::Normal);
  for (size_t i = 0; i < v.types.size(); ++i) types_[i] = static_cast<TokenType>(v.types[i]);
  token_ids_.reserve(n);
  for (size_t i = 0; i < n; ++i) token_ids_.emplace(tokens_[i], static_cast<int32_t>(i));  // first wins

  auto id_or = [&](const std::optional<int64_t>& x, const char* key, int32_t def) {
    const std::optional<int32_t> id = checked_id(x, key, n);
    return id ? *id : (def < static_cast<int32_t>(n) ? def : -1);
  };
  bos_ = id_or(v.bos, "tokenizer.ggml.bos_token_id", default_bos);
  eos_ = id_or(v.eos, "tokenizer.ggml.eos_token_id", default_eos);
  eot_ = id_or(v.eot, "tokenizer.ggml.eot_token_id", -1);
  eom_ = id_or(v.eom, "tokenizer.ggml.eom_token_id", -1);
  unk_ = id_or(v.unk, "tokenizer.ggml.unknown_token_id", default_unk);
  pad_ = id_or(v.pad, "tokenizer.ggml.padding_token_id", -1);
  add_bos_ = v.add_bos.value_or(default_add_bos) && bos_ >= 0;
  add_eos_ = v.add_eos.value_or(false) && eos_ >= 0;

  for (size_t i = 0; i < n; ++i) {
    const TokenType t = types_[i];
    if ((t == TokenType::Control || t == TokenType::UserDefined || t == TokenType::Unknown) && !tokens_[i].empty()) {
      specials_.push_back(static_cast<int32_t>(i));
    }
  }
  std::stable_sort(specials_.begin(), specials_.end(),
                   [&](int32_t a, int32_t b) { return tokens_[a].size() > tokens_[b].size(); });

  for (int32_t id : {eos_, eot_, eom_}) {
    if (id >= 0) eog_ids_.push_back(id);
  }
  for (std::string_view name : kEogNames) {
    const int32_t id = find_token(name);
    if (id >= 0 && types_[id] != TokenType::Normal && types_[id] != TokenType::Byte) eog_ids_.push_back(id);
  }
  std::sort(eog_ids_.begin(), eog_ids_.end());
  eog_ids_.erase(std::unique(eog_ids_.begin(), eog_ids_.end()), eog_ids_.end());
}

bool VocabBase::is_eog(int32_t id) const {
  return id >= 0 && std::binary_search(eog_ids_.begin(), eog_ids_.end(), id);
}

void VocabBase::check_id(int32_t id) const {
  if (id < 0 || id >= n_vocab()) {
    throw std::out_of_range("tokenizer: token id " + std::to_string(id) + " out of range (n_vocab " +
                            std::to_string(n_vocab()) + ")");
  }
}

const std::string& VocabBase::token_text(int32_t id) const {
  check_id(id);
  return tokens_[id];
}

TokenType VocabBase::token_type(int32_t id) const {
  check_id(id);
  return types_[id];
}

int32_t VocabBase::find_token(std::string_view text) const {
  const auto it = token_ids_.find(text);
  return it == token_ids_.end() ? -1 : it->second;
}

std::vector<VocabBase::Fragment> VocabBase::split_special(std::string_view text, bool parse_special) const {
  std::vector<Fragment> frags;
  if (text.empty()) return frags;
  frags.push_back({-1, text});
  std::vector<Fragment> next;
  for (int32_t id : specials_) {
    const TokenType t = types_[id];
    if (!parse_special && t != TokenType::UserDefined) continue;
    const std::string& s = tokens_[id];
    bool found = false;
    for (const Fragment& f : frags) {
      if (f.token >= 0 || f.text.find(s) == std::string_view::npos) continue;
      found = true;
      break;
    }
    if (!found) continue;
    next.clear();
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      std::string_view rest = f.text;
      for (size_t pos; (pos = rest.find(s)) != std::string_view::npos;) {
        if (pos > 0) next.push_back({-1, rest.substr(0, pos)});
        next.push_back({id, {}});
        rest.remove_prefix(pos + s.size());
      }
      if (!rest.empty()) next.push_back({-1, rest});
    }
    frags.swap(next);
  }
  return frags;
}

std::string VocabBase::decode(const std::vector<int32_t>& ids, bool render_special) const {
  std::string out;
  bool strip = strips_leading_space();
  for (int32_t id : ids) {
    std::string piece = token_to_piece(id, render_special);
    if (piece.empty()) continue;  // e.g. BOS: the prefix space belongs to the next real piece
    if (strip && piece[0] == ' ') piece.erase(0, 1);
    strip = false;
    out += piece;
  }
  return out;
}

std::unique_ptr<Tokenizer> make_tokenizer(VocabData v) {
  const size_t n = v.tokens.size();
  if (v.model.empty()) fail("tokenizer.ggml.model", "missing");
  if (v.model != "llama" && v.model != "gpt2") {
    throw std::runtime_error("tokenizer: unsupported tokenizer model " + v.model + " (supported: llama, gpt2)");
  }
  if (n == 0) fail("tokenizer.ggml.tokens", "missing or empty");
  if (n > static_cast<size_t>(INT32_MAX)) fail("tokenizer.ggml.tokens", "too many tokens");
  if (!v.scores.empty() && v.scores.size() != n) {
    fail("tokenizer.ggml.scores", std::to_string(v.scores.size()) + " entries for " + std::to_string(n) + " tokens");
  }
  if (!v.types.empty() && v.types.size() != n) {
    fail("tokenizer.ggml.token_type",
         std::to_string(v.types.size()) + " entries for " + std::to_string(n) + " tokens");
  }
  for (size_t i = 0; i < v.types.size(); ++i) {
    if (v.types[i] < 0 || v.types[i] > static_cast<int32_t>(TokenType::Byte)) {
      fail("tokenizer.ggml.token_type", "entry " + std::to_string(i) + " has invalid type " + std::to_string(v.types[i]));
    }
  }
  if (v.model == "llama") {
    if (v.scores.empty()) fail("tokenizer.ggml.scores", "missing (required for model llama)");
    return make_spm_tokenizer(v);
  }
  if (v.merges.empty()) fail("tokenizer.ggml.merges", "missing or empty (required for model gpt2)");
  for (size_t i = 0; i < v.merges.size(); ++i) {
    const std::string& m = v.merges[i];
    const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
    if (sp == std::string::npos || sp + 1 >= m.size()) {
      fail("tokenizer.ggml.merges", "entry " + std::to_string(i) + " is not \"left right\": \"" + m + "\"");
    }
  }
  pre_tokenizer_from_name(v.pre.empty() ? "default" : v.pre);  // throws for unknown names
  return make_bpe_tokenizer(v);
}

}  // namespace detail

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& f) {
  detail::VocabData v;
  auto key = [](const char* k) { return std::string("tokenizer.ggml.") + k; };
  v.model = f.get_string(key("model")).value_or("");
  if (v.model.empty()) throw std::runtime_error("tokenizer: tokenizer.ggml.model: missing");
  v.pre = f.get_string(key("pre")).value_or("");
  if (auto t = f.get_string_array(key("tokens"))) v.tokens = std::move(*t);
  if (auto s = f.get_float_array(key("scores"))) v.scores = std::move(*s);
  if (auto t = f.get_int_array(key("token_type"))) {
    v.types.reserve(t->size());
    for (size_t i = 0; i < t->size(); ++i) {
      const int64_t x = (*t)[i];
      if (x < 0 || x > static_cast<int64_t>(TokenType::Byte)) {
        throw std::runtime_error("tokenizer: tokenizer.ggml.token_type: entry " + std::to_string(i) +
                                 " has invalid type " + std::to_string(x));
      }
      v.types.push_back(static_cast<int32_t>(x));
    }
  }
  if (auto m = f.get_string_array(key("merges"))) v.merges = std::move(*m);
  v.bos = f.get_int(key("bos_token_id"));
  v.eos = f.get_int(key("eos_token_id"));
  v.eot = f.get_int(key("eot_token_id"));
  v.eom = f.get_int(key("eom_token_id"));
  v.unk = f.get_int(key("unknown_token_id"));
  v.pad = f.get_int(key("padding_token_id"));
  v.add_bos = f.get_bool(key("add_bos_token"));
  v.add_eos = f.get_bool(key("add_eos_token"));
  v.add_space_prefix = f.get_bool(key("add_space_prefix"));
  return detail::make_tokenizer(std::move(v));
}

}  // namespace herd::model
