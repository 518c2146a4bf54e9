// GGUF v3 writer: metadata of every GGUF type, tensors whose bytes come from a buffer or from a
// callback run while writing (so a multi-GB synthetic model never sits in memory whole), data
// aligned to `general.alignment` (default 32) with zero padding. Tests use to_bytes() and the
// returned Layout to corrupt one field at a known byte offset.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "model/gguf.h"

namespace herd::model {

class GgufWriter {
 public:
  // Fills dst[0, n_bytes) with the whole tensor; called once per tensor, in file order.
  using Filler = std::function<void(uint8_t* dst, size_t n_bytes)>;

  // File offsets of every field of the last file written, for tests that corrupt one of them.
  struct Layout {
    struct Kv {
      std::string key;
      uint64_t key_len = 0;  // the key's u64 length prefix
      uint64_t type = 0;     // u32 value type id
      uint64_t value = 0;    // value (arrays: u32 element type, then u64 count, then elements)
    };
    struct Tensor {
      std::string name;
      uint64_t name_len = 0, n_dims = 0, dims = 0, type = 0, offset = 0;  // fields of the tensor info
      uint64_t data = 0;  // file offset of the tensor's bytes
    };
    uint64_t version = 4, tensor_count = 8, kv_count = 16;
    std::vector<Kv> kvs;
    std::vector<Tensor> tensors;
    uint64_t header_end = 0;   // end of the tensor directory
    uint64_t data_offset = 0;  // start of the data section
    uint64_t file_size = 0;
  };

  // ---- metadata: setting an existing key replaces its value, keeping its position ----
  void set_u8(const std::string& key, uint8_t v) { set_scalar(key, GgufType::UINT8, v); }
  void set_i8(const std::string& key, int8_t v) { set_scalar(key, GgufType::INT8, v); }
  void set_u16(const std::string& key, uint16_t v) { set_scalar(key, GgufType::UINT16, v); }
  void set_i16(const std::string& key, int16_t v) { set_scalar(key, GgufType::INT16, v); }
  void set_u32(const std::string& key, uint32_t v) { set_scalar(key, GgufType::UINT32, v); }
  void set_i32(const std::string& key, int32_t v) { set_scalar(key, GgufType::INT32, v); }
  void set_u64(const std::string& key, uint64_t v) { set_scalar(key, GgufType::UINT64, v); }
  void set_i64(const std::string& key, int64_t v) { set_scalar(key, GgufType::INT64, v); }
  void set_f32(const std::string& key, float v) { set_scalar(key, GgufType::FLOAT32, v); }
  void set_f64(const std::string& key, double v) { set_scalar(key, GgufType::FLOAT64, v); }
  void set_bool(const std::string& key, bool v) { set_scalar(key, GgufType::BOOL, uint8_t(v ? 1 : 0)); }
  void set_string(const std::string& key, const std::string& v);
  // Arrays of scalars: T is one of uint8_t..int64_t, float, double (bool: set_bool_array).
  template <typename T>
  void set_array(const std::string& key, const std::vector<T>& v);
  void set_bool_array(const std::string& key, const std::vector<bool>& v);
  void set_string_array(const std::string& key, const std::vector<std::string>& v);
  // general.alignment (u32); must be a nonzero power of two.
  void set_alignment(uint32_t alignment);
  // Escape hatch for tests: writes `type_id` and `value` bytes verbatim, no validation; the
  // writer never interprets raw entries (a raw general.alignment does not change the layout).
  void set_raw(const std::string& key, uint32_t type_id, std::vector<uint8_t> value);

  // ---- tensors (ne[0] fastest-varying, 1..4 dims, ne[0] a multiple of the block size) ----
  void add_tensor(const std::string& name, std::vector<int64_t> ne, DType type, std::vector<uint8_t> data);
  void add_tensor_filled(const std::string& name, std::vector<int64_t> ne, DType type, Filler fill);
  // Exact byte size of a tensor of this shape and type; throws GgufError on an invalid shape.
  static uint64_t tensor_n_bytes(const std::vector<int64_t>& ne, DType type);

  // Version written in the header (2 or 3; default 3). v2 has the same little-endian layout.
  void set_version(uint32_t v) { version_ = v; }

  // Writes the file (GgufError on I/O failure) and returns where each field landed.
  Layout write(const std::string& path) const;
  // The whole file in memory (tests); `layout` receives the field offsets when non-null.
  std::vector<uint8_t> to_bytes(Layout* layout = nullptr) const;

 private:
  struct Entry {
    std::string key;
    uint32_t type_id;
    std::vector<uint8_t> value;  // encoded value bytes
    bool raw = false;
  };
  struct Tensor {
    std::string name;
    std::vector<int64_t> ne;
    DType type;
    uint64_t n_bytes;
    std::vector<uint8_t> data;  // used when !fill
    Filler fill;
  };
  template <typename T>
  static void put(std::vector<uint8_t>& out, T v) {
    std::make_unsigned_t<std::conditional_t<std::is_floating_point_v<T>,
                                            std::conditional_t<sizeof(T) == 4, int32_t, int64_t>, T>> bits;
    static_assert(sizeof(bits) == sizeof(T));
    std::memcpy(&bits, &v, sizeof(T));
    for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<uint8_t>(bits >> (8 * i)));
  }
  template <typename T>
  static constexpr GgufType type_for() {
    if constexpr (std::is_same_v<T, uint8_t>) return GgufType::UINT8;
    else if constexpr (std::is_same_v<T, int8_t>) return GgufType::INT8;
    else if constexpr (std::is_same_v<T, uint16_t>) return GgufType::UINT16;
    else if constexpr (std::is_same_v<T, int16_t>) return GgufType::INT16;
    else if constexpr (std::is_same_v<T, uint32_t>) return GgufType::UINT32;
    else if constexpr (std::is_same_v<T, int32_t>) return GgufType::INT32;
    else if constexpr (std::is_same_v<T, uint64_t>) return GgufType::UINT64;
    else if constexpr (std::is_same_v<T, int64_t>) return GgufType::INT64;
    else if constexpr (std::is_same_v<T, float>) return GgufType::FLOAT32;
    else if constexpr (std::is_same_v<T, double>) return GgufType::FLOAT64;
    else static_assert(sizeof(T) == 0, "GGUF arrays hold u8..i64, f32, f64 (bool: set_bool_array)");
  }
  template <typename T>
  void set_scalar(const std::string& key, GgufType t, T v) {
    std::vector<uint8_t> b;
    put(b, v);
    set_entry(key, static_cast<uint32_t>(t), std::move(b), false);
  }
  void set_entry(const std::string& key, uint32_t type_id, std::vector<uint8_t> value, bool raw);
  void add(Tensor t);
  uint64_t alignment() const;
  template <typename Sink>
  Layout emit(Sink& sink) const;

  uint32_t version_ = 3;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> entry_index_;
  std::vector<Tensor> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

template <typename T>
void GgufWriter::set_array(const std::string& key, const std::vector<T>& v) {
  std::vector<uint8_t> b;
  put(b, static_cast<uint32_t>(type_for<T>()));
  put(b, static_cast<uint64_t>(v.size()));
  for (T x : v) put(b, x);
  set_entry(key, static_cast<uint32_t>(GgufType::ARRAY), std::move(b), false);
}

}  // namespace herd::model
