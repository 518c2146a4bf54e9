#include <cctype>

#include "kernels/dtype.h"

namespace herd {

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& t : kDTypes) {
    if (t.name.size() != name.size()) continue;
    bool eq = true;
    for (size_t i = 0; i < name.size() && eq; ++i)
      eq = std::tolower(static_cast<unsigned char>(t.name[i])) == std::tolower(static_cast<unsigned char>(name[i]));
    if (eq) return t.type;
  }
  return std::nullopt;
}

}  // namespace herd
