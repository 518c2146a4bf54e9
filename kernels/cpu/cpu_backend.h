// The CPU backend factory: picks the fastest kernel set this CPU runs (AVX-512 VNNI, AVX2+FMA,
// or the scalar reference) at run time, so one baseline x86-64 binary runs anywhere.
#pragma once

#include <memory>
#include <string>

#include "kernels/backend.h"

namespace herd {

struct CpuBackendOptions {
  // false (default): quantized matrices multiply 8-bit activations (integer dots, llama.cpp's
  // method: ~0.1–0.3 logits from the exact math on quantized models). true: dequantize to f32 and
  // use f32 FMA (the exact math of the weights, within f32 summation error of the reference).
  bool exact = false;
  // "auto" | "avx512" | "avx2" | "scalar" (| "neon-dotprod" | "neon" on AArch64, where "neon" is the
  // baseline table and "neon-dotprod" needs the ARMv8.2 dot product). An explicit ISA the CPU lacks throws
  // std::runtime_error. With "auto", the environment variable HERD_CPU_ISA (same values) decides
  // if set. "avx512" needs AVX-512 F+BW+VL+VNNI; "avx2" needs AVX2+FMA+F16C. "scalar" is the
  // reference backend (always exact).
  std::string isa = "auto";
};

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& opts = {});

// One line for logs and `herd info`: what this CPU supports and what "auto" picks,
// e.g. "x86-64: avx512 (f+bw+vl+vnni) yes, avx2+fma yes; auto = avx512".
std::string cpu_backend_description();

// The ISA "auto" resolves to on this machine (ignoring HERD_CPU_ISA): "avx512", "avx2",
// "neon-dotprod", "neon" or "scalar".
std::string cpu_best_isa();

// Whether this CPU can run the named ISA's kernels ("scalar" is always true; unknown names false).
bool cpu_supports_isa(const std::string& isa);

}  // namespace herd
