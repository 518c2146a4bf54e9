// dequantize_row / quantize_row: argument checks, the three float formats, and dispatch to the
// block codecs in quant_legacy.cpp and quant_kquants.cpp.
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cpu/quant_impl.h"
#include "kernels/quant.h"

namespace herd {
namespace {

bool known(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return true;
  return false;
}

int64_t checked_blocks(DType t, int64_t n, const char* what) {
  if (!known(t))
    throw std::invalid_argument(std::string(what) + ": unknown dtype id " +
                                std::to_string(static_cast<uint32_t>(t)));
  const int64_t bs = block_size(t);
  if (n < 0 || n % bs != 0)
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(n) + " values is not a multiple of the " +
                                std::string(dtype_name(t)) + " block size " + std::to_string(bs));
  return n / bs;
}

}  // namespace

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  const int64_t nb = checked_blocks(t, n, "dequantize_row");
  const auto* s = static_cast<const uint8_t*>(src);
  switch (t) {
    case DType::F32:
      if (n > 0) std::memcpy(dst, s, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = quant::load_f16(s + 2 * i);
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(static_cast<uint16_t>(s[2 * i] | (s[2 * i + 1] << 8)));
      return;
    case DType::Q4_0: return quant::dequantize_q4_0(s, dst, nb);
    case DType::Q4_1: return quant::dequantize_q4_1(s, dst, nb);
    case DType::Q5_0: return quant::dequantize_q5_0(s, dst, nb);
    case DType::Q5_1: return quant::dequantize_q5_1(s, dst, nb);
    case DType::Q8_0: return quant::dequantize_q8_0(s, dst, nb);
    case DType::Q2_K: return quant::dequantize_q2_k(s, dst, nb);
    case DType::Q3_K: return quant::dequantize_q3_k(s, dst, nb);
    case DType::Q4_K: return quant::dequantize_q4_k(s, dst, nb);
    case DType::Q5_K: return quant::dequantize_q5_k(s, dst, nb);
    case DType::Q6_K: return quant::dequantize_q6_k(s, dst, nb);
  }
}

void quantize_row(DType t, const float* src, void* dst, int64_t n) {
  const int64_t nb = checked_blocks(t, n, "quantize_row");
  auto* d = static_cast<uint8_t*>(dst);
  switch (t) {
    case DType::F32:
      if (n > 0) std::memcpy(d, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) quant::store_f16_bits(d + 2 * i, f32_to_f16(src[i]));
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) quant::store_f16_bits(d + 2 * i, f32_to_bf16(src[i]));
      return;
    case DType::Q4_0: return quant::quantize_q4_0(src, d, nb);
    case DType::Q4_1: return quant::quantize_q4_1(src, d, nb);
    case DType::Q5_0: return quant::quantize_q5_0(src, d, nb);
    case DType::Q5_1: return quant::quantize_q5_1(src, d, nb);
    case DType::Q8_0: return quant::quantize_q8_0(src, d, nb);
    case DType::Q2_K: return quant::quantize_q2_k(src, d, nb);
    case DType::Q3_K: return quant::quantize_q3_k(src, d, nb);
    case DType::Q4_K: return quant::quantize_q4_k(src, d, nb);
    case DType::Q5_K: return quant::quantize_q5_k(src, d, nb);
    case DType::Q6_K: return quant::quantize_q6_k(src, d, nb);
  }
}

}  // namespace herd
