// The avx512 kernel table. This translation unit alone is compiled with the avx512 flags (see
// kernels/cpu/sources.cmake); the kernels themselves are the shared .inc files, written with
// 256-bit AVX2 intrinsics. Built with -mavx512vnni they use vpdpbusd (AVX-512 VNNI on
// 256-bit registers) for the integer dots and the EVEX encodings / 32 vector registers of AVX-512.
#include <immintrin.h>

#include "kernels/cpu/x86/x86_kernels.h"

#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "kernels_avx512.cpp must be compiled with its ISA flags (kernels/cpu/sources.cmake)"
#endif
#if !defined(__AVX512VNNI__) || !defined(__AVX512VL__) || !defined(__AVX512BW__)
#error "kernels_avx512.cpp needs -mavx512f -mavx512bw -mavx512vl -mavx512vnni"
#endif

namespace herd::x86 {
namespace {
#include "kernels/cpu/x86/simd_util.inc"
#include "kernels/cpu/x86/act_quant.inc"
#include "kernels/cpu/x86/matmul_driver.inc"
#include "kernels/cpu/x86/matmul_packed.inc"
#include "kernels/cpu/x86/float_ops.inc"

constexpr Kernels kTable{"avx512", quantize_act, matmul_q8, dequant_row, dot_f32_tokens, attention, rmsnorm, silu_mul, add,
                         packed_bytes, repack, matmul_packed, unpack_row, attention_f16, store_f16};
}  // namespace

const Kernels& kernels_avx512() { return kTable; }

}  // namespace herd::x86
