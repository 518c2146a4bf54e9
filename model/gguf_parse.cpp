// GGUF header parsing. Every byte comes from an untrusted file: each read is checked against the
// file size first, each count is checked against the bytes that remain before anything is
// allocated, and each violation throws GgufError("<path>: <field> at offset N: <what>").
//
// Layout (little-endian; GGUF spec v2/v3, v2 and v3 are identical on little-endian hosts):
//   "GGUF" u32 version u64 tensor_count u64 metadata_kv_count
//   kv[metadata_kv_count]:  string key, u32 value_type, value
//   tensor_info[tensor_count]: string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset
//   padding to `general.alignment` (u32, default 32), then the data section.
// string = u64 length + bytes; array = u32 element type + u64 count + elements.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "model/gguf_internal.h"

namespace herd::model {
namespace {

// Smallest encodings, used to refuse counts that cannot fit in the remaining bytes.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;              // empty key, type, one u8
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // empty name, n_dims, one dim, type, offset
constexpr uint64_t kMinStringBytes = 8;                  // the length prefix
// Metadata plus tensor directory above this is refused: real headers are at most a few tens of
// MB (a 256k-token vocabulary); this bounds what a corrupt count in a 40 GB file can make us
// allocate (worst case: 32M empty strings, ~1 GB of std::string).
constexpr uint64_t kMaxHeaderBytes = 256ull << 20;
constexpr uint64_t kMaxKeyBytes = 65535;  // spec: keys are at most 2^16-1 bytes
constexpr uint32_t kMaxDims = 4;

// ggml type names for a clearer message when a file uses a type herd does not support.
std::string ggml_type_label(uint32_t raw) {
  static constexpr std::string_view kNames[] = {
      "f32",   "f16",    "q4_0",    "q4_1",    "",      "",      "q5_0",    "q5_1",   "q8_0",  "q8_1",
      "q2_K",  "q3_K",   "q4_K",    "q5_K",    "q6_K",  "q8_K",  "iq2_xxs", "iq2_xs", "iq3_xxs",
      "iq1_s", "iq4_nl", "iq3_s",   "iq2_s",   "iq4_xs", "i8",   "i16",     "i32",    "i64",   "f64",
      "iq1_m", "bf16",   "",        "",        "",      "tq1_0", "tq2_0",   "",       "",      "",
      "mxfp4"};
  std::string s = std::to_string(raw);
  if (raw < std::size(kNames) && !kNames[raw].empty()) s += " (" + std::string(kNames[raw]) + ")";
  return s;
}

// Buffered, bounds-checked sequential reader over a file descriptor.
class Reader {
 public:
  Reader(int fd, uint64_t size, const std::string& path) : fd_(fd), size_(size), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& field, uint64_t at, const std::string& what) const {
    throw GgufError(path_ + ": " + field + " at offset " + std::to_string(at) + ": " + what);
  }

  // Throws unless `n` more bytes exist and the header stays under kMaxHeaderBytes.
  void need(uint64_t n, const std::string& field) const {
    if (n > remaining())
      fail(field, pos_, "needs " + std::to_string(n) + " bytes but only " + std::to_string(remaining()) +
                            " remain (file is " + std::to_string(size_) + " bytes; truncated?)");
    if (pos_ + n > kMaxHeaderBytes)
      fail(field, pos_, "header larger than " + std::to_string(kMaxHeaderBytes) + " bytes; refusing");
  }

  void read(void* dst, uint64_t n, const std::string& field) {
    need(n, field);
    auto* out = static_cast<uint8_t*>(dst);
    while (n > 0) {
      if (pos_ < buf_start_ || pos_ >= buf_start_ + buf_len_) fill(field);
      uint64_t in_buf = buf_start_ + buf_len_ - pos_;
      uint64_t k = std::min(n, in_buf);
      std::memcpy(out, buf_.data() + (pos_ - buf_start_), k);
      out += k;
      pos_ += k;
      n -= k;
    }
  }

  template <typename T>
  T read_le(const std::string& field) {
    uint8_t b[sizeof(T)];
    read(b, sizeof(T), field);
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) v |= uint64_t(b[i]) << (8 * i);
    return static_cast<T>(v);
  }

  // u64 length + bytes. `field` names the string; messages say "<field> length".
  std::string read_string(const std::string& field, uint64_t max_len = UINT64_MAX) {
    uint64_t at = pos_;
    uint64_t len = read_le<uint64_t>(field + " length");
    if (len > max_len) fail(field + " length", at, "length " + std::to_string(len) + " exceeds " + std::to_string(max_len));
    if (len > remaining())
      fail(field + " length", at,
           "length " + std::to_string(len) + " exceeds the " + std::to_string(remaining()) + " bytes left in the file");
    std::string s(len, '\0');
    read(s.data(), len, field);
    return s;
  }

 private:
  void fill(const std::string& field) {
    if (buf_.empty()) buf_.resize(static_cast<size_t>(std::min<uint64_t>(uint64_t{1} << 20, size_)));  // small files: small buffer
    uint64_t want = std::min<uint64_t>(buf_.size(), size_ - pos_);
    uint64_t got = 0;
    while (got < want) {
      ssize_t r = ::pread(fd_, buf_.data() + got, want - got, static_cast<off_t>(pos_ + got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fail(field, pos_ + got, std::string("read failed: ") + std::strerror(errno));
      if (r == 0) fail(field, pos_ + got, "unexpected end of file (file shrank while reading?)");
      got += static_cast<uint64_t>(r);
    }
    buf_start_ = pos_;
    buf_len_ = got;
  }

  int fd_;
  uint64_t size_;
  const std::string& path_;
  uint64_t pos_ = 0;
  std::vector<uint8_t> buf_;
  uint64_t buf_start_ = 0, buf_len_ = 0;
};

bool valid_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::FLOAT64); }

void check_bools(Reader& r, const uint8_t* p, uint64_t n, uint64_t at, const std::string& field) {
  for (uint64_t i = 0; i < n; ++i)
    if (p[i] > 1) r.fail(field, at + i, "bool must be 0 or 1, got " + std::to_string(p[i]));
}

// Reads one value of type `type` (already validated). `field` prefixes messages.
GgufValue read_value(Reader& r, GgufType type, const std::string& field) {
  GgufValue v;
  v.type = type;
  if (type == GgufType::STRING) {
    v.str = r.read_string(field + " string");
  } else if (type != GgufType::ARRAY) {
    uint64_t at = r.pos();
    size_t n = gguf_scalar_size(type);
    uint8_t b[8] = {};
    r.read(b, n, field + " value");
    for (size_t i = 0; i < n; ++i) v.bits |= uint64_t(b[i]) << (8 * i);
    if (type == GgufType::BOOL) check_bools(r, b, 1, at, field + " value");
  } else {
    uint64_t at = r.pos();
    uint32_t et = r.read_le<uint32_t>(field + " array element type");
    if (!valid_value_type(et)) r.fail(field + " array element type", at, "unknown value type " + std::to_string(et));
    // Nested arrays (array of arrays) are rejected: no model metadata uses them and a
    // recursive format would need a depth limit for no benefit.
    if (et == static_cast<uint32_t>(GgufType::ARRAY))
      r.fail(field + " array element type", at, "nested arrays (array of arrays) are not supported");
    v.elem_type = static_cast<GgufType>(et);
    at = r.pos();
    v.count = r.read_le<uint64_t>(field + " array count");
    if (v.elem_type == GgufType::STRING) {
      if (v.count > r.remaining() / kMinStringBytes)
        r.fail(field + " array count", at,
               std::to_string(v.count) + " strings cannot fit in the " + std::to_string(r.remaining()) + " bytes left");
      // Grow as strings are actually read: memory stays proportional to bytes consumed.
      v.strs.reserve(std::min<uint64_t>(v.count, 1 << 16));
      for (uint64_t i = 0; i < v.count; ++i)
        v.strs.push_back(r.read_string(field + " element " + std::to_string(i) + " string"));
    } else {
      size_t es = gguf_scalar_size(v.elem_type);
      if (v.count > r.remaining() / es)
        r.fail(field + " array count", at,
               std::to_string(v.count) + " elements of " + std::to_string(es) + " bytes cannot fit in the " +
                   std::to_string(r.remaining()) + " bytes left");
      uint64_t data_at = r.pos();
      r.need(v.count * es, field + " array data");
      v.raw.resize(v.count * es);
      r.read(v.raw.data(), v.raw.size(), field + " array data");
      if (v.elem_type == GgufType::BOOL) check_bools(r, v.raw.data(), v.count, data_at, field + " array data");
    }
  }
  return v;
}

}  // namespace

size_t gguf_scalar_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: return 8;
    default: return 0;
  }
}

void GgufFile::Impl::parse() {
  Reader r(fd, file_size, path);

  // ---- header ----
  char magic[4];
  r.read(magic, 4, "magic");
  if (std::memcmp(magic, "GGUF", 4) != 0) {
    if (std::memcmp(magic, "FUGG", 4) == 0) r.fail("magic", 0, "byte-swapped magic: big-endian GGUF files are not supported");
    // No bytes of the file in the message: a worker's errors go to a peer, and the first bytes of
    // an arbitrary file (e.g. "root" of /etc/shadow) are its contents.
    r.fail("magic", 0, "not a GGUF file (it does not start with \"GGUF\")");
  }
  version = r.read_le<uint32_t>("version");
  if (version == 1) r.fail("version", 4, "GGUF v1 (32-bit counts) is not supported; re-convert the model to v3");
  if (version == 0x02000000u || version == 0x03000000u)
    r.fail("version", 4, "byte-swapped version number: big-endian GGUF files are not supported");
  if (version != 2 && version != 3)
    r.fail("version", 4, "unsupported GGUF version " + std::to_string(version) + " (herd reads 2 and 3)");

  uint64_t n_tensors = r.read_le<uint64_t>("tensor_count");
  uint64_t n_kv = r.read_le<uint64_t>("metadata_kv_count");
  // Both counts must fit in what is left of the file (and of the header size limit) at their
  // smallest encoding, so a corrupt count fails here rather than after reading megabytes.
  const uint64_t budget = std::min(r.remaining(), kMaxHeaderBytes - r.pos());
  if (n_kv > budget / kMinKvBytes)
    r.fail("metadata_kv_count", 16, std::to_string(n_kv) + " key/value pairs cannot fit in the " +
                                        std::to_string(budget) + " bytes left for the header");
  if (n_tensors > (budget - n_kv * kMinKvBytes) / kMinTensorInfoBytes)
    r.fail("tensor_count", 8, std::to_string(n_tensors) + " tensor infos cannot fit in the " +
                                  std::to_string(budget) + " bytes left for the header after the metadata");

  // ---- metadata ----
  kvs.reserve(std::min<uint64_t>(n_kv, 4096));  // then grow with what is actually read
  size_t alignment_kv = SIZE_MAX;
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string field = "metadata key #" + std::to_string(i);
    uint64_t key_at = r.pos();
    GgufKv kv;
    kv.key = r.read_string(field + " key", kMaxKeyBytes);
    if (kv.key.empty()) r.fail(field + " key", key_at, "empty key");
    field += " '" + kv.key + "'";
    if (auto it = kv_index.find(kv.key); it != kv_index.end())
      r.fail(field, key_at, "duplicate key (first seen as key #" + std::to_string(it->second) + ")");
    uint64_t type_at = r.pos();
    uint32_t type = r.read_le<uint32_t>(field + " value type");
    if (!valid_value_type(type)) r.fail(field + " value type", type_at, "unknown value type " + std::to_string(type));
    kv.value_offset = r.pos();
    kv.value = read_value(r, static_cast<GgufType>(type), field);
    kv_index.emplace(kv.key, kvs.size());
    kvs.push_back(std::move(kv));
    if (kvs.back().key == "general.alignment") alignment_kv = kvs.size() - 1;
  }
  if (alignment_kv != SIZE_MAX) {
    const GgufKv& kv = kvs[alignment_kv];
    std::string field = "metadata '" + kv.key + "'";
    if (kv.value.type != GgufType::UINT32)
      r.fail(field, kv.value_offset, "must be u32, found " + std::string(gguf_type_name(kv.value.type)));
    uint64_t a = kv.value.bits;
    if (a == 0 || (a & (a - 1)) != 0) r.fail(field, kv.value_offset, "alignment " + std::to_string(a) + " is not a nonzero power of two");
    alignment = a;
  }

  // ---- tensor directory ----
  tensors.reserve(std::min<uint64_t>(n_tensors, 4096));  // then grow with what is actually read
  std::vector<uint64_t> offset_field_at;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    std::string field = "tensor #" + std::to_string(i);
    uint64_t name_at = r.pos();
    GgufTensorInfo t;
    t.name = r.read_string(field + " name");
    field = "tensor '" + t.name + "'";
    if (auto it = tensor_index.find(t.name); it != tensor_index.end())
      r.fail(field + " name", name_at, "duplicate tensor name (first seen as tensor #" + std::to_string(it->second) + ")");
    uint64_t at = r.pos();
    uint32_t n_dims = r.read_le<uint32_t>(field + " n_dims");
    if (n_dims < 1 || n_dims > kMaxDims)
      r.fail(field + " n_dims", at, std::to_string(n_dims) + " dimensions (herd supports 1 to " + std::to_string(kMaxDims) + ")");
    uint64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      std::string dfield = field + " dimension " + std::to_string(d);
      at = r.pos();
      uint64_t ne = r.read_le<uint64_t>(dfield);
      if (ne == 0 || ne > static_cast<uint64_t>(INT64_MAX))
        r.fail(dfield, at, "size " + std::to_string(ne) + (ne == 0 ? " is zero" : " is negative as int64"));
      if (__builtin_mul_overflow(n_elements, ne, &n_elements) || n_elements > static_cast<uint64_t>(INT64_MAX))
        r.fail(dfield, at, "product of the dimensions overflows int64");
      t.ne.push_back(static_cast<int64_t>(ne));
    }
    at = r.pos();
    uint32_t raw_type = r.read_le<uint32_t>(field + " type");
    auto tr = dtype_traits(raw_type);
    if (!tr) r.fail(field + " type", at, "unsupported or unknown ggml type " + ggml_type_label(raw_type));
    t.type = tr->type;
    if (t.ne[0] % tr->block_size != 0)
      r.fail(field + " dimension 0", at - 8 * n_dims,
             "ne[0] = " + std::to_string(t.ne[0]) + " is not a multiple of the " + std::string(tr->name) +
                 " block size " + std::to_string(tr->block_size));
    uint64_t n_blocks = n_elements / static_cast<uint64_t>(tr->block_size);
    if (__builtin_mul_overflow(n_blocks, static_cast<uint64_t>(tr->block_bytes), &t.n_bytes))
      r.fail(field + " dimensions", at - 8 * n_dims, "byte size overflows uint64");
    offset_field_at.push_back(r.pos());
    t.offset = r.read_le<uint64_t>(field + " offset");
    tensor_index.emplace(t.name, tensors.size());
    tensors.push_back(std::move(t));
  }

  // ---- data section ----
  uint64_t header_end = r.pos();
  data_offset = (header_end + alignment - 1) / alignment * alignment;  // no overflow: header_end < 2^28, alignment < 2^32
  uint64_t data_size = data_offset <= file_size ? file_size - data_offset : 0;
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const GgufTensorInfo& t = tensors[i];
    std::string field = "tensor '" + t.name + "' offset";
    if (t.offset % alignment != 0)
      r.fail(field, offset_field_at[i],
             "offset " + std::to_string(t.offset) + " is not a multiple of the alignment " + std::to_string(alignment));
    if (t.offset > data_size || t.n_bytes > data_size - t.offset)
      r.fail(field, offset_field_at[i],
             "data [" + std::to_string(t.offset) + ", +" + std::to_string(t.n_bytes) + ") runs past the end of the " +
                 std::to_string(data_size) + "-byte data section (file truncated?)");
    order[i] = i;
  }
  // Overlapping tensors are never written by a correct producer; refuse them.
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return tensors[a].offset < tensors[b].offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const GgufTensorInfo& prev = tensors[order[k - 1]];
    const GgufTensorInfo& cur = tensors[order[k]];
    if (cur.offset < prev.offset + prev.n_bytes)
      r.fail("tensor '" + cur.name + "' offset", offset_field_at[order[k]],
             "data overlaps tensor '" + prev.name + "'");
  }
}

}  // namespace herd::model
