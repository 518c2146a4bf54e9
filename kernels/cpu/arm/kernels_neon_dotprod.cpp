// The neon-dotprod kernel table: ARMv8.2-A dotprod (Apple M1+, Cortex-A55/A76+, Raspberry Pi 5): 8-bit dots with vdotq_s32.
// Only this translation unit is compiled with -march=armv8.2-a+dotprod.
// The kernels themselves are the shared .inc files.
#include <arm_neon.h>

#include "kernels/cpu/arm/arm_kernels.h"

#if !defined(__aarch64__) || !defined(__ARM_FEATURE_DOTPROD)
#error "kernels_neon_dotprod.cpp must be compiled with -march=armv8.2-a+dotprod (kernels/cpu/arm/sources.cmake)"
#endif
#define HERD_NEON_DOTPROD 1

namespace herd::arm {
namespace {
#include "kernels/cpu/arm/neon_util.inc"
#include "kernels/cpu/arm/act_quant.inc"
#include "kernels/cpu/arm/matmul_legacy.inc"
#include "kernels/cpu/arm/matmul_kquants.inc"
#include "kernels/cpu/arm/matmul_driver.inc"
#include "kernels/cpu/arm/float_ops.inc"

constexpr Kernels kTable{"neon-dotprod", quantize_act, matmul_q8, dequant_row, dot_f32_tokens, attention, rmsnorm, silu_mul, add,
                         nullptr, nullptr, nullptr, nullptr};  // no packed layout: row kernels only
}  // namespace

const Kernels& kernels_neon_dotprod() { return kTable; }

}  // namespace herd::arm
