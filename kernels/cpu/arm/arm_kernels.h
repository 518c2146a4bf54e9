// The Arm NEON kernel tables one instruction-set level provides: baseline ARMv8-A NEON
// (kernels_neon.cpp: 8-bit dots from vmull_s8 + pairwise adds) and ARMv8.2-A dotprod
// (kernels_neon_dotprod.cpp, compiled with -march=armv8.2-a+dotprod: vdotq_s32). Both fill the same
// simd::Kernels (kernels/cpu/simd_table.h) from the same .inc files (row kernels only, no packed
// layout); neon_backend.cpp (baseline code) picks one after asking
// the CPU (getauxval(AT_HWCAP) & HWCAP_ASIMDDP on Linux, sysctl on macOS).
//
// Same rule as the x86 tables (simd_table.h): the ISA units include only this header and
// <arm_neon.h>, keep everything in an anonymous namespace and take raw pointers, so no inline
// function or template compiled with +dotprod can be picked by the linker for baseline code.
#pragma once

#include "kernels/cpu/simd_table.h"

namespace herd::arm {

using simd::ActScale;
using simd::AttnShape;
using simd::Kernels;
using simd::kActF16x32;
using simd::kActF32x256;
using simd::kActF32x32;
using simd::Q8Act;

const Kernels& kernels_neon();
const Kernels& kernels_neon_dotprod();

// Whether this CPU has the ARMv8.2 dot-product instructions (SDOT/UDOT).
bool cpu_has_dotprod();

}  // namespace herd::arm
