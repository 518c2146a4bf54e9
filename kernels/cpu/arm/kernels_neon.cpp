// The neon kernel table: baseline ARMv8-A NEON (every AArch64 CPU): 8-bit dots from vmull_s8 and pairwise adds.
// The kernels themselves are the shared .inc files.
#include <arm_neon.h>

#include "kernels/cpu/arm/arm_kernels.h"

#if !defined(__aarch64__)
#error "kernels_neon.cpp is AArch64 code (kernels/cpu/arm/sources.cmake)"
#endif
// The baseline table never uses SDOT, even where the compiler's default target has it (Apple).
#define HERD_NEON_DOTPROD 0

namespace herd::arm {
namespace {
#include "kernels/cpu/arm/neon_util.inc"
#include "kernels/cpu/arm/act_quant.inc"
#include "kernels/cpu/arm/matmul_legacy.inc"
#include "kernels/cpu/arm/matmul_kquants.inc"
#include "kernels/cpu/arm/matmul_driver.inc"
#include "kernels/cpu/arm/float_ops.inc"

constexpr Kernels kTable{"neon", quantize_act, matmul_q8, dequant_row, dot_f32_tokens, attention, rmsnorm, silu_mul, add,
                         nullptr, nullptr, nullptr, nullptr};  // no packed layout: row kernels only
}  // namespace

const Kernels& kernels_neon() { return kTable; }

}  // namespace herd::arm
