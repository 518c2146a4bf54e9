// LOG1 logits dumps, the format of ../shared/reference (and of `herd logits --out`):
//   header: int32 magic 0x4C4F4731 ('LOG1'), int32 n_vocab, int32 n_rows, int32 n_prompt
//   rows:   int32 pos, int32 input_token, float32[n_vocab] logits   (row pos predicts pos+1)
// All little-endian. Reading validates the header against the file size.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace herd {

struct LogitsRow {
  int32_t pos = 0;
  int32_t input_token = 0;
  std::vector<float> logits;  // [n_vocab]
};

struct LogitsFile {
  static constexpr int32_t kMagic = 0x4C4F4731;
  int32_t n_vocab = 0;
  int32_t n_prompt = 0;
  std::vector<LogitsRow> rows;

  // Throws std::runtime_error naming the file and what is wrong (bad magic, truncated rows...).
  static LogitsFile read(const std::string& path);
  void write(const std::string& path) const;
};

}  // namespace herd
