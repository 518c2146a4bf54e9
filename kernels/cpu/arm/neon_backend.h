// The Arm NEON CPU backend: KernelTableBackend (simd_driver.h: matmul with its exact and 8-bit
// paths, attention, rmsnorm, silu_mul, add, the thread split) over one Arm kernel table
// (arm_kernels.h: baseline NEON, or dotprod). get_rows, rope and softmax are inherited from the
// reference (not on the hot path). The exact path's dots are vfmaq_f32; the baseline and dotprod
// tables give the same bits as each other (their integer dots are exact and lane-identical).
#pragma once

#include "kernels/cpu/arm/arm_kernels.h"
#include "kernels/cpu/simd_driver.h"

namespace herd {

class NeonBackend : public KernelTableBackend {
 public:
  NeonBackend(const arm::Kernels& kernels, bool exact) : KernelTableBackend(kernels, exact, "cpu-neon") {}
};

}  // namespace herd
