#include "coordinator/logits_file.h"

#include <cstring>
#include <fstream>
#include <stdexcept>

namespace herd {
namespace {

int32_t read_i32(std::ifstream& in, const std::string& path, const char* what) {
  int32_t v = 0;
  if (!in.read(reinterpret_cast<char*>(&v), sizeof v))
    throw std::runtime_error(path + ": truncated LOG1 file while reading " + what);
  return v;
}

}  // namespace

LogitsFile LogitsFile::read(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error(path + ": cannot open");
  const auto file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  LogitsFile f;
  if (read_i32(in, path, "magic") != kMagic) throw std::runtime_error(path + ": not a LOG1 logits file (bad magic)");
  f.n_vocab = read_i32(in, path, "n_vocab");
  const int32_t n_rows = read_i32(in, path, "n_rows");
  f.n_prompt = read_i32(in, path, "n_prompt");
  if (f.n_vocab <= 0 || n_rows < 0 || f.n_prompt < 0 || f.n_prompt > n_rows)
    throw std::runtime_error(path + ": invalid LOG1 header (n_vocab " + std::to_string(f.n_vocab) + ", n_rows " +
                             std::to_string(n_rows) + ", n_prompt " + std::to_string(f.n_prompt) + ")");
  const uint64_t row_bytes = 8 + 4ull * static_cast<uint64_t>(f.n_vocab);
  if (16 + row_bytes * static_cast<uint64_t>(n_rows) != file_size)
    throw std::runtime_error(path + ": size " + std::to_string(file_size) + " does not match " +
                             std::to_string(n_rows) + " rows of " + std::to_string(f.n_vocab) + " logits");
  f.rows.resize(static_cast<size_t>(n_rows));
  for (auto& r : f.rows) {
    r.pos = read_i32(in, path, "row pos");
    r.input_token = read_i32(in, path, "row input_token");
    r.logits.resize(static_cast<size_t>(f.n_vocab));
    if (!in.read(reinterpret_cast<char*>(r.logits.data()), 4 * static_cast<std::streamsize>(f.n_vocab)))
      throw std::runtime_error(path + ": truncated LOG1 row");
  }
  return f;
}

void LogitsFile::write(const std::string& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(path + ": cannot create");
  const int32_t header[4] = {kMagic, n_vocab, static_cast<int32_t>(rows.size()), n_prompt};
  out.write(reinterpret_cast<const char*>(header), sizeof header);
  for (const auto& r : rows) {
    if (static_cast<int32_t>(r.logits.size()) != n_vocab)
      throw std::logic_error("LogitsFile::write: row of " + std::to_string(r.logits.size()) + " logits, expected " +
                             std::to_string(n_vocab));
    const int32_t meta[2] = {r.pos, r.input_token};
    out.write(reinterpret_cast<const char*>(meta), sizeof meta);
    out.write(reinterpret_cast<const char*>(r.logits.data()), 4 * static_cast<std::streamsize>(n_vocab));
  }
  if (!out) throw std::runtime_error(path + ": write failed");
}

}  // namespace herd
