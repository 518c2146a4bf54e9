// KernelTableBackend (simd_driver.h): argument checks, scratch buffers and the thread split shared by
// the x86 and Arm SIMD backends; the arithmetic is in the ISA translation units behind k_ (this
// file is baseline code: x86-64 without AVX, or ARMv8-A).
#include "kernels/cpu/simd_driver.h"

#include <algorithm>
#include <memory>
#include <stdexcept>

#include "kernels/fp16.h"
#include "kernels/quant.h"

namespace herd {
namespace {

constexpr int64_t kTileRows = 16;  // 16 f32 outputs = one 64-byte cache line per token row

[[noreturn]] void fail(const char* prefix, const std::string& op, const std::string& what) {
  throw std::invalid_argument(std::string(prefix) + " " + op + ": " + what);
}

bool known_dtype(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return true;
  return false;
}

void check_matmul(const char* prefix, const WeightMatrix& w, int64_t n_tokens, int64_t ldx, int64_t ldy) {
  if (!known_dtype(w.type)) fail(prefix, "matmul", "unknown dtype id " + std::to_string(static_cast<uint32_t>(w.type)));
  if (w.rows < 0 || w.cols < 0) fail(prefix, "matmul", "negative weight shape");
  if (w.cols % block_size(w.type) != 0)
    fail(prefix, "matmul", std::to_string(w.cols) + " columns is not a multiple of the " + std::string(dtype_name(w.type)) +
                                   " block size");
  if (w.rows > 0 && w.row_stride < row_bytes(w.type, w.cols)) fail(prefix, "matmul", "row_stride smaller than a row");
  if (w.rows > 0 && w.cols > 0 && w.data == nullptr) fail(prefix, "matmul", "null weight data");
  if (n_tokens < 0 || ldx < w.cols || ldy < w.rows) fail(prefix, "matmul", "bad n_tokens or leading dimension");
}

bool has_q8_kernel(DType t) {
  switch (t) {
    case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::Q8_0:
    case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: return true;
    default: return false;
  }
}

}  // namespace

// The activation scales llama.cpp pairs with each weight type (f16 per 32 for the 32-value
// formats, f32 per 256 for the K-quants), so the fast path reproduces its quantized runs (the
// reference dumps) up to summation order, rather than landing an independent 0.1-0.3 logits away.
int act_scale_mode(DType weight_type) {
  switch (weight_type) {
    case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: return simd::kActF32x256;
    default: return simd::kActF16x32;
  }
}

bool KernelTableBackend::uses_q8(DType type, int64_t cols) const { return !exact_ && has_q8_kernel(type) && cols % 32 == 0; }

bool KernelTableBackend::uses_packed(DType type, int64_t cols) const {
  return uses_q8(type, cols) && k_.packed_bytes != nullptr && k_.repack != nullptr && k_.matmul_packed != nullptr &&
         k_.packed_bytes(static_cast<uint32_t>(type), simd::kPackedRows, cols) > 0;
}

PackedLayout KernelTableBackend::packed_layout(const WeightMatrix& w) const {
  if (!(w.rows > 0 && w.cols > 0 && known_dtype(w.type) && uses_packed(w.type, w.cols))) return {};
  return {simd::kPackedR16, k_.packed_bytes(static_cast<uint32_t>(w.type), w.rows, w.cols), simd::kPackedRows};
}

void KernelTableBackend::prepare_matmul(std::span<WeightMatrix* const> ws,
                                        const std::function<void(const WeightMatrix&)>& released) {
  auto wants = [&](const WeightMatrix& w) {
    return w.rows > 0 && w.cols > 0 && uses_packed(w.type, w.cols) &&
           !(w.packed.data && w.packed.layout == simd::kPackedR16);
  };
  size_t total = 0;  // one allocation for all: 64-byte aligned offsets
  for (const WeightMatrix* w : ws) {
    if (!wants(*w)) continue;
    check_matmul(error_prefix_, *w, 1, w->cols, w->rows);
    total += (k_.packed_bytes(static_cast<uint32_t>(w->type), w->rows, w->cols) + 63) / 64 * 64;
  }
  if (total == 0) return;
  const std::shared_ptr<uint8_t> storage = allocate_packed_storage(total);
  size_t offset = 0;
  for (WeightMatrix* w : ws) {
    if (!wants(*w)) continue;
    const uint32_t type = static_cast<uint32_t>(w->type);
    const size_t bytes = k_.packed_bytes(type, w->rows, w->cols);
    uint8_t* dst = storage.get() + offset;
    offset += (bytes + 63) / 64 * 64;
    const size_t group_bytes = k_.packed_bytes(type, simd::kPackedRows, w->cols);
    const auto* wd = static_cast<const uint8_t*>(w->data);
    // Slabs of ~4 MiB of source rows, each handed to `released` once copied: the peak memory is
    // the copies plus one slab, even for one large matrix (a vocabulary-sized output).
    const int64_t slab = std::max<int64_t>(
        simd::kPackedRows, static_cast<int64_t>((size_t{4} << 20) / w->row_stride) / simd::kPackedRows * simd::kPackedRows);
    for (int64_t s0 = 0; s0 < w->rows; s0 += slab) {
      const int64_t s1 = std::min(w->rows, s0 + slab);
      const int64_t g0 = s0 / simd::kPackedRows, n_groups = (s1 - s0 + simd::kPackedRows - 1) / simd::kPackedRows;
      pool_.parallel_for(n_groups, [&](int64_t gb, int64_t ge) {
        const int64_t r0 = s0 + gb * simd::kPackedRows, r1 = std::min(s1, s0 + ge * simd::kPackedRows);
        k_.repack(type, wd + static_cast<size_t>(r0) * w->row_stride, w->row_stride, r1 - r0, w->cols,
                  dst + static_cast<size_t>(g0 + gb) * group_bytes);
      });
      if (released) {
        WeightMatrix part = *w;  // rows [s0, s1)
        part.data = wd + static_cast<size_t>(s0) * w->row_stride;
        part.rows = s1 - s0;
        released(part);
      }
    }
    w->packed = PackedWeights{simd::kPackedR16, bytes, dst, storage};
  }
}

void KernelTableBackend::get_rows(const WeightMatrix& w, const int32_t* ids, int64_t n, float* out, int64_t ldo) {
  const uint32_t type = static_cast<uint32_t>(w.type);
  const bool ours = k_.unpack_row != nullptr && k_.packed_bytes != nullptr && w.packed.data != nullptr &&
                    w.packed.layout == simd::kPackedR16 && known_dtype(w.type) && w.rows > 0 && w.cols > 0 &&
                    w.cols % block_size(w.type) == 0 && w.packed.size == k_.packed_bytes(type, w.rows, w.cols);
  if (!ours) {
    ReferenceBackend::get_rows(w, ids, n, out, ldo);
    return;
  }
  if (n < 0 || ldo < w.cols) fail("get_rows", "bad count or leading dimension");
  row_bytes_.resize(row_bytes(w.type, w.cols));
  for (int64_t t = 0; t < n; ++t) {
    if (ids[t] < 0 || ids[t] >= w.rows)
      fail("get_rows", "row id " + std::to_string(ids[t]) + " out of range [0, " + std::to_string(w.rows) + ")");
    k_.unpack_row(type, w.packed.data, w.cols, ids[t], row_bytes_.data());
    dequantize_row(w.type, row_bytes_.data(), out + t * ldo, w.cols);
  }
}

void KernelTableBackend::matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y,
                                int64_t ldy) {
  check_matmul(error_prefix_, w, n_tokens, ldx, ldy);
  if (n_tokens == 0 || w.rows == 0) return;
  if (w.cols == 0) {
    for (int64_t t = 0; t < n_tokens; ++t) std::fill(y + t * ldy, y + t * ldy + w.rows, 0.0f);
    return;
  }
  if (uses_q8(w.type, w.cols)) matmul_q8(w, x, n_tokens, ldx, y, ldy);
  else matmul_exact(w, x, n_tokens, ldx, y, ldy);
}

void KernelTableBackend::matmul_q8(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx,
                                   float* y, int64_t ldy) {
  const int64_t cols = w.cols;
  act_q_.resize(static_cast<size_t>(n_tokens * cols));
  act_d_.resize(static_cast<size_t>(n_tokens * cols / 32));
  act_s_.resize(static_cast<size_t>(n_tokens * cols / 16));
  const int mode = act_scale_mode(w.type);
  const bool packed = uses_packed(w.type, cols);
  // Rows of the batch are independent: quantized in parallel when there are several.
  pool_.parallel_for(n_tokens, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      int8_t* q = act_q_.data() + t * cols;
      float* d = act_d_.data() + t * (cols / 32);
      k_.quantize_act(x + t * ldx, cols, q, d, act_s_.data() + t * (cols / 16), mode);
    }
  });
  simd::Q8Act a;
  a.q = act_q_.data();
  a.d = act_d_.data();
  a.s = act_s_.data();
  a.ldq = cols;
  a.ldd = cols / 32;
  a.lds = cols / 16;
  const int64_t n_tiles = (w.rows + kTileRows - 1) / kTileRows;
  const auto* wd = static_cast<const uint8_t*>(w.data);
  const uint32_t type = static_cast<uint32_t>(w.type);
  if (packed) {
    static_assert(kTileRows == simd::kPackedRows, "a thread's tile is one packed group");
    // The prepared copy when it is one of ours for this shape; else each tile is repacked here.
    const uint8_t* pw =
        w.packed.layout == simd::kPackedR16 && w.packed.size == k_.packed_bytes(type, w.rows, cols) ? w.packed.data
                                                                                                  : nullptr;
    const size_t group_bytes = k_.packed_bytes(type, simd::kPackedRows, cols);
    pool_.parallel_for(n_tiles, [&](int64_t tb, int64_t te) {
      const int64_t r0 = tb * kTileRows, r1 = std::min(w.rows, te * kTileRows);
      if (pw) {
        k_.matmul_packed(type, pw, w.rows, cols, r0, r1, a, n_tokens, y, ldy);
        return;
      }
      thread_local std::vector<uint8_t> tile;  // one repacked group, reused across calls
      tile.resize(group_bytes);
      for (int64_t r = r0; r < r1; r += kTileRows) {
        const int64_t n = std::min(kTileRows, r1 - r);
        k_.repack(type, wd + static_cast<size_t>(r) * w.row_stride, w.row_stride, n, cols, tile.data());
        k_.matmul_packed(type, tile.data(), n, cols, 0, n, a, n_tokens, y + r, ldy);
      }
    });
    return;
  }
  pool_.parallel_for(n_tiles, [&](int64_t tb, int64_t te) {
    const int64_t r0 = tb * kTileRows, r1 = std::min(w.rows, te * kTileRows);
    if (!k_.matmul_q8(static_cast<uint32_t>(w.type), wd, w.row_stride, cols, r0, r1, a, n_tokens, y, ldy))
      throw std::logic_error(std::string(error_prefix_) + " matmul: no 8-bit kernel for " + std::string(dtype_name(w.type)));
  });
}

void KernelTableBackend::matmul_exact(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx,
                                   float* y, int64_t ldy) {
  const int64_t cols = w.cols;
  // F16/BF16 matrices multiply activations rounded to their own type (backend.h).
  const float* xs = x;
  int64_t ldxs = ldx;
  if (w.type == DType::F16 || w.type == DType::BF16) {
    x_rounded_.resize(static_cast<size_t>(n_tokens * cols));
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int64_t c = 0; c < cols; ++c) {
        const float v = x[t * ldx + c];
        x_rounded_[t * cols + c] = w.type == DType::F16 ? f16_to_f32(f32_to_f16(v)) : bf16_to_f32(f32_to_bf16(v));
      }
    xs = x_rounded_.data();
    ldxs = cols;
  }
  const int64_t n_tiles = (w.rows + kTileRows - 1) / kTileRows;
  const auto* wd = static_cast<const uint8_t*>(w.data);
  const uint32_t type = static_cast<uint32_t>(w.type);
  pool_.parallel_for(n_tiles, [&](int64_t tb, int64_t te) {
    thread_local std::vector<float> row;  // one dequantized row, reused across calls
    row.resize(w.type == DType::F32 ? 0 : static_cast<size_t>(cols));
    const int64_t r1 = std::min(w.rows, te * kTileRows);
    // Each row is decoded once and multiplied with every token while it sits in L1.
    for (int64_t r = tb * kTileRows; r < r1; ++r) {
      const uint8_t* src = wd + static_cast<size_t>(r) * w.row_stride;
      const float* wr = reinterpret_cast<const float*>(src);
      if (w.type != DType::F32) {
        if (!k_.dequant_row(type, src, row.data(), cols)) dequantize_row(w.type, src, row.data(), cols);
        wr = row.data();
      }
      k_.dot_f32_tokens(wr, xs, cols, n_tokens, ldxs, y + r, ldy);
    }
  });
}

void KernelTableBackend::rmsnorm(const float* x, int64_t ldx, const float* weight, int64_t n_rows, int64_t dim,
                                 float eps, float* out, int64_t ldo) {
  if (n_rows < 0 || dim <= 0 || ldx < dim || ldo < dim) fail("rmsnorm", "bad shape");
  for (int64_t r = 0; r < n_rows; ++r) k_.rmsnorm(x + r * ldx, weight, dim, eps, out + r * ldo);
}

simd::AttnShape KernelTableBackend::check_attention(const AttentionShape& s, int64_t ldq, int64_t ldkv,
                                                    int64_t ldo) const {
  if (s.n_tokens < 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 || s.head_dim <= 0 || s.n_heads % s.n_kv_heads != 0)
    fail("attention", "bad head counts");
  if (s.n_kv < s.n_tokens) fail("attention", "n_kv " + std::to_string(s.n_kv) + " < n_tokens " + std::to_string(s.n_tokens));
  if (ldq < s.n_heads * s.head_dim || ldo < s.n_heads * s.head_dim || ldkv < s.n_kv_heads * s.head_dim)
    fail("attention", "leading dimension smaller than a row");
  return {s.n_tokens, s.n_heads, s.n_kv_heads, s.head_dim, s.n_kv};
}

void KernelTableBackend::attention(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv,
                                   const AttentionShape& s, float scale, float* out, int64_t ldo) {
  const simd::AttnShape shape = check_attention(s, ldq, ldkv, ldo);
  pool_.parallel_for(s.n_tokens * s.n_heads, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;  // reused: no heap allocation per decode step
    scores.resize(static_cast<size_t>(std::max<int64_t>(s.n_kv, 1)));
    k_.attention(q, ldq, k, v, ldkv, shape, scale, out, ldo, begin, end, scores.data());
  });
}

void KernelTableBackend::attention_rows(const float* q, int64_t ldq, const TypedRows& k, const TypedRows& v,
                                        const AttentionShape& s, float scale, float* out, int64_t ldo) {
  if (k.type != DType::F16 || !k_.attention_f16 || k.row_stride != v.row_stride || v.type != DType::F16) {
    Backend::attention_rows(q, ldq, k, v, s, scale, out, ldo);
    return;
  }
  if (k.row_stride % 2 != 0) fail("attention", "odd f16 row stride");
  const auto ldkv = static_cast<int64_t>(k.row_stride / 2);
  const simd::AttnShape shape = check_attention(s, ldq, ldkv, ldo);
  const auto* kh = static_cast<const uint16_t*>(k.data);
  const auto* vh = static_cast<const uint16_t*>(v.data);
  pool_.parallel_for(s.n_tokens * s.n_heads, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    scores.resize(static_cast<size_t>(std::max<int64_t>(s.n_kv, 1)));
    k_.attention_f16(q, ldq, kh, vh, ldkv, shape, scale, out, ldo, begin, end, scores.data());
  });
}

void KernelTableBackend::store_rows(const float* x, int64_t n, int64_t ldx, int64_t cols, DType type, void* dst,
                                    size_t dst_stride) {
  if (type != DType::F16 || !k_.store_f16 || dst_stride < row_bytes(type, cols) || ldx < cols || n < 0) {
    Backend::store_rows(x, n, ldx, cols, type, dst, dst_stride);
    return;
  }
  auto* o = static_cast<uint8_t*>(dst);
  for (int64_t t = 0; t < n; ++t) k_.store_f16(x + t * ldx, reinterpret_cast<uint16_t*>(o + t * dst_stride), cols);
}

void KernelTableBackend::silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  if (n > 0) k_.silu_mul(gate, up, out, n);
}

void KernelTableBackend::load_rows(const void* src, size_t src_stride, int64_t n, int64_t cols, DType type,
                                   float* dst, int64_t ldd) {
  const auto* in = static_cast<const uint8_t*>(src);
  pool_.parallel_for(n, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      if (!k_.dequant_row(static_cast<uint32_t>(type), in + t * src_stride, dst + t * ldd, cols))
        dequantize_row(type, in + t * src_stride, dst + t * ldd, cols);
  });
}

void KernelTableBackend::add(const float* a, const float* b, float* out, int64_t n) {
  if (n > 0) k_.add(a, b, out, n);
}

void KernelTableBackend::fail(const std::string& op, const std::string& what) const {
  herd::fail(error_prefix_, op, what);
}

}  // namespace herd
