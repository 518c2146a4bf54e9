#include <cstdlib>
#include <filesystem>

#include "launch/commands.h"

namespace herd::cli {

std::string default_model_path() {
  if (const char* env = std::getenv("HERD_MODEL"); env && *env) return env;
  const std::string rel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (std::filesystem::exists(rel)) return rel;
  return std::string(HERD_SOURCE_DIR) + "/" + rel;
}

}  // namespace herd::cli
