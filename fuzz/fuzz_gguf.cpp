// The GGUF reader on arbitrary bytes: open (header, metadata, tensor directory: every check),
// every typed getter on every key, the rendering `herd info` uses, each tensor's bytes read with
// typed loads as the kernels do (UBSan flags a misaligned float), the architecture config and the
// tokenizer built from the metadata. Anything but GgufError / std::exception escaping, a sanitizer
// report or a hang is a bug.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "fuzz/fuzz_util.h"
#include "model/arch.h"
#include "model/chat_template.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

using namespace herd::model;

namespace {

int memfd() {
  static int fd = [] {
    int f = ::memfd_create("fuzz_gguf", 0);
    if (f < 0) std::abort();
    return f;
  }();
  return fd;
}

volatile float g_sink;

void exercise(const GgufFile& f, bool mapped) {
  for (const auto& k : f.keys()) {
    try { (void)f.get_string(k); } catch (const GgufError&) {}
    try { (void)f.get_int(k); } catch (const GgufError&) {}
    try { (void)f.get_float(k); } catch (const GgufError&) {}
    try { (void)f.get_bool(k); } catch (const GgufError&) {}
    try { (void)f.get_string_array(k); } catch (const GgufError&) {}
    try { (void)f.get_float_array(k); } catch (const GgufError&) {}
    try { (void)f.get_int_array(k); } catch (const GgufError&) {}
    (void)f.array_size(k);
    (void)f.value_to_string(k);
  }
  if (!mapped) {
    std::vector<std::string> names;
    for (const auto& t : f.tensors()) names.push_back(t.name);
    const_cast<GgufFile&>(f).map_tensors(names);
  }
  for (const auto& t : f.tensors()) {
    const void* p = f.tensor_data(t);
    float acc = 0;
    if (t.type == herd::DType::F32) {
      const float* x = static_cast<const float*>(p);  // typed, as the kernels read them
      for (uint64_t i = 0; i < t.n_bytes / 4 && i < 4096; ++i) acc += x[i];
    } else if (t.type == herd::DType::F16 || t.type == herd::DType::BF16) {
      const uint16_t* x = static_cast<const uint16_t*>(p);
      for (uint64_t i = 0; i < t.n_bytes / 2 && i < 4096; ++i) acc += x[i];
    } else {
      const uint8_t* x = static_cast<const uint8_t*>(p);
      for (uint64_t i = 0; i < t.n_bytes && i < 4096; ++i) acc += x[i];
    }
    g_sink = acc;
  }
  try {
    (void)load_config(f);
  } catch (const std::exception&) {
  }
  try {
    auto tok = Tokenizer::from_gguf(f);
    auto ids = tok->encode("Hello world <s> 123", true, true);
    (void)tok->decode(ids);
  } catch (const std::exception&) {
  }
  if (auto tmpl = f.get_string("tokenizer.chat_template"); tmpl) (void)ChatTemplate::from_jinja(*tmpl);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = memfd();
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) std::abort();
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  for (bool all : {true, false}) {
    try {
      auto f = GgufFile::open(path, {.map_all = all});
      exercise(*f, all);
    } catch (const GgufError&) {
    } catch (const std::exception&) {
      // errors that are not the parser's own (e.g. std::invalid_argument from a tokenizer) are fine
    }
  }
  return 0;
}
