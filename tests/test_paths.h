// Paths the tests read: the shared models/reference (beside the repo) and the built herd binary.
// A missing shared/ is a test failure with a clear message, not a skip: CI always has it.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

namespace herd::test {

inline std::string shared_path(const std::string& rel) {
  return std::string(HERD_SHARED_DIR) + "/" + rel;
}
inline std::string model_path(const std::string& file) { return shared_path("models/" + file); }
inline std::string reference_path(const std::string& file) { return shared_path("reference/" + file); }
inline std::string herd_bin() { return HERD_BIN; }

// The default real model fetched by scripts/fetch-model.sh into <repo>/models/.
inline std::string smollm2_path() { return std::string(HERD_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"; }

#define HERD_REQUIRE_FILE(path)                                                                  \
  ASSERT_TRUE(std::filesystem::exists(path)) << "missing test input " << (path)                  \
                                             << " (shared/ must sit beside the repo; models/ is " \
                                                "filled by scripts/fetch-model.sh)"

}  // namespace herd::test
