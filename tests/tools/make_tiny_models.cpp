// Writes the tiny architecture-variant models and the 2-/3-bit K-quant models into a directory (for
// scripts/gen-arch-reference.py).
#include <cstdio>
#include <exception>

#include "tests/tools/tiny_models.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: make_tiny_models VOCAB_DONOR.gguf OUT_DIR\n");
    return 2;
  }
  try {
    for (const auto& s : herd::test::tiny_model_specs()) {
      const std::string path = std::string(argv[2]) + "/tiny-" + s.name + ".gguf";
      herd::test::write_tiny_model(s, argv[1], path);
      std::printf("%s\n", path.c_str());
    }
    for (const auto& mix : herd::test::lowbit_model_mixes())
      for (bool deq : {false, true}) {
        const std::string path = std::string(argv[2]) + "/lowbit-" + mix + (deq ? "-deq" : "") + ".gguf";
        herd::test::write_lowbit_model(mix, deq, argv[1], path);
        std::printf("%s\n", path.c_str());
      }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_tiny_models: %s\n", e.what());
    return 1;
  }
  return 0;
}
