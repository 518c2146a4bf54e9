// Reads the token ids of ../shared/reference/NAME.pN.txt ("prompt_ids (5): 1 403 ..." and
// "generated_ids (48): ..." lines).
#pragma once

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace herd::test {

struct ReferenceText {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> generated_ids;
  std::string text;  // the "text: " line (prompt + generation as llama.cpp printed it)
};

inline std::vector<int32_t> parse_ids_line(const std::string& line) {
  // "<label> (<count>): id id id"
  const auto colon = line.find(':');
  const auto open = line.find('(');
  if (colon == std::string::npos || open == std::string::npos) throw std::runtime_error("bad ids line: " + line);
  const size_t count = std::stoul(line.substr(open + 1));
  std::istringstream in(line.substr(colon + 1));
  std::vector<int32_t> ids;
  int32_t id;
  while (in >> id) ids.push_back(id);
  if (ids.size() != count) throw std::runtime_error("ids line announces " + std::to_string(count) + " ids: " + line);
  return ids;
}

inline ReferenceText read_reference_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  ReferenceText r;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("prompt_ids", 0) == 0) r.prompt_ids = parse_ids_line(line);
    if (line.rfind("generated_ids", 0) == 0) r.generated_ids = parse_ids_line(line);
    if (line.rfind("text: ", 0) == 0) r.text = line.substr(6);
  }
  return r;
}

}  // namespace herd::test
