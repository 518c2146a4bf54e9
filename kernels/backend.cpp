// The host defaults of the Backend seam (backend.h): memory, the KV row conversions, attention
// over typed KV rows and the bias add. A CPU backend inherits them; a GPU backend overrides each
// with its device's version.
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "kernels/backend.h"
#include "kernels/quant.h"

namespace herd {

Device parse_device(const std::string& text) {
  if (text == "cpu" || text == "host") return {};
  if (text == "cuda") return {Device::Kind::Cuda, 0};
  if (text.rfind("cuda:", 0) == 0 && text.size() > 5 && text.size() <= 8 &&
      text.find_first_not_of("0123456789", 5) == std::string::npos)
    return {Device::Kind::Cuda, std::stoi(text.substr(5))};
  throw std::invalid_argument("expected cpu or cuda:N (N a GPU index), got '" + text + "'");
}

bool is_kv_type(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::Q8_0; }

Buffer Backend::alloc(size_t bytes) {
  // ::operator new without value-initialisation: the pages are untouched until written.
  void* p = ::operator new(bytes > 0 ? bytes : 1, std::align_val_t(64));
  return Buffer(device(), std::shared_ptr<void>(p, [](void* q) { ::operator delete(q, std::align_val_t(64)); }),
                bytes);
}

void Backend::copy_in(void* dst, const void* host_src, size_t bytes) {
  if (bytes) std::memcpy(dst, host_src, bytes);
}

void Backend::copy_out(void* host_dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(host_dst, src, bytes);
}

void Backend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}

void Backend::fill_zero(void* dst, size_t bytes) {
  if (bytes) std::memset(dst, 0, bytes);
}

void Backend::store_rows(const float* x, int64_t n, int64_t ldx, int64_t cols, DType type, void* dst,
                         size_t dst_stride) {
  if (!is_kv_type(type)) throw std::invalid_argument("store_rows: " + std::string(dtype_name(type)) + " is not a KV type");
  if (n < 0 || cols < 0 || ldx < cols || dst_stride < row_bytes(type, cols))
    throw std::invalid_argument("store_rows: bad shape or stride");
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t t = 0; t < n; ++t) {
    if (type == DType::F32) std::memcpy(out + t * dst_stride, x + t * ldx, sizeof(float) * cols);
    else quantize_row(type, x + t * ldx, out + t * dst_stride, cols);
  }
}

void Backend::load_rows(const void* src, size_t src_stride, int64_t n, int64_t cols, DType type, float* dst,
                        int64_t ldd) {
  const auto* in = static_cast<const uint8_t*>(src);
  for (int64_t t = 0; t < n; ++t) dequantize_row(type, in + t * src_stride, dst + t * ldd, cols);
}

void Backend::attention_rows(const float* q, int64_t ldq, const TypedRows& k, const TypedRows& v,
                             const AttentionShape& s, float scale, float* out, int64_t ldo) {
  if (k.type != v.type || k.row_stride != v.row_stride)
    throw std::invalid_argument("attention_rows: keys and values must share type and row stride");
  if (!supports(Op::Attention, k.type))
    throw std::invalid_argument(name() + " attention: KV type " + std::string(dtype_name(k.type)) + " unsupported");
  if (k.type == DType::F32) {
    if (k.row_stride % sizeof(float) != 0) throw std::invalid_argument("attention_rows: f32 row stride");
    const auto ld = static_cast<int64_t>(k.row_stride / sizeof(float));
    attention(q, ldq, static_cast<const float*>(k.data), static_cast<const float*>(v.data), ld, s, scale, out, ldo);
    return;
  }
  // Converted once per call (not per head): rows 0..n_kv-1 of both, then the f32 kernel.
  const int64_t kv_dim = s.n_kv_heads * s.head_dim;
  kv_scratch_.resize(static_cast<size_t>(2 * s.n_kv * kv_dim));
  float* kf = kv_scratch_.data();
  float* vf = kf + s.n_kv * kv_dim;
  load_rows(k.data, k.row_stride, s.n_kv, kv_dim, k.type, kf, kv_dim);
  load_rows(v.data, v.row_stride, s.n_kv, kv_dim, v.type, vf, kv_dim);
  attention(q, ldq, kf, vf, kv_dim, s, scale, out, ldo);
}

void Backend::add_bias(float* x, int64_t n_rows, int64_t ldx, const float* bias, int64_t dim) {
  for (int64_t t = 0; t < n_rows; ++t) add(x + t * ldx, bias, x + t * ldx, dim);
}

}  // namespace herd
