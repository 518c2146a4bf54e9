// SimdBackend: argument checks, scratch buffers and the thread split; the arithmetic is in the
// ISA translation units behind k_ (this file is compiled for baseline x86-64).
#include "kernels/cpu/x86/simd_backend.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "kernels/fp16.h"
#include "kernels/quant.h"

namespace herd {
namespace {

constexpr int64_t kTileRows = 16;  // 16 f32 outputs = one 64-byte cache line per token row

[[noreturn]] void fail(const std::string& op, const std::string& what) {
  throw std::invalid_argument("cpu-simd " + op + ": " + what);
}

bool known_dtype(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return true;
  return false;
}

void check_matmul(const WeightMatrix& w, int64_t n_tokens, int64_t ldx, int64_t ldy) {
  if (!known_dtype(w.type)) fail("matmul", "unknown dtype id " + std::to_string(static_cast<uint32_t>(w.type)));
  if (w.rows < 0 || w.cols < 0) fail("matmul", "negative weight shape");
  if (w.cols % block_size(w.type) != 0)
    fail("matmul", std::to_string(w.cols) + " columns is not a multiple of the " + std::string(dtype_name(w.type)) +
                       " block size");
  if (w.rows > 0 && w.row_stride < row_bytes(w.type, w.cols)) fail("matmul", "row_stride smaller than a row");
  if (w.rows > 0 && w.cols > 0 && w.data == nullptr) fail("matmul", "null weight data");
  if (n_tokens < 0 || ldx < w.cols || ldy < w.rows) fail("matmul", "bad n_tokens or leading dimension");
}

bool has_q8_kernel(DType t) {
  switch (t) {
    case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::Q8_0:
    case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: return true;
    default: return false;
  }
}

bool is_legacy(DType t) {
  return t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q5_0 || t == DType::Q5_1 || t == DType::Q8_0;
}

}  // namespace

// The activation scales llama.cpp pairs with each weight type (f16 per 32 for the 32-value
// formats, f32 per 256 for the K-quants), so the fast path reproduces its quantized runs (the
// reference dumps) up to summation order, rather than landing an independent 0.1-0.3 logits away.
int act_scale_mode(DType weight_type) {
  switch (weight_type) {
    case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: return x86::kActF32x256;
    default: return x86::kActF16x32;
  }
}

bool SimdBackend::uses_q8(DType type, int64_t cols) const { return !exact_ && has_q8_kernel(type) && cols % 32 == 0; }

void SimdBackend::matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y,
                         int64_t ldy) {
  check_matmul(w, n_tokens, ldx, ldy);
  if (n_tokens == 0 || w.rows == 0) return;
  if (w.cols == 0) {
    for (int64_t t = 0; t < n_tokens; ++t) std::fill(y + t * ldy, y + t * ldy + w.rows, 0.0f);
    return;
  }
  if (uses_q8(w.type, w.cols)) matmul_q8(w, x, n_tokens, ldx, y, ldy);
  else matmul_exact(w, x, n_tokens, ldx, y, ldy);
}

void SimdBackend::matmul_q8(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y,
                            int64_t ldy) {
  const int64_t cols = w.cols;
  act_q_.resize(static_cast<size_t>(n_tokens * cols));
  act_d_.resize(static_cast<size_t>(n_tokens * cols / 32));
  act_s_.resize(static_cast<size_t>(n_tokens * cols / 16));
  const int mode = act_scale_mode(w.type);
  // (one token takes the kernels' row-layout path: nothing to regroup)
  const bool regroup = k_.regroup_act != nullptr && is_legacy(w.type) && n_tokens > 1;
  const int64_t n_groups = (n_tokens + x86::kActGroup - 1) / x86::kActGroup;
  const int64_t ldg = cols / 64 * x86::kActGroup * 64, ldgd = cols / 64 * x86::kActGroup * 2;
  if (regroup) {
    act_xg_.resize(static_cast<size_t>(std::max<int64_t>(n_groups * ldg, 1)));
    act_dg_.resize(static_cast<size_t>(std::max<int64_t>(n_groups * ldgd, 1)));
  }
  // Rows of the batch are independent: quantized in parallel when there are several.
  pool_.parallel_for(n_tokens, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      int8_t* q = act_q_.data() + t * cols;
      float* d = act_d_.data() + t * (cols / 32);
      k_.quantize_act(x + t * ldx, cols, q, d, act_s_.data() + t * (cols / 16), mode);
      if (regroup) {
        const int64_t g = t / x86::kActGroup, slot = t % x86::kActGroup;
        k_.regroup_act(q, d, cols, act_xg_.data() + g * ldg + 64 * slot, act_dg_.data() + g * ldgd + 2 * slot);
      }
    }
  });
  x86::Q8Act a;
  a.q = act_q_.data();
  a.d = act_d_.data();
  a.s = act_s_.data();
  if (regroup) {
    a.xg = act_xg_.data();
    a.dg = act_dg_.data();
    a.ldg = ldg;
    a.ldgd = ldgd;
  }
  a.ldq = cols;
  a.ldd = cols / 32;
  a.lds = cols / 16;
  const int64_t n_tiles = (w.rows + kTileRows - 1) / kTileRows;
  const auto* wd = static_cast<const uint8_t*>(w.data);
  pool_.parallel_for(n_tiles, [&](int64_t tb, int64_t te) {
    const int64_t r0 = tb * kTileRows, r1 = std::min(w.rows, te * kTileRows);
    if (!k_.matmul_q8(static_cast<uint32_t>(w.type), wd, w.row_stride, cols, r0, r1, a, n_tokens, y, ldy))
      throw std::logic_error("cpu-simd matmul: no 8-bit kernel for " + std::string(dtype_name(w.type)));
  });
}

void SimdBackend::matmul_exact(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y,
                               int64_t ldy) {
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

void SimdBackend::rmsnorm(const float* x, int64_t ldx, const float* weight, int64_t n_rows, int64_t dim, float eps,
                          float* out, int64_t ldo) {
  if (n_rows < 0 || dim <= 0 || ldx < dim || ldo < dim) fail("rmsnorm", "bad shape");
  for (int64_t r = 0; r < n_rows; ++r) k_.rmsnorm(x + r * ldx, weight, dim, eps, out + r * ldo);
}

void SimdBackend::attention(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv,
                            const AttentionShape& s, float scale, float* out, int64_t ldo) {
  if (s.n_tokens < 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 || s.head_dim <= 0 || s.n_heads % s.n_kv_heads != 0)
    fail("attention", "bad head counts");
  if (s.n_kv < s.n_tokens) fail("attention", "n_kv " + std::to_string(s.n_kv) + " < n_tokens " + std::to_string(s.n_tokens));
  if (ldq < s.n_heads * s.head_dim || ldo < s.n_heads * s.head_dim || ldkv < s.n_kv_heads * s.head_dim)
    fail("attention", "leading dimension smaller than a row");
  const x86::AttnShape shape{s.n_tokens, s.n_heads, s.n_kv_heads, s.head_dim, s.n_kv};
  pool_.parallel_for(s.n_tokens * s.n_heads, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;  // reused: no heap allocation per decode step
    scores.resize(static_cast<size_t>(std::max<int64_t>(s.n_kv, 1)));
    k_.attention(q, ldq, k, v, ldkv, shape, scale, out, ldo, begin, end, scores.data());
  });
}

void SimdBackend::rope(float* x, int64_t n_tokens, int64_t ld_token, int64_t n_heads, int64_t head_dim,
                       const int32_t* pos, const RopeParams& p) {
  if (p.n_rot <= 0 || p.n_rot % 2 != 0 || p.n_rot > head_dim) fail("rope", "n_rot must be even and <= head_dim");
  if (n_tokens < 0 || n_heads < 0 || ld_token < n_heads * head_dim) fail("rope", "bad shape");
  const int64_t half = p.n_rot / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {  // exactly ReferenceBackend::rope's expressions
    double f = std::pow(static_cast<double>(p.freq_base), -2.0 * static_cast<double>(i) / static_cast<double>(p.n_rot));
    if (p.freq_factors) f /= static_cast<double>(p.freq_factors[i]);
    inv_freq[static_cast<size_t>(i)] = f;
  }
  const bool normal = p.mode == RopeMode::Normal;
  pool_.parallel_for(n_tokens, [&](int64_t tb, int64_t te) {
    thread_local std::vector<double> cs;  // cos, sin of each rotated pair of this token
    cs.resize(static_cast<size_t>(2 * half));
    for (int64_t t = tb; t < te; ++t) {
      const double position = static_cast<double>(pos[t]) * static_cast<double>(p.freq_scale);
      for (int64_t i = 0; i < half; ++i) {
        const double theta = position * inv_freq[static_cast<size_t>(i)];
        cs[static_cast<size_t>(2 * i)] = std::cos(theta);
        cs[static_cast<size_t>(2 * i + 1)] = std::sin(theta);
      }
      for (int64_t h = 0; h < n_heads; ++h) {
        float* head = x + t * ld_token + h * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const double c = cs[static_cast<size_t>(2 * i)], s = cs[static_cast<size_t>(2 * i + 1)];
          const int64_t a = normal ? 2 * i : i, b = normal ? 2 * i + 1 : i + half;
          const double x0 = head[a], x1 = head[b];
          head[a] = static_cast<float>(x0 * c - x1 * s);
          head[b] = static_cast<float>(x0 * s + x1 * c);
        }
      }
    }
  });
}

void SimdBackend::silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  if (n > 0) k_.silu_mul(gate, up, out, n);
}

void SimdBackend::add(const float* a, const float* b, float* out, int64_t n) {
  if (n > 0) k_.add(a, b, out, n);
}

}  // namespace herd
