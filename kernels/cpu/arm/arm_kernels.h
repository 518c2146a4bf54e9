// The table of Arm NEON kernels one instruction-set level provides: baseline ARMv8-A NEON
// (kernels_neon.cpp: 8-bit dots from vmull_s8 + pairwise adds) and ARMv8.2-A dotprod
// (kernels_neon_dotprod.cpp, compiled with -march=armv8.2-a+dotprod: vdotq_s32). Both fill the same
// table from the same .inc files; neon_backend.cpp (baseline code) picks one after asking the CPU
// (getauxval(AT_HWCAP) & HWCAP_ASIMDDP on Linux, sysctl on macOS).
//
// Same rule as kernels/cpu/x86/x86_kernels.h: the ISA units include only this header and
// <arm_neon.h>, keep everything in an anonymous namespace and take raw pointers, so no inline
// function or template compiled with +dotprod can be picked by the linker for baseline code.
#pragma once

#include <cstddef>
#include <cstdint>

namespace herd::arm {

// Activations quantized to 8 bits (layout as x86::Q8Act): one token row of `cols` values (a
// multiple of 32) is cols/32 blocks, x[i] ≈ d[b] * q[i]; s[] holds Σq per 16 consecutive values.
struct Q8Act {
  const int8_t* q = nullptr;   // [n_tokens, ldq]
  const float* d = nullptr;    // [n_tokens, ldd]   one scale per 32 values
  const int16_t* s = nullptr;  // [n_tokens, lds]   Σq per 16 values
  int64_t ldq = 0, ldd = 0, lds = 0;
};

// Plain copy of herd::AttentionShape (see backend.h for the meaning of each field).
struct AttnShape {
  int64_t n_tokens, n_heads, n_kv_heads, head_dim, n_kv;
};

// How quantize_act chooses its scales: q = round-to-nearest-even(x · 127 / amax) per group and
//   kActF32x32:  d = amax / 127 in f32 per 32 values;
//   kActF16x32:  d = f16(amax / 127) per 32 values (llama.cpp's Q8_0 activations);
//   kActF32x256: one amax per 256 values, d = amax / 127 in f32 copied to the 8 blocks (Q8_K).
enum ActScale : int { kActF32x32 = 0, kActF16x32 = 1, kActF32x256 = 2 };

struct Kernels {
  const char* name;  // "neon" / "neon-dotprod"

  // x[0..cols) -> one Q8Act row. cols % 32 == 0 (% 256 for kActF32x256).
  void (*quantize_act)(const float* x, int64_t cols, int8_t* q, float* d, int16_t* s, int scale_mode);

  // Fast path: y[t][r] for r in [r0, r1), t < n_tokens, weight type `type` (raw GGUF id) times the
  // quantized activations. Returns false (computing nothing) when the type has no fast kernel.
  bool (*matmul_q8)(uint32_t type, const uint8_t* w, size_t row_stride, int64_t cols, int64_t r0, int64_t r1,
                    const Q8Act& a, int64_t n_tokens, float* y, int64_t ldy);

  // Exact path, step 1: one weight row -> f32 exactly as dequantize_row would. Returns false when
  // there is no vector decoder for the type (the caller falls back to dequantize_row).
  bool (*dequant_row)(uint32_t type, const uint8_t* src, float* dst, int64_t n);

  // Exact path, step 2: y[t * ldy] = Σ_c w[c] * x[t * ldx + c], f32 FMA (vfmaq_f32) in a fixed order.
  void (*dot_f32_tokens)(const float* w, const float* x, int64_t cols, int64_t n_tokens, int64_t ldx, float* y,
                         int64_t ldy);

  // Attention for flattened (token, head) indices [begin, end); scratch holds n_kv floats.
  void (*attention)(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv, const AttnShape& s,
                    float scale, float* out, int64_t ldo, int64_t begin, int64_t end, float* scratch);

  void (*rmsnorm)(const float* x, const float* weight, int64_t dim, float eps, float* out);  // one row
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n);
  void (*add)(const float* a, const float* b, float* out, int64_t n);
};

const Kernels& kernels_neon();
const Kernels& kernels_neon_dotprod();

// Whether this CPU has the ARMv8.2 dot-product instructions (SDOT/UDOT).
bool cpu_has_dotprod();

}  // namespace herd::arm
