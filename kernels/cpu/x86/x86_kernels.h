// The x86 SIMD kernel tables: AVX2 (kernels_avx2.cpp) and AVX-512 (kernels_avx512.cpp), each
// compiled with its own -m flags and filling one simd::Kernels (kernels/cpu/simd_table.h, which
// also says why the ISA units use plain C-like types only). Both have the 16-row packed layout
// (packed_bytes, repack, matmul_packed: matmul_packed.inc, matmul_packed_low.inc) for Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K, every type with an 8-bit kernel; their matmul_q8
// (the row layout, matmul_driver.inc) has no type left.
#pragma once

#include "kernels/cpu/simd_table.h"

namespace herd::x86 {

using simd::ActScale;
using simd::AttnShape;
using simd::Kernels;
using simd::kActF16x32;
using simd::kActF32x256;
using simd::kActF32x32;
using simd::Q8Act;

const Kernels& kernels_avx2();
const Kernels& kernels_avx512();

}  // namespace herd::x86
