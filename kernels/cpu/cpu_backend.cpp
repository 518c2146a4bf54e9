// Run-time ISA selection for the CPU backend. This file is compiled for baseline x86-64 (or any
// other architecture, where only "scalar" exists) and asks the CPU before touching any kernel
// table built with wider instruction sets.
#include "kernels/cpu/cpu_backend.h"

#include <cstdlib>
#include <stdexcept>

#include "kernels/cpu/reference_backend.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HERD_CPU_X86 1
#include "kernels/cpu/x86/simd_backend.h"
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define HERD_CPU_ARM 1
#include "kernels/cpu/arm/neon_backend.h"
#endif

namespace herd {

bool cpu_supports_isa(const std::string& isa) {
  if (isa == "scalar") return true;
#ifdef HERD_CPU_X86
  __builtin_cpu_init();
  // Every AVX2+FMA CPU also has F16C (Haswell, Zen and later), which __builtin_cpu_supports cannot
  // ask about on every compiler version; the kernels use it for the f16 scales.
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == "avx2") return avx2;
  if (isa == "avx512")
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
#ifdef HERD_CPU_ARM
  if (isa == "neon") return true;  // Advanced SIMD is mandatory in AArch64
  if (isa == "neon-dotprod") return arm::cpu_has_dotprod();
#endif
  return false;
}

std::string cpu_best_isa() {
  if (cpu_supports_isa("avx512")) return "avx512";
  if (cpu_supports_isa("avx2")) return "avx2";
  if (cpu_supports_isa("neon-dotprod")) return "neon-dotprod";
  if (cpu_supports_isa("neon")) return "neon";
  return "scalar";
}

std::string cpu_backend_description() {
#ifdef HERD_CPU_X86
  return std::string("x86-64: avx512 (f+bw+vl+vnni) ") + (cpu_supports_isa("avx512") ? "yes" : "no") +
         ", avx2+fma " + (cpu_supports_isa("avx2") ? "yes" : "no") + "; auto = " + cpu_best_isa();
#elif defined(HERD_CPU_ARM)
  return std::string("aarch64: neon yes, dotprod ") + (cpu_supports_isa("neon-dotprod") ? "yes" : "no") +
         "; auto = " + cpu_best_isa();
#else
  return "non-x86 CPU: scalar reference kernels only";
#endif
}

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& opts) {
  std::string isa = opts.isa;
  if (isa == "auto") {
    const char* env = std::getenv("HERD_CPU_ISA");
    if (env != nullptr && *env != '\0') isa = env;
  }
  if (isa == "auto") isa = cpu_best_isa();
#ifdef HERD_CPU_ARM
  const bool arm_isa = isa == "neon" || isa == "neon-dotprod";  // known names on AArch64 only
#else
  const bool arm_isa = false;
#endif
  if (isa != "scalar" && isa != "avx2" && isa != "avx512" && !arm_isa)
    throw std::invalid_argument("cpu backend: unknown ISA '" + isa + "' (expected auto, avx512, avx2 or scalar)");
  if (!cpu_supports_isa(isa))
    throw std::runtime_error("cpu backend: this CPU cannot run the " + isa + " kernels (" +
                             cpu_backend_description() + ")");
  if (isa == "scalar") return make_reference_backend();
#ifdef HERD_CPU_ARM
  if (arm_isa)
    return std::make_unique<NeonBackend>(isa == "neon" ? arm::kernels_neon() : arm::kernels_neon_dotprod(), opts.exact);
#endif
#ifdef HERD_CPU_X86
  const x86::Kernels& k = isa == "avx512" ? x86::kernels_avx512() : x86::kernels_avx2();
  return std::make_unique<SimdBackend>(k, opts.exact);
#else
  throw std::logic_error("unreachable");
#endif
}

}  // namespace herd
