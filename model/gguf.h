// GGUF reader (versions 2 and 3). The header, metadata and tensor directory are read with
// bounds checks against the file size: every count, string length, array size, tensor offset,
// extent and alignment is validated, and any violation raises GgufError naming the field and
// the byte offset. Tensor data is memory-mapped: either the whole data section, or (for a
// worker that holds one shard) just the page ranges of the tensors it asks for.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kernels/dtype.h"

namespace herd::model {

class GgufError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// GGUF metadata value types (ids as in the GGUF spec).
enum class GgufType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
std::string_view gguf_type_name(GgufType t);

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // dimensions, ne[0] fastest-varying (a row of a matrix has ne[0] values)
  DType type = DType::F32;
  uint64_t offset = 0;      // relative to the start of the data section (validated: aligned, in bounds)
  uint64_t n_bytes = 0;     // exact size of the data
  int64_t n_elements() const;
};

struct GgufOpenOptions {
  // Map the whole data section at open (lazy: pages are read when touched). When false, call
  // map_tensors() with the names you need; tensor_data() of anything else throws.
  bool map_all = true;
};

class GgufFile {
 public:
  // Throws GgufError ("<path>: <field> at offset N: <what is wrong>") on any malformed input,
  // std::system_error-style GgufError when the file cannot be opened.
  static std::unique_ptr<GgufFile> open(const std::string& path, const GgufOpenOptions& opts = {});
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const;
  uint32_t version() const;
  uint64_t file_size() const;
  uint64_t alignment() const;    // general.alignment or 32
  uint64_t data_offset() const;  // file offset of the data section

  // ---- metadata ----
  bool has(std::string_view key) const;
  std::optional<GgufType> type_of(std::string_view key) const;
  std::optional<GgufType> array_type_of(std::string_view key) const;  // element type when an array
  std::vector<std::string> keys() const;  // in file order

  // Typed getters: nullopt when the key is absent; GgufError when present with an incompatible type.
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<int64_t> get_int(std::string_view key) const;   // any integer type; u64 > INT64_MAX throws
  std::optional<double> get_float(std::string_view key) const;  // f32/f64, or any integer type
  std::optional<bool> get_bool(std::string_view key) const;
  // Arrays: nullopt when absent; GgufError when not an array of a compatible element type.
  std::optional<std::vector<std::string>> get_string_array(std::string_view key) const;
  std::optional<std::vector<float>> get_float_array(std::string_view key) const;   // f32/f64 elements
  std::optional<std::vector<int64_t>> get_int_array(std::string_view key) const;   // integer elements
  std::optional<uint64_t> array_size(std::string_view key) const;
  // Human-readable rendering for `herd info` (arrays abbreviated after max_elems elements).
  std::string value_to_string(std::string_view key, size_t max_elems = 8) const;

  // ---- tensors ----
  const std::vector<GgufTensorInfo>& tensors() const;
  const GgufTensorInfo* find_tensor(std::string_view name) const;  // null when absent
  // Maps the byte ranges of the named tensors (page-aligned); unknown names throw GgufError.
  void map_tensors(const std::vector<std::string>& names);
  // Pointer to the tensor's bytes; GgufError when that tensor is not mapped.
  const void* tensor_data(const GgufTensorInfo& t) const;
  const void* tensor_data(std::string_view name) const;
  uint64_t mapped_bytes() const;  // bytes currently mapped (whole section or the sum of ranges)

 private:
  GgufFile();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace herd::model
