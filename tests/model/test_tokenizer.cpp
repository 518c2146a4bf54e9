// Tokenizers against llama.cpp's ids: the Llama SentencePiece vocabulary (llama.cpp's own test
// vectors) and SmolLM2's GPT-2 BPE vocabulary (vectors from scripts/gen-tokenizer-vectors.py),
// plus toy vocabularies that pin the merge rules, and metadata validation.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"
#include "tests/test_paths.h"

namespace herd::model {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// llama.cpp's vector format: each input followed by "\n__ggml_vocab_test__\n"; one line of ids each.
std::vector<std::string> read_inputs(const std::string& path) {
  const std::string sep = "\n__ggml_vocab_test__\n";
  const std::string data = slurp(path);
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t pos; (pos = data.find(sep, start)) != std::string::npos; start = pos + sep.size()) {
    out.push_back(data.substr(start, pos - start));
  }
  EXPECT_EQ(start, data.size()) << path << " must end with the separator";
  return out;
}

std::vector<std::vector<int32_t>> read_ids(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::vector<int32_t>> out;
  for (std::string line; std::getline(f, line);) {
    std::istringstream ls(line);
    std::vector<int32_t> ids;
    for (int32_t id; ls >> id;) ids.push_back(id);
    out.push_back(std::move(ids));
  }
  return out;
}

std::unique_ptr<Tokenizer> load(const std::string& path) {
  auto f = GgufFile::open(path);
  return Tokenizer::from_gguf(*f);
}

// Encodes every input and compares with the oracle; returns how many matched.
int check_vectors(const Tokenizer& tok, const std::string& prefix, bool parse_special, bool round_trip) {
  const auto inputs = read_inputs(prefix + ".inp");
  const auto expected = read_ids(prefix + ".out");
  EXPECT_GT(inputs.size(), 0u);
  EXPECT_EQ(inputs.size(), expected.size());
  int matched = 0;
  for (size_t i = 0; i < inputs.size() && i < expected.size(); ++i) {
    const auto ids = tok.encode(inputs[i], /*add_special=*/false, parse_special);
    EXPECT_EQ(ids, expected[i]) << "case " << i << ": " << testing::PrintToString(inputs[i]);
    matched += ids == expected[i];
    if (round_trip) {
      EXPECT_EQ(tok.decode(ids, /*render_special=*/true), inputs[i]) << "case " << i;
    }
  }
  return matched;
}

// ---------------- Llama SentencePiece vocabulary ----------------

class LlamaSpm : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = test::model_path("ggml-vocab-llama-spm.gguf");
    if (std::filesystem::exists(path)) tok_ = load(path).release();
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
  }
  void SetUp() override {
    HERD_REQUIRE_FILE(test::model_path("ggml-vocab-llama-spm.gguf"));
    ASSERT_NE(tok_, nullptr);
  }
  static Tokenizer* tok_;
};
Tokenizer* LlamaSpm::tok_ = nullptr;

TEST_F(LlamaSpm, Metadata) {
  EXPECT_EQ(tok_->n_vocab(), 32000);
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  EXPECT_TRUE(tok_->add_bos());
  EXPECT_TRUE(tok_->is_eog(2));
  EXPECT_FALSE(tok_->is_eog(1));
  EXPECT_FALSE(tok_->is_eog(-1));
  EXPECT_EQ(tok_->token_type(0), TokenType::Unknown);
  EXPECT_EQ(tok_->token_type(1), TokenType::Control);
  EXPECT_EQ(tok_->token_type(13), TokenType::Byte);  // <0x0A>
  EXPECT_EQ(tok_->find_token("<0x0A>"), 13);
  EXPECT_EQ(tok_->find_token("no such token"), -1);
  EXPECT_EQ(tok_->token_text(29871), "\xE2\x96\x81");
  EXPECT_THROW(tok_->token_text(32000), std::out_of_range);
}

TEST_F(LlamaSpm, LlamaCppVectorsMatchExactly) {
  const std::string prefix = test::reference_path("tokenizer/ggml-vocab-llama-spm.gguf");
  HERD_REQUIRE_FILE(prefix + ".inp");
  EXPECT_EQ(check_vectors(*tok_, prefix, false, /*round_trip=*/true), 46);
}

TEST_F(LlamaSpm, SpecialTokens) {
  const auto plain = tok_->encode("Hello world", false, false);
  EXPECT_EQ(plain, (std::vector<int32_t>{15043, 3186}));
  auto with_bos = tok_->encode("Hello world", true, false);
  EXPECT_EQ(with_bos, (std::vector<int32_t>{1, 15043, 3186}));
  EXPECT_EQ(tok_->decode(with_bos), "Hello world");
  // As llama.cpp: only the first rendered piece loses a leading space.
  EXPECT_EQ(tok_->decode(with_bos, true), "<s> Hello world");
  EXPECT_EQ(tok_->encode("", true, false), (std::vector<int32_t>{1}));
  EXPECT_TRUE(tok_->encode("", false, false).empty());
  // "<s>" parsed: the prefix space comes back after a special token.
  EXPECT_EQ(tok_->encode("<s>Hello world", false, true), (std::vector<int32_t>{1, 15043, 3186}));
  // Not parsed: plain text.
  const auto literal = tok_->encode("<s>", false, false);
  EXPECT_GT(literal.size(), 1u);
  for (int32_t id : literal) EXPECT_NE(id, 1);
  EXPECT_EQ(tok_->decode(literal), "<s>");
  EXPECT_EQ(tok_->token_to_piece(15043), " Hello");
  EXPECT_EQ(tok_->token_to_piece(13), "\n");
  EXPECT_EQ(tok_->token_to_piece(1), "");
  EXPECT_EQ(tok_->token_to_piece(1, true), "<s>");
}

TEST_F(LlamaSpm, InvalidUtf8FallsBackToBytes) {
  const std::string bad = "ab\xC3(\xFF\xE2\x96";
  const auto ids = tok_->encode(bad, false, false);
  EXPECT_EQ(tok_->decode(ids), bad);
  EXPECT_EQ(tok_->decode(tok_->encode("\x80", false, false)), "\x80");
}

// ---------------- SmolLM2 (GPT-2 byte-level BPE, pre-tokenizer "smollm") ----------------

class SmolLm2 : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (std::filesystem::exists(test::smollm2_path())) tok_ = load(test::smollm2_path()).release();
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
  }
  void SetUp() override {
    HERD_REQUIRE_FILE(test::smollm2_path());
    ASSERT_NE(tok_, nullptr);
  }
  static std::string data(const std::string& name) { return std::string(HERD_SOURCE_DIR) + "/tests/data/" + name; }
  static Tokenizer* tok_;
};
Tokenizer* SmolLm2::tok_ = nullptr;

TEST_F(SmolLm2, Metadata) {
  EXPECT_EQ(tok_->n_vocab(), 49152);
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  EXPECT_FALSE(tok_->add_bos());  // tokenizer.ggml.add_bos_token = false
  EXPECT_EQ(tok_->find_token("<|im_start|>"), 1);
  EXPECT_EQ(tok_->find_token("<|im_end|>"), 2);
  EXPECT_TRUE(tok_->is_eog(2));  // <|im_end|> (EOS)
  EXPECT_TRUE(tok_->is_eog(0));  // <|endoftext|>
  EXPECT_FALSE(tok_->is_eog(1));
  EXPECT_FALSE(tok_->is_eog(tok_->find_token("Hello")));
  EXPECT_EQ(tok_->encode("Hello", true, false), tok_->encode("Hello", false, false));  // no BOS
}

TEST_F(SmolLm2, LlamaCppVectorsMatchExactly) {
  HERD_REQUIRE_FILE(data("smollm2.inp"));
  const auto n = read_inputs(data("smollm2.inp")).size();
  EXPECT_EQ(check_vectors(*tok_, data("smollm2"), false, /*round_trip=*/true), static_cast<int>(n));
}

TEST_F(SmolLm2, ChatPromptWithSpecialTokensMatchesExactly) {
  HERD_REQUIRE_FILE(data("smollm2-special.inp"));
  const auto n = read_inputs(data("smollm2-special.inp")).size();
  EXPECT_EQ(check_vectors(*tok_, data("smollm2-special"), true, /*round_trip=*/true), static_cast<int>(n));
}

TEST_F(SmolLm2, SpecialTokensOnlyWhenParsed) {
  const auto parsed = tok_->encode("<|im_start|>user", false, true);
  ASSERT_FALSE(parsed.empty());
  EXPECT_EQ(parsed[0], 1);
  const auto literal = tok_->encode("<|im_start|>user", false, false);
  for (int32_t id : literal) EXPECT_NE(id, 1);
  EXPECT_EQ(tok_->decode(literal), "<|im_start|>user");
  EXPECT_EQ(tok_->decode(parsed), "user");  // control tokens render as "" by default
  EXPECT_EQ(tok_->decode(parsed, true), "<|im_start|>user");
  EXPECT_EQ(tok_->token_to_piece(tok_->find_token("\xC4\xA0the")), " the");  // "Ġthe"
}

TEST_F(SmolLm2, InvalidUtf8BecomesReplacementCharacters) {
  // As llama.cpp: each invalid byte is tokenized as U+FFFD (the vocabulary has no token for 0xFF).
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(tok_->decode(tok_->encode("\xFF", false, true)), fffd);
  EXPECT_EQ(tok_->decode(tok_->encode("a\xC3", false, true)), "a" + fffd);
  EXPECT_EQ(tok_->decode(tok_->encode("\xE2\x96 x", false, true)), fffd + fffd + " x");
  EXPECT_EQ(tok_->encode("\x80\x80", false, false), tok_->encode(fffd + fffd, false, false));
  const std::string nul("nul\0byte", 8);
  EXPECT_EQ(tok_->decode(tok_->encode(nul, false, true)), nul);
}

// ---------------- toy vocabularies: the merge rules themselves ----------------

detail::VocabData toy_spm() {
  detail::VocabData v;
  v.model = "llama";
  v.tokens = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "c", "ab", "bc", "\xE2\x96\x81" "a", "abc", "<0x41>"};
  v.scores = {0, 0, 0, -1, -1, -1, -1, -2, -1.5f, -3, -0.5f, 0};
  v.types = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 6};
  return v;
}

TEST(ToySpm, HighestScoreMergesFirstThenUnknownsFallBack) {
  auto tok = detail::make_tokenizer(toy_spm());
  // "▁abc": "bc" (-1.5) beats "ab" (-2) and "▁a" (-3); then "a"+"bc" = "abc" (-0.5) beats
  // "▁a" -> "▁" "abc" ("▁abc" is no token).
  EXPECT_EQ(tok->encode("abc", false, false), (std::vector<int32_t>{3, 10}));
  EXPECT_EQ(tok->encode("abc", true, false), (std::vector<int32_t>{1, 3, 10}));
  // 'A' is not a token but has a byte token; 'Z' has neither -> <unk>.
  EXPECT_EQ(tok->encode("AZ", false, false), (std::vector<int32_t>{3, 11, 0}));
  EXPECT_EQ(tok->decode({3, 10}), "abc");
}

TEST(ToySpm, EqualScoresMergeLeftmostFirst) {
  auto v = toy_spm();
  v.scores[7] = v.scores[8] = -1;  // "ab" and "bc" tie
  v.scores[10] = -100;
  v.add_space_prefix = false;
  auto tok = detail::make_tokenizer(v);
  EXPECT_EQ(tok->encode("abc", false, false), (std::vector<int32_t>{10}));  // ab+c -> abc still allowed
  v.tokens[10] = "zzz";  // no "abc": the leftmost pair "ab" wins the tie
  tok = detail::make_tokenizer(v);
  EXPECT_EQ(tok->encode("abc", false, false), (std::vector<int32_t>{7, 6}));
}

TEST(ToyBpe, MergesApplyByRankAndArePairs) {
  detail::VocabData v;
  v.model = "gpt2";
  v.pre = "gpt2";
  v.tokens = {"a", "b", "c", "ab", "bc", "abc", "\xC4\xA0", "\xC4\xA0" "a", "<|end|>"};
  v.types = {1, 1, 1, 1, 1, 1, 1, 1, 3};
  v.merges = {"b c", "a bc", "\xC4\xA0 a"};  // note: no "ab c"
  auto tok = detail::make_tokenizer(v);
  EXPECT_EQ(tok->encode("abc", false, false), (std::vector<int32_t>{5}));
  EXPECT_EQ(tok->encode("ab", false, false), (std::vector<int32_t>{0, 1}));  // "a b" is no merge
  // " abc" is one word: "b c" (rank 0) before "Ġ a" (rank 2), then "a bc" (rank 1).
  EXPECT_EQ(tok->encode(" abc", false, false), (std::vector<int32_t>{6, 5}));
  EXPECT_EQ(tok->encode(" a", false, false), (std::vector<int32_t>{7}));
  EXPECT_EQ(tok->encode("abc<|end|>", false, true), (std::vector<int32_t>{5, 8}));
  EXPECT_TRUE(tok->is_eog(8));  // named like an end-of-turn token
  EXPECT_EQ(tok->decode({6, 5}), " abc");
  // With ranks swapped so "ab c" exists but "a bc" does not, "abc" must not be produced from a+bc.
  v.merges = {"b c", "ab c"};
  tok = detail::make_tokenizer(v);
  EXPECT_EQ(tok->encode("abc", false, false), (std::vector<int32_t>{0, 4}));
}

// ---------------- metadata validation ----------------

void expect_error(detail::VocabData v, const std::string& needle) {
  try {
    detail::make_tokenizer(std::move(v));
    ADD_FAILURE() << "expected an error mentioning " << needle;
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TokenizerMetadata, InvalidMetadataNamesTheKey) {
  auto v = toy_spm();
  v.scores.pop_back();
  expect_error(v, "tokenizer.ggml.scores");
  v = toy_spm();
  v.scores.clear();
  expect_error(v, "tokenizer.ggml.scores");
  v = toy_spm();
  v.types.push_back(1);
  expect_error(v, "tokenizer.ggml.token_type");
  v = toy_spm();
  v.types[4] = 9;
  expect_error(v, "tokenizer.ggml.token_type");
  v = toy_spm();
  v.bos = 99;
  expect_error(v, "tokenizer.ggml.bos_token_id");
  v = toy_spm();
  v.eos = -7;
  expect_error(v, "tokenizer.ggml.eos_token_id");
  v = toy_spm();
  v.eot = 11;  // in range is fine
  EXPECT_TRUE(detail::make_tokenizer(v)->is_eog(11));
  v = toy_spm();
  v.unk = 13;
  expect_error(v, "tokenizer.ggml.unknown_token_id");
  v = toy_spm();
  v.tokens.clear();
  v.scores.clear();
  v.types.clear();
  expect_error(v, "tokenizer.ggml.tokens");
  v = toy_spm();
  v.model = "bert";
  expect_error(v, "unsupported tokenizer model bert (supported: llama, gpt2)");
  v = toy_spm();
  v.model = "";
  expect_error(v, "tokenizer.ggml.model");
  v = toy_spm();
  v.model = "gpt2";
  expect_error(v, "tokenizer.ggml.merges");
  v.merges = {"ab"};
  expect_error(v, "tokenizer.ggml.merges");
  v.merges = {"a b"};
  v.pre = "falcon";
  expect_error(v, "tokenizer.ggml.pre");
}

// from_gguf reads the same keys and reports the same errors through a real GGUF file.
std::unique_ptr<Tokenizer> from_written(const GgufWriter& w) {
  const std::string path = testing::TempDir() + "herd_tokenizer_meta.gguf";
  w.write(path);
  auto f = GgufFile::open(path);
  return Tokenizer::from_gguf(*f);
}

GgufWriter toy_gguf() {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_string_array("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "\xE2\x96\x81" "a", "a"});
  w.set_array<float>("tokenizer.ggml.scores", {0, 0, 0, -1, -2});
  w.set_array<int32_t>("tokenizer.ggml.token_type", {2, 3, 3, 1, 1});
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_bool("tokenizer.ggml.add_bos_token", false);
  return w;
}

TEST(TokenizerMetadata, FromGgufReadsKeysAndNamesBadOnes) {
  auto tok = from_written(toy_gguf());
  EXPECT_FALSE(tok->add_bos());
  EXPECT_EQ(tok->encode("a", true, false), (std::vector<int32_t>{3}));
  auto expect_gguf_error = [](const GgufWriter& w, const std::string& needle) {
    try {
      from_written(w);
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto w = toy_gguf();
  w.set_array<float>("tokenizer.ggml.scores", {0, 0, 0, -1});
  expect_gguf_error(w, "tokenizer.ggml.scores");
  w = toy_gguf();
  w.set_u32("tokenizer.ggml.eos_token_id", 5);
  expect_gguf_error(w, "tokenizer.ggml.eos_token_id");
  w = toy_gguf();
  w.set_array<int32_t>("tokenizer.ggml.token_type", {2, 3, 3, 1, 42});
  expect_gguf_error(w, "tokenizer.ggml.token_type");
  w = toy_gguf();
  w.set_string("tokenizer.ggml.model", "t5");
  expect_gguf_error(w, "unsupported tokenizer model t5");
  GgufWriter bare;
  bare.set_string("general.architecture", "llama");
  expect_gguf_error(bare, "tokenizer.ggml.model");
}

}  // namespace
}  // namespace herd::model
