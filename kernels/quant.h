// Row conversion between f32 and every storage type in dtype.h, bit-exact to the GGUF block
// layouts (see the comment at the top of dtype.h). These are the scalar definitions of the
// formats: every optimized kernel must dequantize to exactly the values dequantize_row gives.
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace herd {

// dst[0..n) = the values stored in `src`, a row of n values of type t (row_bytes(t, n) bytes).
// Throws std::invalid_argument if n is negative or not a multiple of block_size(t), or t is unknown.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

// Encodes src[0..n) as type t into dst (row_bytes(t, n) bytes). A reference quantizer: every
// block is valid and its scales come from the block's own range (max-abs for the symmetric types,
// min/max for the ones with an offset), values rounded to the nearest level; no iterative search.
// F32 is exact; F16/BF16 round to nearest even. Same preconditions and errors as dequantize_row.
void quantize_row(DType t, const float* src, void* dst, int64_t n);

}  // namespace herd
