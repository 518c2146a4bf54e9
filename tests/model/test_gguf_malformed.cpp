// Malformed GGUF input: every truncation, one corrupted field at a time (the message must name
// the path, the field and the byte offset), and seeded random byte flips. open() must either
// succeed or throw GgufError — never crash, never read out of bounds (run under ASan too).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "model/gguf.h"
#include "model/gguf_writer.h"

namespace herd::model {
namespace {

namespace fs = std::filesystem;

const std::string& scratch_path() {
  static const std::string p = [] {
    fs::path dir = fs::temp_directory_path() / ("herd_test_gguf_bad_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    std::atexit([] { fs::remove_all(fs::temp_directory_path() / ("herd_test_gguf_bad_" + std::to_string(::getpid()))); });
    return (dir / "bad.gguf").string();
  }();
  return p;
}

void write_file(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  ASSERT_TRUE(out.good());
}

// Reads everything a successful open exposes, so ASan sees any out-of-bounds pointer.
void touch_everything(const GgufFile& f) {
  for (const auto& k : f.keys()) (void)f.value_to_string(k, 1u << 20);
  volatile uint8_t sink = 0;
  for (const auto& t : f.tensors()) {
    const auto* p = static_cast<const uint8_t*>(f.tensor_data(t));
    sink = sink ^ p[0] ^ p[t.n_bytes - 1];
  }
}

// Empty string when the bytes open fine; the GgufError message otherwise. Any other exception
// escapes and fails the test.
std::string open_error(const std::vector<uint8_t>& bytes) {
  write_file(scratch_path(), bytes);
  try {
    auto f = GgufFile::open(scratch_path());
    touch_everything(*f);
    return "";
  } catch (const GgufError& e) {
    return e.what();
  }
}

void patch_u32(std::vector<uint8_t>& b, uint64_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.at(at + i) = static_cast<uint8_t>(v >> (8 * i));
}
void patch_u64(std::vector<uint8_t>& b, uint64_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) b.at(at + i) = static_cast<uint8_t>(v >> (8 * i));
}

// A small valid file whose last tensor ends exactly at the end of the file (no trailing
// padding), so that every truncation is invalid.
struct Base {
  std::vector<uint8_t> bytes;
  GgufWriter::Layout L;
};
const Base& base() {
  static const Base b = [] {
    GgufWriter w;
    w.set_alignment(32);                                // kv #0
    w.set_string("general.name", "tiny");               // kv #1
    w.set_u32("tiny.count", 3);                         // kv #2
    w.set_string_array("tok.list", {"a", "bb", "ccc"});  // kv #3
    w.set_array<float>("tok.scores", {1.f, 2.f, 3.f});  // kv #4
    w.set_bool("tiny.flag", true);                      // kv #5
    w.set_u8("dup.a1", 1);                              // kv #6
    w.set_u8("dup.a2", 2);                              // kv #7
    std::vector<uint8_t> q8(68, 0x11), f8(32, 0x22), f16(64, 0x33);
    w.add_tensor("w.q8", {32, 2}, DType::Q8_0, q8);     // tensor 0
    w.add_tensor("w.aa", {4, 2}, DType::F32, f8);       // tensor 1
    w.add_tensor("w.ab", {8, 2}, DType::F32, f16);      // tensor 2, 64 bytes: no padding after it
    Base r;
    r.bytes = w.to_bytes(&r.L);
    return r;
  }();
  return b;
}

// Asserts that opening `bytes` fails with a message holding the path and every `parts`.
void expect_error(const std::vector<uint8_t>& bytes, std::initializer_list<std::string> parts) {
  std::string msg = open_error(bytes);
  ASSERT_FALSE(msg.empty()) << "expected open() to fail";
  EXPECT_EQ(msg.rfind(scratch_path() + ": ", 0), 0u) << msg;
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
}
std::string at(uint64_t off) { return "at offset " + std::to_string(off); }

TEST(GgufMalformed, BaseFileIsValid) {
  const Base& b = base();
  EXPECT_EQ(open_error(b.bytes), "");
  EXPECT_EQ(b.bytes.size(), b.L.tensors.back().data + 64);
  EXPECT_GT(b.L.data_offset, b.L.header_end);  // there is header padding to truncate into
}

TEST(GgufMalformed, EveryTruncationThrows) {
  const Base& b = base();
  for (size_t n = 0; n < b.bytes.size(); ++n) {
    std::vector<uint8_t> cut(b.bytes.begin(), b.bytes.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_NE(open_error(cut), "") << "truncated to " << n << " bytes opened without error";
  }
}

TEST(GgufMalformed, HeaderFields) {
  const Base& b = base();
  auto c = b.bytes;
  c[0] = 'X';
  expect_error(c, {"magic", at(0), "not a GGUF file"});
  c = b.bytes;
  std::copy_n("FUGG", 4, c.begin());
  expect_error(c, {"magic", "big-endian"});
  c = b.bytes;
  patch_u32(c, 4, 1);
  expect_error(c, {"version", at(4), "v1"});
  patch_u32(c, 4, 4);
  expect_error(c, {"version", at(4), "version 4"});
  patch_u32(c, 4, 0x03000000u);
  expect_error(c, {"version", "big-endian"});
  c = b.bytes;
  patch_u64(c, b.L.tensor_count, 1ull << 60);
  expect_error(c, {"tensor_count", at(8)});
  c = b.bytes;
  patch_u64(c, b.L.kv_count, 1ull << 60);
  expect_error(c, {"metadata_kv_count", at(16)});
  c = b.bytes;
  patch_u64(c, b.L.kv_count, 9);  // one key more than there is: the tensor directory is read as a key
  EXPECT_NE(open_error(c), "");
}

TEST(GgufMalformed, MetadataFields) {
  const Base& b = base();
  const auto& kv = b.L.kvs;
  ASSERT_EQ(kv.size(), 8u);
  auto c = b.bytes;
  patch_u64(c, kv[1].key_len, 1ull << 62);
  expect_error(c, {"metadata key #1 key length", at(kv[1].key_len)});
  c = b.bytes;
  patch_u64(c, kv[1].value, ~0ull);  // general.name string length
  expect_error(c, {"metadata key #1 'general.name' string length", at(kv[1].value)});
  c = b.bytes;
  patch_u64(c, kv[3].value + 4, 1ull << 60);  // 2^60 strings in a file of a few hundred bytes
  expect_error(c, {"metadata key #3 'tok.list' array count", at(kv[3].value + 4)});
  c = b.bytes;
  patch_u64(c, kv[4].value + 4, 1ull << 62);  // 2^62 floats: count * 4 would overflow
  expect_error(c, {"'tok.scores' array count"});
  c = b.bytes;
  const uint64_t elem1 = kv[3].value + 4 + 8 + 8 + 1;  // tok.list element 1 ("bb") length
  patch_u64(c, elem1, 1ull << 40);
  expect_error(c, {"'tok.list' element 1 string length", at(elem1)});
  c = b.bytes;
  patch_u32(c, kv[2].type, 13);
  expect_error(c, {"metadata key #2 'tiny.count' value type", at(kv[2].type), "unknown value type 13"});
  patch_u32(c, kv[2].type, 0xFFFFFFFFu);
  expect_error(c, {"value type", "unknown value type 4294967295"});
  c = b.bytes;
  patch_u32(c, kv[4].value, 77);
  expect_error(c, {"'tok.scores' array element type", at(kv[4].value)});
  patch_u32(c, kv[4].value, static_cast<uint32_t>(GgufType::ARRAY));
  expect_error(c, {"'tok.scores' array element type", "nested arrays"});
  c = b.bytes;
  c[kv[5].value] = 2;
  expect_error(c, {"'tiny.flag' value", "bool must be 0 or 1"});
  c = b.bytes;
  c[kv[7].key_len + 8 + 5] = '1';  // "dup.a2" -> "dup.a1"
  expect_error(c, {"metadata key #7 'dup.a1'", "duplicate key", at(kv[7].key_len)});
}

TEST(GgufMalformed, AlignmentField) {
  const Base& b = base();
  const auto& kv = b.L.kvs[0];
  ASSERT_EQ(kv.key, "general.alignment");
  for (uint32_t bad : {0u, 3u, 48u}) {
    auto c = b.bytes;
    patch_u32(c, kv.value, bad);
    expect_error(c, {"general.alignment", at(kv.value), "not a nonzero power of two"});
  }
  auto c = b.bytes;
  patch_u32(c, kv.type, static_cast<uint32_t>(GgufType::INT32));
  expect_error(c, {"general.alignment", "must be u32"});
  c = b.bytes;
  patch_u32(c, kv.value, 64);  // valid, but the data section now starts elsewhere
  EXPECT_NE(open_error(c), "");
}

TEST(GgufMalformed, TensorFields) {
  const Base& b = base();
  const auto& t = b.L.tensors;
  ASSERT_EQ(t.size(), 3u);
  auto c = b.bytes;
  patch_u32(c, t[0].type, 16);  // a ggml type herd does not read (q2_K, 10, is read since [models])
  expect_error(c, {"tensor 'w.q8' type", at(t[0].type), "iq2_xxs"});
  patch_u32(c, t[0].type, 200);
  expect_error(c, {"tensor 'w.q8' type", "unknown ggml type 200"});
  c = b.bytes;
  patch_u32(c, t[0].n_dims, 5);
  expect_error(c, {"tensor 'w.q8' n_dims", at(t[0].n_dims), "5 dimensions"});
  patch_u32(c, t[0].n_dims, 0);
  expect_error(c, {"tensor 'w.q8' n_dims", "0 dimensions"});
  c = b.bytes;
  patch_u64(c, t[1].dims, 0);
  expect_error(c, {"tensor 'w.aa' dimension 0", at(t[1].dims), "is zero"});
  c = b.bytes;
  patch_u64(c, t[1].dims + 8, ~0ull);  // -1 as int64
  expect_error(c, {"tensor 'w.aa' dimension 1", at(t[1].dims + 8), "negative"});
  c = b.bytes;
  patch_u64(c, t[1].dims, 1ull << 40);
  patch_u64(c, t[1].dims + 8, 1ull << 40);
  expect_error(c, {"tensor 'w.aa' dimension 1", "overflows"});
  c = b.bytes;
  patch_u64(c, t[1].dims, 1ull << 31);
  patch_u64(c, t[1].dims + 8, 1ull << 31);  // 2^62 f32 values: 2^64 bytes
  expect_error(c, {"tensor 'w.aa' dimensions", "byte size overflows"});
  c = b.bytes;
  patch_u64(c, t[0].dims, 48);
  expect_error(c, {"tensor 'w.q8' dimension 0", at(t[0].dims), "not a multiple of the q8_0 block size 32"});
  c = b.bytes;
  const uint64_t off1 = t[1].data - b.L.data_offset;
  patch_u64(c, t[1].offset, off1 + 4);
  expect_error(c, {"tensor 'w.aa' offset", at(t[1].offset), "not a multiple of the alignment 32"});
  patch_u64(c, t[1].offset, 1ull << 40);
  expect_error(c, {"tensor 'w.aa' offset", "past the end"});
  patch_u64(c, t[1].offset, ~0ull - 31);  // aligned, and offset + size wraps around 2^64
  expect_error(c, {"tensor 'w.aa' offset", "past the end"});
  c = b.bytes;
  patch_u64(c, t[2].offset, off1);
  expect_error(c, {"tensor 'w.ab' offset", "overlaps tensor 'w.aa'"});
  c = b.bytes;
  c[t[2].name_len + 8 + 3] = 'a';  // "w.ab" -> "w.aa"
  expect_error(c, {"tensor 'w.aa' name", at(t[2].name_len), "duplicate tensor name"});
  c = b.bytes;
  patch_u64(c, t[2].name_len, 1ull << 50);
  expect_error(c, {"tensor #2 name length", at(t[2].name_len)});
}

TEST(GgufMalformed, RandomByteFlipsNeverCrash) {
  const Base& b = base();
  std::mt19937_64 rng(20240611);
  int n_ok = 0, n_err = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    auto c = b.bytes;
    int n_flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n_flips; ++k) {
      // Mostly in the header: flips in tensor data are always valid and teach nothing.
      uint64_t limit = rng() % 8 ? b.L.data_offset : c.size();
      c[rng() % limit] ^= static_cast<uint8_t>(1 + rng() % 255);
    }
    if (rng() % 8 == 0) c.resize(rng() % c.size());  // sometimes truncated as well
    try {
      (open_error(c).empty() ? n_ok : n_err)++;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "iteration " << iter << ": open() threw a non-GgufError: " << e.what();
    }
  }
  RecordProperty("opened", n_ok);
  RecordProperty("rejected", n_err);
  EXPECT_GT(n_ok, 0);   // some flips (string bytes, values) leave a valid file
  EXPECT_GT(n_err, 0);
}

}  // namespace
}  // namespace herd::model
