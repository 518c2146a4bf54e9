// Internal to the GGUF reader: the parsed form of a file, shared by gguf_parse.cpp (which fills
// it from untrusted bytes) and gguf.cpp (accessors and memory mapping). Not part of the API.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/gguf.h"

namespace herd::model {

// Bytes of one scalar of a GGUF value type; 0 for STRING/ARRAY/unknown.
size_t gguf_scalar_size(GgufType t);

struct GgufValue {
  GgufType type = GgufType::UINT8;
  uint64_t bits = 0;                // scalars: the little-endian bits, zero-extended to 64
  std::string str;                  // STRING
  GgufType elem_type = GgufType::UINT8;  // ARRAY: element type (never ARRAY: nested arrays are rejected)
  uint64_t count = 0;               // ARRAY: number of elements
  std::vector<uint8_t> raw;         // ARRAY of scalars: count * scalar_size bytes, little-endian as in the file
  std::vector<std::string> strs;    // ARRAY of STRING
};

struct GgufKv {
  std::string key;
  GgufValue value;
  uint64_t value_offset = 0;  // file offset of the value (after the type id), for error messages
};

// Heterogeneous lookup so find(std::string_view) does not allocate.
struct GgufStringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using GgufIndex = std::unordered_map<std::string, size_t, GgufStringHash, std::equal_to<>>;

// Kernels read tensor data as float / uint16_t arrays (quantized blocks byte by byte), so 4 bytes is
// the alignment they need.
inline constexpr uint64_t kTensorAlign = 4;

struct GgufMapping {
  void* addr = nullptr;
  size_t len = 0;
};

struct GgufFile::Impl {
  std::string path;
  int fd = -1;
  uint32_t version = 0;
  uint64_t file_size = 0;
  uint64_t alignment = 32;
  uint64_t data_offset = 0;  // may exceed file_size when the file has no tensors and no padding
  std::vector<GgufKv> kvs;   // in file order
  GgufIndex kv_index;        // key -> index in kvs
  std::vector<GgufTensorInfo> tensors;
  GgufIndex tensor_index;    // name -> index in tensors
  std::vector<const uint8_t*> tensor_ptr;  // [n_tensors] start of each tensor's bytes, null when unmapped
  std::vector<GgufMapping> mappings;
  // Tensors whose mapped bytes are not kTensorAlign-aligned (possible only when general.alignment is
  // under 4) are copied here, so kernels never read a misaligned float. Normal files copy nothing.
  struct AlignedFree {
    void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  std::vector<std::unique_ptr<uint8_t[], AlignedFree>> copies;
  uint64_t copied_bytes = 0;

  // Reads and validates header, metadata and tensor directory from `fd` (gguf_parse.cpp).
  void parse();
  const GgufKv* find_kv(std::string_view key) const;
  ~Impl();
};

}  // namespace herd::model
