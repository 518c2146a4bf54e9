// GGUF reader and writer: round trip of every metadata type and several tensor types, alignment,
// typed getters, partial mapping, and known facts of the shared model files (values checked
// independently with the gguf Python package when these tests were written).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <numeric>
#include <random>

#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "tests/test_paths.h"

namespace herd::model {
namespace {

namespace fs = std::filesystem;

// A scratch directory per test binary run, removed at exit.
struct TempDir {
  fs::path dir = fs::temp_directory_path() / ("herd_test_gguf_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(dir); }
  ~TempDir() { fs::remove_all(dir); }
  std::string file(const std::string& name) const { return (dir / name).string(); }
};
const TempDir& tmp() {
  static TempDir t;
  return t;
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

TEST(GgufRoundTrip, EveryMetadataTypeAndTensorBytes) {
  GgufWriter w;
  w.set_u8("t.u8", 250);
  w.set_i8("t.i8", -128);
  w.set_u16("t.u16", 65535);
  w.set_i16("t.i16", -32768);
  w.set_u32("t.u32", 4294967295u);
  w.set_i32("t.i32", std::numeric_limits<int32_t>::min());
  w.set_u64("t.u64", 1ull << 62);
  w.set_i64("t.i64", std::numeric_limits<int64_t>::min());
  w.set_f32("t.f32", 1e-5f);
  w.set_f64("t.f64", -2.718281828459045);
  w.set_bool("t.bool_t", true);
  w.set_bool("t.bool_f", false);
  w.set_string("t.str", "héllo \"world\"\n");
  w.set_string("t.empty", "");
  w.set_array<uint8_t>("a.u8", {0, 1, 255});
  w.set_array<int8_t>("a.i8", {-1, 127});
  w.set_array<uint16_t>("a.u16", {7, 65535});
  w.set_array<int16_t>("a.i16", {-300});
  w.set_array<uint32_t>("a.u32", {1, 2, 3, 4000000000u});
  w.set_array<int32_t>("a.i32", {-5, 5});
  w.set_array<uint64_t>("a.u64", {42});
  w.set_array<int64_t>("a.i64", {-(1ll << 40), 1ll << 40});
  w.set_array<float>("a.f32", {0.5f, -1.25f, 3e30f});
  w.set_array<double>("a.f64", {1e-300, 2.5});
  w.set_bool_array("a.bool", {true, false, true});
  w.set_string_array("a.str", {"<unk>", "", "▁the"});
  w.set_string_array("a.str_empty", {});
  w.set_u32("t.u32", 7);  // replaces the value, keeps the position

  struct Spec {
    std::string name;
    std::vector<int64_t> ne;
    DType type;
  };
  const std::vector<Spec> specs = {
      {"f32", {8, 3}, DType::F32},          {"f16", {16}, DType::F16},
      {"bf16", {4, 2, 3}, DType::BF16},     {"q4_0", {64, 2}, DType::Q4_0},
      {"q8_0", {32, 1, 1, 2}, DType::Q8_0}, {"q4_k", {256, 2}, DType::Q4_K},
      {"q6_k", {512}, DType::Q6_K},         {"q5_1", {32, 5}, DType::Q5_1},
  };
  std::vector<std::vector<uint8_t>> data;
  for (size_t i = 0; i < specs.size(); ++i) {
    data.push_back(random_bytes(GgufWriter::tensor_n_bytes(specs[i].ne, specs[i].type), 100 + i));
    if (i % 2 == 0) {
      w.add_tensor(specs[i].name, specs[i].ne, specs[i].type, data.back());
    } else {  // bytes produced by a callback while writing
      std::vector<uint8_t> copy = data.back();
      w.add_tensor_filled(specs[i].name, specs[i].ne, specs[i].type, [copy](uint8_t* dst, size_t n) {
        ASSERT_EQ(n, copy.size());
        std::memcpy(dst, copy.data(), n);
      });
    }
  }
  const std::string path = tmp().file("roundtrip.gguf");
  GgufWriter::Layout L = w.write(path);
  EXPECT_EQ(fs::file_size(path), L.file_size);
  EXPECT_EQ(w.to_bytes().size(), L.file_size);

  auto f = GgufFile::open(path);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->data_offset(), L.data_offset);
  EXPECT_EQ(f->data_offset() % 32, 0u);
  EXPECT_GE(f->data_offset(), L.header_end);

  EXPECT_EQ(f->get_int("t.u8"), 250);
  EXPECT_EQ(f->get_int("t.i8"), -128);
  EXPECT_EQ(f->get_int("t.u16"), 65535);
  EXPECT_EQ(f->get_int("t.i16"), -32768);
  EXPECT_EQ(f->get_int("t.u32"), 7);
  EXPECT_EQ(f->get_int("t.i32"), std::numeric_limits<int32_t>::min());
  EXPECT_EQ(f->get_int("t.u64"), int64_t(1) << 62);
  EXPECT_EQ(f->get_int("t.i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(f->get_float("t.f32"), double(1e-5f));
  EXPECT_EQ(f->get_float("t.f64"), -2.718281828459045);
  EXPECT_EQ(f->get_float("t.u32"), 7.0);
  EXPECT_EQ(f->get_bool("t.bool_t"), true);
  EXPECT_EQ(f->get_bool("t.bool_f"), false);
  EXPECT_EQ(f->get_string("t.str"), "héllo \"world\"\n");
  EXPECT_EQ(f->get_string("t.empty"), "");
  EXPECT_EQ(f->type_of("t.u8"), GgufType::UINT8);
  EXPECT_EQ(f->type_of("t.i64"), GgufType::INT64);
  EXPECT_EQ(f->type_of("t.f64"), GgufType::FLOAT64);
  EXPECT_EQ(f->type_of("a.str"), GgufType::ARRAY);
  EXPECT_EQ(f->array_type_of("a.str"), GgufType::STRING);
  EXPECT_EQ(f->array_type_of("a.u16"), GgufType::UINT16);
  EXPECT_EQ(f->array_type_of("t.u8"), std::nullopt);

  EXPECT_EQ(f->get_int_array("a.u8"), (std::vector<int64_t>{0, 1, 255}));
  EXPECT_EQ(f->get_int_array("a.i8"), (std::vector<int64_t>{-1, 127}));
  EXPECT_EQ(f->get_int_array("a.u16"), (std::vector<int64_t>{7, 65535}));
  EXPECT_EQ(f->get_int_array("a.i16"), (std::vector<int64_t>{-300}));
  EXPECT_EQ(f->get_int_array("a.u32"), (std::vector<int64_t>{1, 2, 3, 4000000000ll}));
  EXPECT_EQ(f->get_int_array("a.i32"), (std::vector<int64_t>{-5, 5}));
  EXPECT_EQ(f->get_int_array("a.u64"), (std::vector<int64_t>{42}));
  EXPECT_EQ(f->get_int_array("a.i64"), (std::vector<int64_t>{-(1ll << 40), 1ll << 40}));
  EXPECT_EQ(f->get_float_array("a.f32"), (std::vector<float>{0.5f, -1.25f, 3e30f}));
  EXPECT_EQ(f->get_float_array("a.f64"), (std::vector<float>{float(1e-300), 2.5f}));
  EXPECT_EQ(f->array_type_of("a.bool"), GgufType::BOOL);
  EXPECT_EQ(f->array_size("a.bool"), 3u);
  EXPECT_EQ(f->value_to_string("a.bool"), "[bool x 3] [true, false, true]");
  EXPECT_EQ(f->get_string_array("a.str"), (std::vector<std::string>{"<unk>", "", "▁the"}));
  EXPECT_EQ(f->get_string_array("a.str_empty"), std::vector<std::string>{});
  EXPECT_EQ(f->array_size("a.str"), 3u);
  EXPECT_EQ(f->value_to_string("a.u32", 2), "[u32 x 4] [1, 2, ...]");
  EXPECT_EQ(f->value_to_string("t.i8"), "-128");
  EXPECT_EQ(f->value_to_string("t.str"), "\"héllo \\\"world\\\"\\n\"");

  // keys() in file order; "t.u32" kept its first position when replaced.
  std::vector<std::string> keys = f->keys();
  ASSERT_EQ(keys.size(), 27u);
  EXPECT_EQ(keys[0], "t.u8");
  EXPECT_EQ(keys[4], "t.u32");
  EXPECT_EQ(keys.back(), "a.str_empty");

  ASSERT_EQ(f->tensors().size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const GgufTensorInfo& t = f->tensors()[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, specs[i].name);
    EXPECT_EQ(t.ne, specs[i].ne);
    EXPECT_EQ(t.type, specs[i].type);
    EXPECT_EQ(t.n_bytes, data[i].size());
    EXPECT_EQ(t.offset % 32, 0u);
    EXPECT_EQ(t.n_elements(), std::accumulate(t.ne.begin(), t.ne.end(), int64_t(1), std::multiplies<>()));
    ASSERT_EQ(f->find_tensor(t.name), &t);
    EXPECT_EQ(std::memcmp(f->tensor_data(t), data[i].data(), data[i].size()), 0);
    EXPECT_EQ(f->tensor_data(t.name), f->tensor_data(t));
  }
  EXPECT_EQ(f->find_tensor("nope"), nullptr);
  EXPECT_THROW(f->tensor_data("nope"), GgufError);
}

TEST(GgufRoundTrip, AlignmentIsHonoured) {
  for (uint32_t a : {1u, 8u, 64u, 4096u}) {
    GgufWriter w;
    w.set_alignment(a);
    w.set_string("general.architecture", "llama");
    w.add_tensor("a", {3}, DType::F32, random_bytes(12, 1));
    w.add_tensor("b", {5}, DType::F16, random_bytes(10, 2));
    w.add_tensor("c", {32}, DType::Q8_0, random_bytes(34, 3));
    const std::string path = tmp().file("align.gguf");
    w.write(path);
    auto f = GgufFile::open(path);
    EXPECT_EQ(f->alignment(), a);
    EXPECT_EQ(f->data_offset() % a, 0u);
    for (const auto& t : f->tensors()) EXPECT_EQ(t.offset % a, 0u) << t.name << " alignment " << a;
    if (a >= 32) {
      EXPECT_EQ(f->tensors()[1].offset, a);  // 12 bytes of "a" padded up to one alignment unit
    }
  }
  EXPECT_THROW(GgufWriter().set_alignment(0), GgufError);
  EXPECT_THROW(GgufWriter().set_alignment(48), GgufError);
}

// general.alignment = 1 lets a tensor start at any byte; kernels read F32/F16 tensors as float and
// uint16_t arrays, so tensor_data() must hand out 4-byte-aligned bytes (a copy when the file has
// them misaligned) with the file's exact contents. UBSan flagged the misaligned float loads before.
TEST(GgufRoundTrip, MisalignedTensorsAreReadAligned) {
  for (int pad = 0; pad < 4; ++pad) {
    GgufWriter w;
    w.set_alignment(1);
    w.set_string("general.architecture", "llama");
    w.set_string("x.pad", std::string(static_cast<size_t>(pad), 'p'));  // shifts the data section
    const auto a = random_bytes(2, 7), b = random_bytes(40, 8), c = random_bytes(10, 9);
    w.add_tensor("h", {1}, DType::F16, a);  // 2 bytes: "f32" starts 2 bytes into the data section
    w.add_tensor("f32", {10}, DType::F32, b);
    w.add_tensor("f16", {5}, DType::F16, c);
    const std::string path = tmp().file("align1.gguf");
    w.write(path);
    for (bool all : {true, false}) {
      auto f = GgufFile::open(path, {.map_all = all});
      if (!all) f->map_tensors({"f32", "f16"});
      const void* pf = f->tensor_data("f32");
      const void* ph = f->tensor_data("f16");
      EXPECT_EQ(reinterpret_cast<uintptr_t>(pf) % alignof(float), 0u) << "pad " << pad;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(ph) % alignof(uint16_t), 0u) << "pad " << pad;
      EXPECT_EQ(std::memcmp(pf, b.data(), b.size()), 0);
      EXPECT_EQ(std::memcmp(ph, c.data(), c.size()), 0);
      float x;
      std::memcpy(&x, b.data() + 4, 4);
      const float y = static_cast<const float*>(pf)[1];  // a typed load, as the kernels do
      EXPECT_EQ(std::memcmp(&x, &y, 4), 0);
    }
  }
}

TEST(GgufRoundTrip, Version2AndNoTensors) {
  GgufWriter w;
  w.set_version(2);
  w.set_string("general.name", "v2");
  const std::string path = tmp().file("v2.gguf");
  w.write(path);
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(f->get_string("general.name"), "v2");
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_EQ(f->mapped_bytes(), 0u);
}

TEST(GgufGetters, TypeMismatchThrowsAbsentIsNullopt) {
  GgufWriter w;
  w.set_u64("big", 1ull << 63);
  w.set_string("s", "x");
  w.set_u32("n", 3);
  w.set_array<uint64_t>("big_arr", {1, 1ull << 63});
  w.set_array<int32_t>("ints", {1});
  const std::string path = tmp().file("getters.gguf");
  w.write(path);
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->get_int("absent"), std::nullopt);
  EXPECT_EQ(f->get_string("absent"), std::nullopt);
  EXPECT_EQ(f->get_string_array("absent"), std::nullopt);
  EXPECT_EQ(f->type_of("absent"), std::nullopt);
  EXPECT_FALSE(f->has("absent"));
  EXPECT_TRUE(f->has("s"));
  EXPECT_THROW(f->get_int("big"), GgufError);  // u64 beyond int64
  EXPECT_EQ(f->get_float("big"), std::ldexp(1.0, 63));
  EXPECT_THROW(f->get_int("s"), GgufError);
  EXPECT_THROW(f->get_string("n"), GgufError);
  EXPECT_THROW(f->get_bool("n"), GgufError);
  EXPECT_THROW(f->get_float("s"), GgufError);
  EXPECT_THROW(f->get_int_array("big_arr"), GgufError);
  EXPECT_THROW(f->get_string_array("ints"), GgufError);
  EXPECT_THROW(f->get_float_array("ints"), GgufError);
  EXPECT_THROW(f->array_size("n"), GgufError);
  try {
    f->get_string("n");
  } catch (const GgufError& e) {
    EXPECT_NE(std::string(e.what()).find("'n' is u32"), std::string::npos) << e.what();
  }
}

TEST(GgufWriterTest, RejectsInvalidTensors) {
  GgufWriter w;
  EXPECT_THROW(w.add_tensor("x", {33}, DType::Q8_0, std::vector<uint8_t>(34)), GgufError);  // not a block multiple
  EXPECT_THROW(w.add_tensor("x", {4}, DType::F32, std::vector<uint8_t>(15)), GgufError);   // wrong size
  EXPECT_THROW(w.add_tensor("x", {0}, DType::F32, {}), GgufError);
  EXPECT_THROW(w.add_tensor("x", {1, 1, 1, 1, 1}, DType::F32, std::vector<uint8_t>(4)), GgufError);
  w.add_tensor("x", {1}, DType::F32, std::vector<uint8_t>(4));
  EXPECT_THROW(w.add_tensor("x", {1}, DType::F32, std::vector<uint8_t>(4)), GgufError);  // duplicate
}

TEST(GgufMapping, MapTensorsMapsOnlyWhatIsAsked) {
  // 16 tensors of 256 KiB: a 4 MiB data section.
  GgufWriter w;
  const int64_t n = 64 * 1024;
  for (int i = 0; i < 16; ++i) {
    std::string name = std::to_string(i);  // built by insert: GCC 12 warns falsely (-Wrestrict) on "t" + string
    w.add_tensor(name.insert(0, 1, 't'), {n}, DType::F32, random_bytes(n * 4, i));
  }
  const std::string path = tmp().file("map.gguf");
  w.write(path);

  auto f = GgufFile::open(path, GgufOpenOptions{.map_all = false});
  const uint64_t section = f->file_size() - f->data_offset();
  EXPECT_EQ(f->mapped_bytes(), 0u);
  EXPECT_THROW(f->tensor_data("t3"), GgufError);
  f->map_tensors({"t3", "t9"});
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  EXPECT_GE(f->mapped_bytes(), 2u * n * 4);
  EXPECT_LE(f->mapped_bytes(), 2u * (n * 4 + 2 * page));
  EXPECT_LT(f->mapped_bytes(), section / 4);
  EXPECT_EQ(std::memcmp(f->tensor_data("t3"), random_bytes(n * 4, 3).data(), n * 4), 0);
  EXPECT_EQ(std::memcmp(f->tensor_data("t9"), random_bytes(n * 4, 9).data(), n * 4), 0);
  EXPECT_THROW(f->tensor_data("t4"), GgufError);
  EXPECT_THROW(f->tensor_data(f->tensors()[0]), GgufError);
  const uint64_t before = f->mapped_bytes();
  f->map_tensors({"t3"});  // already mapped: no new mapping
  EXPECT_EQ(f->mapped_bytes(), before);
  EXPECT_THROW(f->map_tensors({"t5", "no_such_tensor"}), GgufError);
  EXPECT_THROW(f->tensor_data("t5"), GgufError);  // nothing mapped by the failed call

  auto all = GgufFile::open(path);
  EXPECT_GE(all->mapped_bytes(), 16u * n * 4);
  EXPECT_LE(all->mapped_bytes(), section + page);
  EXPECT_EQ(std::memcmp(all->tensor_data("t15"), random_bytes(n * 4, 15).data(), n * 4), 0);
}

TEST(GgufOpen, MissingFileThrows) {
  EXPECT_THROW(GgufFile::open(tmp().file("does-not-exist.gguf")), GgufError);
  EXPECT_THROW(GgufFile::open(tmp().dir.string()), GgufError);  // a directory
}

// ---- the shared model files ----

// A FIFO named as a model must fail at once: a plain open() for reading would wait for a writer
// forever. Directories and devices are refused the same way, naming what the path is.
TEST(GgufOpen, NonRegularFilesAreRefusedWithoutBlocking) {
  const std::string fifo = tmp().file("model.fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  try {
    GgufFile::open(fifo);
    ADD_FAILURE() << "a FIFO opened";
  } catch (const GgufError& e) {
    EXPECT_NE(std::string(e.what()).find("is a FIFO, not a regular GGUF file"), std::string::npos) << e.what();
  }
  try {
    GgufFile::open(tmp().dir.string());
    ADD_FAILURE() << "a directory opened";
  } catch (const GgufError& e) {
    EXPECT_NE(std::string(e.what()).find("is a directory"), std::string::npos) << e.what();
  }
  EXPECT_THROW(GgufFile::open("/dev/null"), GgufError);
  ::unlink(fifo.c_str());
}

TEST(GgufRealFiles, EveryModelOpensAndTensorsFitTheFile) {
  const std::string dir = test::shared_path("models");
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  int n_files = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".gguf") continue;
    SCOPED_TRACE(e.path().string());
    ++n_files;
    auto f = GgufFile::open(e.path().string());
    EXPECT_EQ(f->version(), 3u);
    EXPECT_TRUE(f->has("general.architecture"));
    uint64_t sum = 0;
    for (const auto& t : f->tensors()) {
      EXPECT_NE(f->tensor_data(t), nullptr);
      EXPECT_EQ(t.n_bytes, row_bytes(t.type, t.ne[0]) * static_cast<uint64_t>(t.n_elements() / t.ne[0]));
      sum += t.n_bytes;
    }
    // A file without tensors may end before the padded data offset (the vocab-only file does).
    if (!f->tensors().empty()) {
      EXPECT_LE(f->data_offset() + sum, f->file_size());
    }
    for (const auto& k : f->keys()) EXPECT_FALSE(f->value_to_string(k).empty());
  }
  EXPECT_EQ(n_files, 12);
}

TEST(GgufRealFiles, Stories260K) {
  const std::string path = test::model_path("stories260K.gguf");
  HERD_REQUIRE_FILE(path);
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_int("llama.block_count"), 5);
  EXPECT_EQ(f->get_int("llama.embedding_length"), 64);
  EXPECT_EQ(f->get_int("llama.feed_forward_length"), 172);
  EXPECT_EQ(f->get_int("llama.attention.head_count_kv"), 4);
  EXPECT_EQ(f->get_float("llama.attention.layer_norm_rms_epsilon"), double(1e-5f));
  EXPECT_EQ(f->type_of("llama.block_count"), GgufType::UINT32);
  EXPECT_EQ(f->keys().size(), 19u);
  EXPECT_EQ(f->array_size("tokenizer.ggml.tokens"), 512u);
  EXPECT_EQ(f->array_type_of("tokenizer.ggml.scores"), GgufType::FLOAT32);
  EXPECT_EQ(f->array_type_of("tokenizer.ggml.token_type"), GgufType::INT32);
  EXPECT_EQ(f->data_offset(), 14176u);
  ASSERT_EQ(f->tensors().size(), 48u);
  const GgufTensorInfo* t = f->find_tensor("token_embd.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->ne, (std::vector<int64_t>{64, 512}));
  EXPECT_EQ(t->type, DType::F32);
  EXPECT_EQ(t->n_bytes, 64u * 512 * 4);
  const float* x = static_cast<const float*>(f->tensor_data(*t));
  EXPECT_EQ(x[0], -0.29474878311157227f);
  EXPECT_EQ(x[1], 0.5618956089019775f);
  EXPECT_EQ(x[64 * 512 - 1], -0.4240326f);
  double sum = 0;
  for (int i = 0; i < 64 * 512; ++i) sum += x[i];
  EXPECT_NEAR(sum, -752.3677446640068, 1e-9);
  for (const auto& ti : f->tensors()) EXPECT_EQ(ti.type, DType::F32) << ti.name;
}

TEST(GgufRealFiles, RandkQ4KMHasKQuants) {
  const std::string path = test::model_path("randk-Q4_K_M.gguf");
  HERD_REQUIRE_FILE(path);
  auto f = GgufFile::open(path, GgufOpenOptions{.map_all = false});
  int n_q4k = 0, n_q6k = 0, n_f32 = 0;
  for (const auto& t : f->tensors()) {
    n_q4k += t.type == DType::Q4_K;
    n_q6k += t.type == DType::Q6_K;
    n_f32 += t.type == DType::F32;
  }
  EXPECT_EQ(n_q4k, 25);
  EXPECT_EQ(n_q6k, 5);
  EXPECT_EQ(n_f32, 9);
  EXPECT_EQ(f->find_tensor("output.weight")->type, DType::Q6_K);
  const GgufTensorInfo* q = f->find_tensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, DType::Q4_K);
  EXPECT_EQ(q->ne, (std::vector<int64_t>{512, 512}));
  EXPECT_EQ(q->n_bytes, 147456u);  // 512*512/256 blocks * 144 bytes
  EXPECT_EQ(f->data_offset() + q->offset, 564640u);
  f->map_tensors({"blk.0.attn_q.weight"});
  const auto* b = static_cast<const uint8_t*>(f->tensor_data(*q));
  EXPECT_EQ((std::vector<uint8_t>(b, b + 8)), (std::vector<uint8_t>{106, 13, 40, 26, 165, 180, 167, 191}));
  uint64_t sum = 0;
  for (uint64_t i = 0; i < q->n_bytes; ++i) sum += b[i];
  EXPECT_EQ(sum, 19079691u);
  EXPECT_LT(f->mapped_bytes(), f->file_size() / 10);
}

TEST(GgufRealFiles, VocabOnly) {
  const std::string path = test::model_path("ggml-vocab-llama-spm.gguf");
  HERD_REQUIRE_FILE(path);
  auto f = GgufFile::open(path);
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_EQ(f->get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(f->get_bool("tokenizer.ggml.add_bos_token"), true);
  EXPECT_EQ(f->get_int("tokenizer.ggml.bos_token_id"), 1);
  auto tokens = f->get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens);
  ASSERT_EQ(tokens->size(), 32000u);
  EXPECT_EQ((*tokens)[0], "<unk>");
  EXPECT_EQ((*tokens)[1], "<s>");
  EXPECT_EQ((*tokens)[3], "<0x00>");
  EXPECT_EQ(tokens->back(), "给");
  EXPECT_EQ(f->get_float_array("tokenizer.ggml.scores")->size(), 32000u);
}

}  // namespace
}  // namespace herd::model
