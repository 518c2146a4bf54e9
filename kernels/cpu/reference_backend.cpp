// Scalar reference ops. Every reduction accumulates in double and rounds to f32 once at the end,
// so these are the most accurate values we can produce at reasonable cost; optimized backends are
// compared against them with tolerances derived from their own (f32) accumulation error.
#include "kernels/cpu/reference_backend.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/fp16.h"
#include "kernels/quant.h"

namespace herd {
namespace {

[[noreturn]] void fail(const std::string& op, const std::string& what) {
  throw std::invalid_argument("cpu-reference " + op + ": " + what);
}

bool known_dtype(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return true;
  return false;
}

void check_weights(const WeightMatrix& w, const char* op) {
  if (!known_dtype(w.type)) fail(op, "unknown dtype id " + std::to_string(static_cast<uint32_t>(w.type)));
  if (w.rows < 0 || w.cols < 0) fail(op, "negative weight shape");
  if (w.cols % block_size(w.type) != 0)
    fail(op, std::to_string(w.cols) + " columns is not a multiple of the " + std::string(dtype_name(w.type)) +
                 " block size");
  if (w.rows > 0 && w.row_stride < row_bytes(w.type, w.cols))
    fail(op, "row_stride " + std::to_string(w.row_stride) + " < row bytes " +
                 std::to_string(row_bytes(w.type, w.cols)));
  if (w.rows > 0 && w.cols > 0 && w.data == nullptr) fail(op, "null weight data");
}

const void* weight_row(const WeightMatrix& w, int64_t r) {
  return static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r) * w.row_stride;
}

}  // namespace

bool ReferenceBackend::supports(Op op, DType type) const {
  if (op == Op::MatMul || op == Op::GetRows) return known_dtype(type);
  if (op == Op::Attention || op == Op::StoreRows) return is_kv_type(type);
  return type == DType::F32;
}

void ReferenceBackend::set_threads(int n_threads) { pool_.set_size(std::max(1, n_threads)); }

// Rows are split across threads; each y[t][r] is one thread's in-order double sum over c, so the
// result does not depend on the thread count.
void ReferenceBackend::matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, int64_t ldx, float* y,
                              int64_t ldy) {
  check_weights(w, "matmul");
  if (n_tokens < 0 || ldx < w.cols || ldy < w.rows) fail("matmul", "bad n_tokens or leading dimension");
  if (n_tokens == 0 || w.rows == 0) return;
  // A 16-bit float matrix multiplies activations of its own type: x is rounded to f16 (bf16) first.
  // That is the F16/BF16 dot product llama.cpp defines (its reference logits for F16 models depend on
  // it by up to ~1e-2); the products and the sum stay exact in double.
  const float* xs = x;
  int64_t ldxs = ldx;
  std::vector<float> x_rounded;
  if (w.type == DType::F16 || w.type == DType::BF16) {
    x_rounded.resize(static_cast<size_t>(n_tokens * w.cols));
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int64_t c = 0; c < w.cols; ++c) {
        const float v = x[t * ldx + c];
        x_rounded[t * w.cols + c] = w.type == DType::F16 ? f16_to_f32(f32_to_f16(v)) : bf16_to_f32(f32_to_bf16(v));
      }
    xs = x_rounded.data();
    ldxs = w.cols;
  }
  pool_.parallel_for(w.rows, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(w.cols));  // one dequantized weight row
    for (int64_t r = begin; r < end; ++r) {
      dequantize_row(w.type, weight_row(w, r), row.data(), w.cols);
      for (int64_t t = 0; t < n_tokens; ++t) {
        const float* xt = xs + t * ldxs;
        double acc = 0.0;
        for (int64_t c = 0; c < w.cols; ++c) acc += static_cast<double>(row[c]) * static_cast<double>(xt[c]);
        y[t * ldy + r] = static_cast<float>(acc);
      }
    }
  });
}

void ReferenceBackend::get_rows(const WeightMatrix& w, const int32_t* ids, int64_t n, float* out, int64_t ldo) {
  check_weights(w, "get_rows");
  if (n < 0 || ldo < w.cols) fail("get_rows", "bad count or leading dimension");
  for (int64_t t = 0; t < n; ++t) {
    if (ids[t] < 0 || ids[t] >= w.rows)
      fail("get_rows", "row id " + std::to_string(ids[t]) + " out of range [0, " + std::to_string(w.rows) + ")");
    dequantize_row(w.type, weight_row(w, ids[t]), out + t * ldo, w.cols);
  }
}

void ReferenceBackend::rmsnorm(const float* x, int64_t ldx, const float* weight, int64_t n_rows, int64_t dim,
                               float eps, float* out, int64_t ldo) {
  if (n_rows < 0 || dim <= 0 || ldx < dim || ldo < dim) fail("rmsnorm", "bad shape");
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * ldx;
    double sum_sq = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum_sq += static_cast<double>(xr[i]) * xr[i];
    const double inv_rms = 1.0 / std::sqrt(sum_sq / static_cast<double>(dim) + static_cast<double>(eps));
    float* o = out + r * ldo;  // may alias xr: each element is read before it is written
    for (int64_t i = 0; i < dim; ++i) o[i] = static_cast<float>(static_cast<double>(xr[i]) * inv_rms * weight[i]);
  }
}

// theta_i = pos * freq_scale * freq_base^(-2i / n_rot) / freq_factors[i], computed in double.
void ReferenceBackend::rope(float* x, int64_t n_tokens, int64_t ld_token, int64_t n_heads, int64_t head_dim,
                            const int32_t* pos, const RopeParams& p) {
  if (p.n_rot <= 0 || p.n_rot % 2 != 0 || p.n_rot > head_dim) fail("rope", "n_rot must be even and <= head_dim");
  if (n_tokens < 0 || n_heads < 0 || ld_token < n_heads * head_dim) fail("rope", "bad shape");
  const int64_t half = p.n_rot / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    double f = std::pow(static_cast<double>(p.freq_base), -2.0 * static_cast<double>(i) / static_cast<double>(p.n_rot));
    if (p.freq_factors) f /= static_cast<double>(p.freq_factors[i]);
    inv_freq[i] = f;
  }
  for (int64_t t = 0; t < n_tokens; ++t) {
    const double position = static_cast<double>(pos[t]) * static_cast<double>(p.freq_scale);
    for (int64_t h = 0; h < n_heads; ++h) {
      float* head = x + t * ld_token + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const double theta = position * inv_freq[i];
        const double c = std::cos(theta), s = std::sin(theta);
        const int64_t a = p.mode == RopeMode::Normal ? 2 * i : i;
        const int64_t b = p.mode == RopeMode::Normal ? 2 * i + 1 : i + half;
        const double x0 = head[a], x1 = head[b];
        head[a] = static_cast<float>(x0 * c - x1 * s);
        head[b] = static_cast<float>(x0 * s + x1 * c);
      }
    }
  }
}

void ReferenceBackend::softmax(float* x, int64_t n) {
  if (n <= 0) return;
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  if (mx == -std::numeric_limits<float>::infinity()) {  // everything masked: no preference
    std::fill(x, x + n, static_cast<float>(1.0 / static_cast<double>(n)));
    return;
  }
  std::vector<double> e(static_cast<size_t>(n));
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += (e[i] = std::exp(static_cast<double>(x[i]) - mx));
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(e[i] / sum);
}

// One (token, head) pair per index; each output row is one thread's work, so any thread count
// gives the same bits.
void ReferenceBackend::attention(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv,
                                 const AttentionShape& s, float scale, float* out, int64_t ldo) {
  if (s.n_tokens < 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 || s.head_dim <= 0 || s.n_heads % s.n_kv_heads != 0)
    fail("attention", "bad head counts");
  if (s.n_kv < s.n_tokens) fail("attention", "n_kv " + std::to_string(s.n_kv) + " < n_tokens " + std::to_string(s.n_tokens));
  if (ldq < s.n_heads * s.head_dim || ldo < s.n_heads * s.head_dim || ldkv < s.n_kv_heads * s.head_dim)
    fail("attention", "leading dimension smaller than a row");
  const int64_t group = s.n_heads / s.n_kv_heads;
  const int64_t hd = s.head_dim;
  pool_.parallel_for(s.n_tokens * s.n_heads, [&](int64_t begin, int64_t end) {
    std::vector<double> p(static_cast<size_t>(s.n_kv));
    std::vector<double> acc(static_cast<size_t>(hd));
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t t = idx / s.n_heads, h = idx % s.n_heads, kvh = h / group;
      const int64_t n_visible = s.n_kv - s.n_tokens + t + 1;  // rows 0 .. n_kv - n_tokens + t
      const float* qh = q + t * ldq + h * hd;
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < n_visible; ++j) {
        const float* kj = k + j * ldkv + kvh * hd;
        double dot = 0.0;
        for (int64_t i = 0; i < hd; ++i) dot += static_cast<double>(qh[i]) * kj[i];
        p[j] = dot * static_cast<double>(scale);
        mx = std::max(mx, p[j]);
      }
      double sum = 0.0;
      for (int64_t j = 0; j < n_visible; ++j) sum += (p[j] = std::exp(p[j] - mx));
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = 0; j < n_visible; ++j) {
        const float* vj = v + j * ldkv + kvh * hd;
        for (int64_t i = 0; i < hd; ++i) acc[i] += p[j] * vj[i];
      }
      float* o = out + t * ldo + h * hd;
      for (int64_t i = 0; i < hd; ++i) o[i] = static_cast<float>(acc[i] / sum);
    }
  });
}

void ReferenceBackend::silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    out[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * static_cast<double>(up[i]));
  }
}

void ReferenceBackend::add(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

std::unique_ptr<Backend> make_reference_backend() { return std::make_unique<ReferenceBackend>(); }

}  // namespace herd
