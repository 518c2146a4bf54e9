// The kernel-table interface shared by the x86 (x86/x86_kernels.h: AVX2, AVX-512) and Arm
// (arm/arm_kernels.h: NEON, NEON dotprod) SIMD backends: the function-pointer table one
// instruction set fills, and the plain data it takes (8-bit activation blocks, attention shape).
// Each ISA translation unit is compiled with its own flags and fills one table; the rest of the
// binary is baseline code (KernelTableBackend in simd_driver.h) and only calls through these
// pointers after the CPU said it can run them.
//
// Why plain C-like types only: an inline function or template (std::vector, herd::block_size...)
// instantiated inside an ISA translation unit is a COMDAT symbol the linker may pick for the
// baseline code too, which would then fault on a CPU without that ISA. So the ISA units include
// this header (through their x86_kernels.h / arm_kernels.h) and the intrinsics header only, keep
// everything else in an anonymous namespace, and get buffers (allocated by the baseline backend)
// as raw pointers. Keep ISA-specific inline code out of this header (it belongs in the .inc files).
#pragma once

#include <cstddef>
#include <cstdint>

namespace herd::simd {

// Activations quantized to 8 bits, the form the fast matmul path multiplies with. One token row of
// `cols` values (cols a multiple of 32) is cols/32 blocks: x[i] ≈ d[b] * q[i] with
// d[b] = max|x in block b| / 127 kept in f32 (rounded to f16 or shared per 256 per ActScale).
// s[] holds the integer sum of every 16 consecutive q (the Q4_1/Q5_1 offsets, the Q6_K -32 and
// Q3_K -4 and the Q2_K/Q4_K/Q5_K min terms need Σq per 16 or 32 values).
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
//   kActF32x32:  d = amax / 127 in f32 per 32 values (most accurate);
//   kActF16x32:  d = f16(amax / 127) per 32 values (llama.cpp's Q8_0/Q8_1 activations);
//   kActF32x256: one amax per 256 values, d = amax / 127 in f32 copied to the 8 blocks (Q8_K).
enum ActScale : int { kActF32x32 = 0, kActF16x32 = 1, kActF32x256 = 2 };

// PackedWeights::layout of the x86 tables' 16-row interleaved layout (x86/matmul_packed.inc): rows
// in groups of kPackedRows, vector lane = output row, one group's blocks contiguous. Why: one
// integer dot instruction then serves 16 rows and the float work (conversion, scale product, FMA)
// is done once per block for 16 rows instead of once per row: prefill ~2x faster.
constexpr uint32_t kPackedR16 = 1;
constexpr int64_t kPackedRows = 16;

struct Kernels {
  const char* name;  // "avx2" / "avx512" / "neon" / "neon-dotprod"

  // x[0..cols) -> one Q8Act row (q + cols/32 scales + cols/16 sums). cols % 32 == 0 (% 256 for
  // kActF32x256). scale_mode is an ActScale.
  void (*quantize_act)(const float* x, int64_t cols, int8_t* q, float* d, int16_t* s, int scale_mode);

  // Fast path: y[t][r] for r in [r0, r1), t < n_tokens, of weight type `type` (raw GGUF id) times
  // the quantized activations. Returns false (computing nothing) when the type has no fast kernel.
  bool (*matmul_q8)(uint32_t type, const uint8_t* w, size_t row_stride, int64_t cols, int64_t r0, int64_t r1,
                    const Q8Act& a, int64_t n_tokens, float* y, int64_t ldy);

  // Exact path, step 1: one weight row -> f32 exactly as dequantize_row would (same formulas, no
  // contraction). Returns false when this ISA has no vector decoder for the type (caller falls back).
  bool (*dequant_row)(uint32_t type, const uint8_t* src, float* dst, int64_t n);

  // Exact path, step 2: y[t * ldy] = Σ_c w[c] * x[t * ldx + c] for t < n_tokens, f32 FMA in a fixed
  // order per table (x86: 4 × 8 lanes, then an 8-lane tail, then a scalar tail, then a fixed
  // reduction; Arm: vfmaq_f32).
  void (*dot_f32_tokens)(const float* w, const float* x, int64_t cols, int64_t n_tokens, int64_t ldx, float* y,
                         int64_t ldy);

  // Attention for flattened (token, head) indices [begin, end); scratch holds n_kv floats.
  void (*attention)(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv, const AttnShape& s,
                    float scale, float* out, int64_t ldo, int64_t begin, int64_t end, float* scratch);

  void (*rmsnorm)(const float* x, const float* weight, int64_t dim, float eps, float* out);  // one row
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n);
  void (*add)(const float* a, const float* b, float* out, int64_t n);

  // Optional (the x86 tables; null in the Arm ones, which keep the row layout): the kPackedR16
  // layout, for the types whose fast path runs on it (x86: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K,
  // Q5_K, Q6_K; matmul_q8 no longer has them). Those types always take it, so their bits do not depend on whether a matrix was
  // prepared: the driver repacks a tile on the fly when it was not.
  //   packed_bytes: bytes of the layout for a rows × cols matrix of `type`; 0 = the type has none.
  //   repack: rows [0, rows) of the row-major matrix w -> ceil(rows / 16) groups at dst (the last
  //     padded with zero rows).
  //   matmul_packed: as matmul_q8 for rows [r0, r1) (r0 % kPackedRows == 0) of a packed matrix of
  //     `rows` rows (y row r at y[t * ldy + r]); false when the type has no packed kernel.
  //   unpack_row: row r of a packed matrix back to its GGUF bytes (row_bytes(type, cols) at dst,
  //     exactly the source row): get_rows of a tied embedding whose file pages were dropped.
  size_t (*packed_bytes)(uint32_t type, int64_t rows, int64_t cols);
  void (*repack)(uint32_t type, const uint8_t* w, size_t row_stride, int64_t rows, int64_t cols, uint8_t* dst);
  bool (*matmul_packed)(uint32_t type, const uint8_t* p, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                        const Q8Act& a, int64_t n_tokens, float* y, int64_t ldy);
  void (*unpack_row)(uint32_t type, const uint8_t* p, int64_t cols, int64_t r, uint8_t* dst);

  // Optional (x86; null in the Arm tables, where F16 KV rows are converted first): attention
  // reading an F16 KV cache in place, the same bits as `attention` over the rows converted to f32
  // (ldkv in elements), and the f32 -> f16 row store of the KV write (round to nearest even).
  void (*attention_f16)(const float* q, int64_t ldq, const uint16_t* k, const uint16_t* v, int64_t ldkv,
                        const AttnShape& s, float scale, float* out, int64_t ldo, int64_t begin, int64_t end,
                        float* scratch);
  void (*store_f16)(const float* x, uint16_t* dst, int64_t n);
};

}  // namespace herd::simd
