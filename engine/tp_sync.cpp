#include "engine/tp_sync.h"

#include <cstring>
#include <stdexcept>
#include <vector>

#include "engine/comm.h"
#include "kernels/backend.h"
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

size_t sync_bytes(TpSync s, int64_t n_rows, int64_t row) {
  const auto n = static_cast<size_t>(n_rows * row);
  switch (s) {
    case TpSync::F32: return n * sizeof(float);
    case TpSync::F16: return n * sizeof(uint16_t);
    case TpSync::Q8: return static_cast<size_t>(n_rows) * row_bytes(DType::Q8_0, row);
  }
  return 0;
}

namespace {

// The rounded form of x [n_rows, row] in `out` (sync_bytes(s) bytes): f16 values, or Q8_0 rows.
void encode(TpSync s, const float* x, int64_t n_rows, int64_t row, uint8_t* out, Backend* be) {
  const int64_t n = n_rows * row;
  if (s == TpSync::F16 && be) {
    be->store_rows(x, n_rows, row, row, DType::F16, out, static_cast<size_t>(row) * 2);
    return;
  }
  if (s == TpSync::F16) {
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t h = f32_to_f16(x[i]);
      std::memcpy(out + 2 * i, &h, 2);
    }
    return;
  }
  const size_t rb = row_bytes(DType::Q8_0, row);
  for (int64_t t = 0; t < n_rows; ++t) quantize_row(DType::Q8_0, x + t * row, out + t * rb, row);
}

void decode(TpSync s, const uint8_t* in, int64_t n_rows, int64_t row, float* x, Backend* be) {
  const int64_t n = n_rows * row;
  if (s == TpSync::F16 && be) {
    be->load_rows(in, static_cast<size_t>(row) * 2, n_rows, row, DType::F16, x, row);
    return;
  }
  if (s == TpSync::F16) {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, in + 2 * i, 2);
      x[i] = f16_to_f32(h);
    }
    return;
  }
  const size_t rb = row_bytes(DType::Q8_0, row);
  for (int64_t t = 0; t < n_rows; ++t) dequantize_row(DType::Q8_0, in + t * rb, x + t * row, row);
}

}  // namespace

bool f32_sync_gathers(int ranks, size_t values) {
  return ranks == 2 || (ranks > 2 && static_cast<size_t>(ranks - 1) * values * sizeof(float) <= kF32GatherBytes);
}

void tp_all_reduce(Comm& comm, TpSync s, float* x, int64_t n_rows, int64_t row, Backend* rows) {
  const auto n = static_cast<size_t>(n_rows * row);
  std::string err;
  if (comm.size() < 2 || (s == TpSync::F32 && !f32_sync_gathers(comm.size(), n))) {
    round_for_sync(s, x, n_rows, row);
    err = comm.all_reduce_sum(x, n);
  } else {
    // Only the rounded form travels: every rank all-gathers the others' f32 partials or f16 /
    // Q8_0 bytes (carried in f32 words: a Comm moves them bit for bit) and sums the decoded
    // partials in rank order, the same bits as rounding and then all-reducing in f32.
    if (s == TpSync::Q8 && row % block_size(DType::Q8_0) != 0)
      throw std::invalid_argument("--tp-sync q8 needs rows of whole 32-value blocks; n_embd is " + std::to_string(row));
    const bool f32 = s == TpSync::F32;
    const size_t words = (sync_bytes(s, n_rows, row) + sizeof(float) - 1) / sizeof(float);
    const auto ranks = static_cast<size_t>(comm.size());
    thread_local std::vector<float> mine, all, parts;
    all.resize(words * ranks);
    if (!f32) {
      mine.assign(words, 0.0f);
      parts.resize(n * ranks);
      encode(s, x, n_rows, row, reinterpret_cast<uint8_t*>(mine.data()), rows);
    }
    err = comm.all_gather(f32 ? x : mine.data(), words, all.data());
    if (err.empty()) {
      std::vector<const float*> ptrs(ranks);
      for (size_t r = 0; r < ranks; ++r) {
        if (f32) {
          ptrs[r] = all.data() + r * n;
          continue;
        }
        decode(s, reinterpret_cast<const uint8_t*>(all.data() + r * words), n_rows, row, parts.data() + r * n, rows);
        ptrs[r] = parts.data() + r * n;
      }
      rank_order_sum(ptrs.data(), static_cast<int>(ranks), n, x);
    }
  }
  if (!err.empty()) throw std::runtime_error("tensor parallel all-reduce: " + err);
}

}  // namespace herd
