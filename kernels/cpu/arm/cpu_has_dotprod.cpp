// The run-time dotprod check that picks between the two Arm kernel tables (baseline AArch64 code;
// the backend itself is KernelTableBackend, simd_driver.cpp).
#include <cstddef>

#include "kernels/cpu/arm/arm_kernels.h"

#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)  // arch/arm64/include/uapi/asm/hwcap.h
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

namespace herd {
namespace arm {

bool cpu_has_dotprod() {
#if defined(__linux__)
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
  int v = 0;
  size_t len = sizeof(v);
  return sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &len, nullptr, 0) == 0 && v != 0;
#else
  return false;
#endif
}

}  // namespace arm
}  // namespace herd
