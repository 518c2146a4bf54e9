#include "engine/tp_sync.h"

#include <stdexcept>
#include <vector>

#include "engine/comm.h"
#include "kernels/dtype.h"
#include "kernels/fp16.h"
#include "kernels/quant.h"

namespace herd {

TpSync parse_tp_sync(const std::string& s) {
  if (s == "f32") return TpSync::F32;
  if (s == "f16") return TpSync::F16;
  if (s == "q8") return TpSync::Q8;
  throw std::invalid_argument("--tp-sync must be f32, f16 or q8, not '" + s + "'");
}

const char* tp_sync_name(TpSync s) {
  switch (s) {
    case TpSync::F32: return "f32";
    case TpSync::F16: return "f16";
    case TpSync::Q8: return "q8";
  }
  return "?";
}

void round_for_sync(TpSync s, float* x, int64_t n_rows, int64_t row) {
  if (s == TpSync::F32) return;
  const int64_t n = n_rows * row;
  if (s == TpSync::F16) {
    for (int64_t i = 0; i < n; ++i) x[i] = f16_to_f32(f32_to_f16(x[i]));
    return;
  }
  if (row % block_size(DType::Q8_0) != 0)
    throw std::invalid_argument("--tp-sync q8 needs rows of whole 32-value blocks; n_embd is " + std::to_string(row));
  std::vector<uint8_t> q(row_bytes(DType::Q8_0, row));
  for (int64_t t = 0; t < n_rows; ++t) {
    quantize_row(DType::Q8_0, x + t * row, q.data(), row);
    dequantize_row(DType::Q8_0, q.data(), x + t * row, row);
  }
}

void tp_all_reduce(Comm& comm, TpSync s, float* x, int64_t n_rows, int64_t row) {
  round_for_sync(s, x, n_rows, row);
  const std::string err = comm.all_reduce_sum(x, static_cast<size_t>(n_rows * row));
  if (!err.empty()) throw std::runtime_error("tensor parallel all-reduce: " + err);
}

}  // namespace herd
