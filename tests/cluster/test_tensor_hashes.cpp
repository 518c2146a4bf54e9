// Per-tensor content hashes (cluster/tensor_hashes.h) on the tiny stories260K model, copied into a
// temporary directory: the digests are BLAKE2b-256 of each tensor's bytes (checked against a hash
// of the mapped bytes, an independent path); the cache file is written once and reused, holds a
// stage's subset, is recomputed when the file changes (also with its mtime set back) or the cache
// is damaged in any byte, goes to the user cache for a read-only directory, and a cache that
// cannot be written anywhere is no failure. The Assign's digests round-trip and are bounded.
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "cluster/model_fingerprint.h"
#include "cluster/protocol.h"
#include "cluster/tensor_hashes.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "model/weights.h"
#include "tests/cluster/round_trip.h"
#include "tests/test_paths.h"

namespace herd::cluster {
namespace {

namespace fs = std::filesystem;
using herd::test::model_path;

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Flips one byte of the file at `offset` with pwrite (the way any tool would change it).
void flip_byte(const std::string& path, uint64_t offset) {
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  unsigned char b = 0;
  ASSERT_EQ(::pread(fd, &b, 1, static_cast<off_t>(offset)), 1);
  b ^= 0x01;
  ASSERT_EQ(::pwrite(fd, &b, 1, static_cast<off_t>(offset)), 1);
  ::close(fd);
}

class TensorHashesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/herd-hashtest-XXXXXX";
    dir_ = mkdtemp(tmpl);
    ::setenv("HERD_CACHE_DIR", (dir_ + "/user-cache").c_str(), 1);  // never the user's cache
    model_ = dir_ + "/models/stories260K.gguf";
    fs::create_directories(dir_ + "/models");
    fs::copy_file(model_path("stories260K.gguf"), model_);
  }
  void TearDown() override {
    fs::permissions(dir_ + "/models", fs::perms::owner_all, fs::perm_options::add);
    fs::remove_all(dir_);
  }
  struct Open {
    std::unique_ptr<model::GgufFile> f;
    std::string header;
    std::vector<std::string> all;
  };
  Open open() {
    Open o;
    o.f = model::GgufFile::open(model_);
    o.header = model_fingerprint(*o.f);
    for (const auto& t : o.f->tensors()) o.all.push_back(t.name);
    return o;
  }
  static HashOptions quiet() {
    HashOptions h;
    h.show = false;
    return h;
  }
  std::string dir_, model_;
};

TEST_F(TensorHashesTest, DigestsAreBlake2bOfEachTensorsBytes) {
  Open o = open();
  TensorHashes h(*o.f, o.header, quiet());
  const auto got = h.digests(o.all);
  ASSERT_EQ(got.size(), o.all.size());
  ASSERT_EQ(sodium_init() < 0, false);
  for (const auto& d : got) {
    const model::GgufTensorInfo* t = o.f->find_tensor(d.name);
    ASSERT_NE(t, nullptr);
    Digest want{};
    crypto_generichash(want.data(), want.size(), static_cast<const unsigned char*>(o.f->tensor_data(*t)), t->n_bytes,
                       nullptr, 0);
    EXPECT_EQ(digest_hex(d.blake2b), digest_hex(want)) << d.name;
  }
  EXPECT_EQ(h.stats().tensors_hashed, o.all.size());
  EXPECT_GT(h.stats().bytes_hashed, 0u);
  // Tensors with different bytes get different digests (no constant or truncated hash).
  EXPECT_NE(got[0].blake2b, got[1].blake2b);
  // The empty string's BLAKE2b-256 (RFC 7693 parameters, 32-byte output), as a fixed point.
  Digest empty{};
  crypto_generichash(empty.data(), empty.size(), nullptr, 0, nullptr, 0);
  EXPECT_EQ(digest_hex(empty), "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
}

TEST_F(TensorHashesTest, CacheIsWrittenOnceBesideTheFileAndReused) {
  Open o = open();
  std::vector<TensorDigest> first;
  {
    TensorHashes h(*o.f, o.header, quiet());
    EXPECT_FALSE(h.stats().loaded);
    first = h.digests(o.all);
    EXPECT_EQ(h.stats().saved_to, TensorHashes::beside_path(model_));
  }
  const std::string cache = TensorHashes::beside_path(model_);
  ASSERT_TRUE(fs::exists(cache));
  const auto mtime = fs::last_write_time(cache);
  TensorHashes again(*o.f, o.header, quiet());
  EXPECT_TRUE(again.stats().loaded) << again.stats().cache_problem;
  EXPECT_EQ(again.digests(o.all), first);
  EXPECT_EQ(again.stats().tensors_hashed, 0u) << "the second object read the file again";
  EXPECT_EQ(fs::last_write_time(cache), mtime) << "the cache file was rewritten";
  EXPECT_FALSE(fs::exists(TensorHashes::user_cache_path(model_)));
}

// A worker asks for its stage only: the cache holds that subset, a later stage adds to it.
TEST_F(TensorHashesTest, AStageHashesOnlyItsTensorsAndTheCacheGrows) {
  Open o = open();
  const auto config = model::load_config(*o.f);
  const auto stage0 = model::stage_tensor_names(*o.f, config, {0, 2, true, false});
  const auto stage1 = model::stage_tensor_names(*o.f, config, {2, config.n_layers, false, true});
  uint64_t stage0_bytes = 0;
  for (const auto& n : stage0) stage0_bytes += o.f->find_tensor(n)->n_bytes;
  {
    TensorHashes h(*o.f, o.header, quiet());
    h.digests(stage0);
    EXPECT_EQ(h.stats().tensors_hashed, stage0.size());
    EXPECT_EQ(h.stats().bytes_hashed, stage0_bytes) << "read more than its stage";
  }
  std::map<std::string, Digest> in_cache;
  const std::string text = slurp(TensorHashes::beside_path(model_));
  TensorHashes::FileKey key;
  {
    struct stat sb{};
    ASSERT_EQ(::stat(model_.c_str(), &sb), 0);
    key = {static_cast<uint64_t>(sb.st_size),
           static_cast<uint64_t>(sb.st_mtim.tv_sec) * 1000000000ull + static_cast<uint64_t>(sb.st_mtim.tv_nsec),
           static_cast<uint64_t>(sb.st_ctim.tv_sec) * 1000000000ull + static_cast<uint64_t>(sb.st_ctim.tv_nsec),
           static_cast<uint64_t>(sb.st_ino)};
  }
  ASSERT_EQ(parse_hash_cache(text, key, o.header, in_cache), "");
  EXPECT_EQ(in_cache.size(), stage0.size());
  TensorHashes h(*o.f, o.header, quiet());
  h.digests(stage0);
  EXPECT_EQ(h.stats().tensors_hashed, 0u);
  h.digests(stage1);
  EXPECT_EQ(h.stats().tensors_hashed, stage1.size());
  TensorHashes all(*o.f, o.header, quiet());
  all.digests(o.all);
  EXPECT_EQ(all.stats().tensors_hashed, 0u) << "the two stages' entries were not merged";
}

// Any write changes mtime or ctime: the cache is not used and the changed tensor's digest changes.
// Setting the mtime back does not hide it (ctime cannot be set from user space).
TEST_F(TensorHashesTest, AChangedFileIsHashedAgainEvenWithItsMtimeSetBack) {
  Open o = open();
  const auto before = TensorHashes(*o.f, o.header, quiet()).digests(o.all);
  const model::GgufTensorInfo* t = o.f->find_tensor("blk.1.ffn_down.weight");
  ASSERT_NE(t, nullptr);
  struct stat sb{};
  ASSERT_EQ(::stat(model_.c_str(), &sb), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a coarse clock would hide the write
  flip_byte(model_, o.f->data_offset() + t->offset + t->n_bytes / 2);
  const timespec times[2] = {sb.st_atim, sb.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, model_.c_str(), times, 0), 0);  // mtime as it was
  Open o2 = open();
  TensorHashes h(*o2.f, o2.header, quiet());
  EXPECT_FALSE(h.stats().loaded);
  EXPECT_NE(h.stats().cache_problem.find("another version of the file"), std::string::npos) << h.stats().cache_problem;
  const auto after = h.digests(o2.all);
  EXPECT_EQ(h.stats().tensors_hashed, o2.all.size());
  for (size_t i = 0; i < after.size(); ++i)
    EXPECT_EQ(after[i].blake2b == before[i].blake2b, after[i].name != "blk.1.ffn_down.weight") << after[i].name;
  // And an object made before the change notices it on its next call.
  TensorHashes fresh(*o2.f, o2.header, quiet());
  fresh.digests(o2.all);
  EXPECT_EQ(fresh.stats().tensors_hashed, 0u);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  flip_byte(model_, o.f->data_offset() + t->offset + t->n_bytes / 2);  // back
  const auto restored = fresh.digests(o2.all);
  EXPECT_EQ(fresh.stats().tensors_hashed, o2.all.size());
  EXPECT_EQ(restored, before);
}

// A damaged cache file — any single byte changed, truncated anywhere, or replaced by junk — is
// ignored and recomputed, never trusted and never a crash.
TEST_F(TensorHashesTest, ADamagedCacheIsRecomputedNeverTrusted) {
  Open o = open();
  const auto good = TensorHashes(*o.f, o.header, quiet()).digests(o.all);
  const std::string cache = TensorHashes::beside_path(model_);
  const std::string text = slurp(cache);
  TensorHashes::FileKey key;
  struct stat sb{};
  ASSERT_EQ(::stat(model_.c_str(), &sb), 0);
  key = {static_cast<uint64_t>(sb.st_size),
         static_cast<uint64_t>(sb.st_mtim.tv_sec) * 1000000000ull + static_cast<uint64_t>(sb.st_mtim.tv_nsec),
         static_cast<uint64_t>(sb.st_ctim.tv_sec) * 1000000000ull + static_cast<uint64_t>(sb.st_ctim.tv_nsec),
         static_cast<uint64_t>(sb.st_ino)};
  std::map<std::string, Digest> out;
  ASSERT_EQ(parse_hash_cache(text, key, o.header, out), "");
  // Every byte position, changed: rejected (a checksum collision aside, 2^-256).
  for (size_t i = 0; i < text.size(); ++i) {
    std::string bad = text;
    bad[i] = static_cast<char>(bad[i] ^ 0x20);
    EXPECT_NE(parse_hash_cache(bad, key, o.header, out), "") << "byte " << i << " changed was accepted";
    EXPECT_TRUE(out.empty());
  }
  for (size_t n = 0; n < text.size(); n += 7)
    EXPECT_NE(parse_hash_cache(text.substr(0, n), key, o.header, out), "") << "truncated to " << n;
  std::mt19937 rng(5);
  for (int i = 0; i < 200; ++i) {
    std::string junk(rng() % 600, '\0');
    for (auto& c : junk) c = static_cast<char>(rng());
    if (i % 2) junk = text.substr(0, rng() % text.size()) + junk;  // a plausible start, then junk
    EXPECT_NE(parse_hash_cache(junk, key, o.header, out), "");
  }
  // Another header's cache, with a valid checksum: not used.
  EXPECT_NE(parse_hash_cache(text, key, std::string(64, 'a'), out), "");
  // Through the object: a junk cache file is ignored, recomputed and replaced by a good one.
  std::ofstream(cache, std::ios::trunc) << "herd-tensor-hashes 1 blake2b-256\nfile 1 2 3 4\n\x01\x02garbage";
  TensorHashes h(*o.f, o.header, quiet());
  EXPECT_FALSE(h.stats().loaded);
  EXPECT_NE(h.stats().cache_problem, "");
  EXPECT_EQ(h.digests(o.all), good);
  EXPECT_EQ(h.stats().tensors_hashed, o.all.size());
  EXPECT_EQ(parse_hash_cache(slurp(cache), key, o.header, out), "") << "the junk was not replaced";
  // A directory where the cache file should be: still no failure.
  fs::remove(cache);
  fs::create_directories(cache);
  TensorHashes d(*o.f, o.header, quiet());
  EXPECT_EQ(d.digests(o.all), good);
}

// A read-only model directory (no write bit: also for root) is left alone: the cache goes to the
// user cache directory and is found there next time. With neither writable, hashing still works.
TEST_F(TensorHashesTest, AReadOnlyDirectoryUsesTheUserCacheAndNoCacheIsNoFailure) {
  Open o = open();
  fs::permissions(dir_ + "/models", fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                                        fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
  std::vector<TensorDigest> first;
  {
    TensorHashes h(*o.f, o.header, quiet());
    first = h.digests(o.all);
    EXPECT_EQ(h.stats().saved_to, TensorHashes::user_cache_path(model_));
  }
  EXPECT_FALSE(fs::exists(TensorHashes::beside_path(model_)));
  EXPECT_EQ(TensorHashes::user_cache_path(model_).rfind(dir_ + "/user-cache/tensor-hashes/stories260K.gguf-", 0), 0u)
      << TensorHashes::user_cache_path(model_);
  TensorHashes again(*o.f, o.header, quiet());
  EXPECT_TRUE(again.stats().loaded);
  EXPECT_EQ(again.digests(o.all), first);
  EXPECT_EQ(again.stats().tensors_hashed, 0u);

  std::ofstream(dir_ + "/not-a-dir") << "x";
  ::setenv("HERD_CACHE_DIR", (dir_ + "/not-a-dir/cache").c_str(), 1);  // cannot be created
  TensorHashes nowhere(*o.f, o.header, quiet());
  EXPECT_EQ(nowhere.digests(o.all), first);
  EXPECT_EQ(nowhere.stats().saved_to, "");
  HashOptions off = quiet();
  off.read_cache = false;
  off.write_cache = false;
  TensorHashes uncached(*o.f, o.header, off);
  EXPECT_EQ(uncached.digests(o.all), first);
  EXPECT_EQ(uncached.stats().tensors_hashed, o.all.size());
}

TEST_F(TensorHashesTest, AnUnknownTensorNameIsAnErrorNamingIt) {
  Open o = open();
  TensorHashes h(*o.f, o.header, quiet());
  try {
    h.digests({"blk.99.attn_q.weight"});
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("has no tensor blk.99.attn_q.weight"), std::string::npos) << e.what();
  }
}

TEST(TensorDigestsOnTheWire, AssignCarriesThemAndTheyAreBounded) {
  Assign a;
  a.layers = {0, 2, true, false};
  a.n_ctx = 16;
  a.next_address = "tcp://127.0.0.1:1";
  for (int i = 0; i < 3; ++i) {
    TensorDigest d;
    d.name = "blk." + std::to_string(i) + ".ffn_down.weight";
    for (size_t j = 0; j < d.blake2b.size(); ++j) d.blake2b[j] = static_cast<uint8_t>(i * 31 + j);
    a.tensor_digests.push_back(d);
  }
  EXPECT_EQ(round_trip(a).tensor_digests, a.tensor_digests);
  Assign long_name = a;
  long_name.tensor_digests[1].name = std::string(kMaxTensorName + 1, 'x');
  EXPECT_THROW(round_trip(long_name), ProtocolError);
  // A claimed count over the bound is refused before anything is read; one within it but beyond
  // the payload fails on the missing bytes (entries are read one by one: nothing is allocated).
  for (const uint64_t claimed : {uint64_t{kMaxStageTensors} + 1, uint64_t{1} << 62, uint64_t{1000}}) {
    transport::Message m = pack(a);
    // The count is the 8 bytes before the first entry: find the first name's length field.
    const std::string first = a.tensor_digests[0].name;
    const size_t at = m.payload.find(first);
    ASSERT_NE(at, std::string::npos);
    const size_t count_at = at - 8 - 8;  // [count u64][name length u64][name]
    for (int b = 0; b < 8; ++b) m.payload[count_at + b] = static_cast<char>((claimed >> (8 * b)) & 0xff);
    EXPECT_THROW(unpack<Assign>(m), ProtocolError) << claimed;
  }
}

}  // namespace
}  // namespace herd::cluster
