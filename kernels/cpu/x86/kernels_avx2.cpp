// The avx2 kernel table. This translation unit alone is compiled with the avx2 flags (see
// kernels/cpu/sources.cmake); the kernels themselves are the shared .inc files, written with
// 256-bit AVX2 intrinsics.
#include <immintrin.h>

#include "kernels/cpu/x86/x86_kernels.h"

#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "kernels_avx2.cpp must be compiled with its ISA flags (kernels/cpu/sources.cmake)"
#endif


namespace herd::x86 {
namespace {
#include "kernels/cpu/x86/simd_util.inc"
#include "kernels/cpu/x86/act_quant.inc"
#include "kernels/cpu/x86/matmul_driver.inc"
#include "kernels/cpu/x86/matmul_packed.inc"
#include "kernels/cpu/x86/float_ops.inc"

constexpr Kernels kTable{"avx2", quantize_act, matmul_q8, dequant_row, dot_f32_tokens, attention, rmsnorm, silu_mul, add,
                         packed_bytes, repack, matmul_packed, unpack_row, attention_f16, store_f16};
}  // namespace

const Kernels& kernels_avx2() { return kTable; }

}  // namespace herd::x86
