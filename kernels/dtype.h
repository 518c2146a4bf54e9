// Tensor storage types. Numeric values are the GGML/GGUF type ids so a GGUF tensor header
// maps straight onto DType. Block layouts (bytes per block of `block_size` values):
//   F32 4/1, F16 2/1, BF16 2/1,
//   Q4_0 {f16 d; u8 qs[16]} 18/32          Q4_1 {f16 d, m; u8 qs[16]} 20/32
//   Q5_0 {f16 d; u8 qh[4]; u8 qs[16]} 22/32  Q5_1 {f16 d, m; u8 qh[4]; u8 qs[16]} 24/32
//   Q8_0 {f16 d; i8 qs[32]} 34/32
//   Q2_K {u8 scales[16]; u8 qs[64]; f16 d, dmin} 84/256
//   Q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d} 110/256
//   Q4_K {f16 d, dmin; u8 scales[12]; u8 qs[128]} 144/256
//   Q5_K {f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]} 176/256
//   Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d} 210/256
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace herd {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30,
};

struct DTypeTraits {
  DType type;
  std::string_view name;  // as llama.cpp prints it: "f32", "q4_K", ...
  int64_t block_size;     // values per block
  size_t block_bytes;     // bytes per block
};

// Every type herd can store; the order is the order `herd info` lists them.
inline constexpr DTypeTraits kDTypes[] = {
    {DType::F32, "f32", 1, 4},       {DType::F16, "f16", 1, 2},       {DType::BF16, "bf16", 1, 2},
    {DType::Q4_0, "q4_0", 32, 18},   {DType::Q4_1, "q4_1", 32, 20},   {DType::Q5_0, "q5_0", 32, 22},
    {DType::Q5_1, "q5_1", 32, 24},   {DType::Q8_0, "q8_0", 32, 34},   {DType::Q2_K, "q2_K", 256, 84},
    {DType::Q3_K, "q3_K", 256, 110}, {DType::Q4_K, "q4_K", 256, 144}, {DType::Q5_K, "q5_K", 256, 176},
    {DType::Q6_K, "q6_K", 256, 210},
};

// Traits for a raw GGUF type id; nullopt when herd does not support it.
constexpr std::optional<DTypeTraits> dtype_traits(uint32_t raw) {
  for (const auto& t : kDTypes)
    if (static_cast<uint32_t>(t.type) == raw) return t;
  return std::nullopt;
}

constexpr const DTypeTraits& traits(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d;
  return kDTypes[0];  // unreachable for valid enumerators
}

constexpr std::string_view dtype_name(DType t) { return traits(t).name; }
constexpr int64_t block_size(DType t) { return traits(t).block_size; }
constexpr size_t block_bytes(DType t) { return traits(t).block_bytes; }

// Bytes of one row of `n` values; `n` must be a multiple of block_size(t) (callers check).
constexpr size_t row_bytes(DType t, int64_t n) {
  return static_cast<size_t>(n / block_size(t)) * block_bytes(t);
}

// Parses "f32", "Q4_K", "q8_0" ... (case-insensitive); nullopt when unknown.
std::optional<DType> parse_dtype(std::string_view name);

}  // namespace herd
