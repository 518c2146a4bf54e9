// GgufFile: opening, typed metadata access and memory mapping of tensor data. Parsing and
// validation of the header live in gguf_parse.cpp. Not thread-safe while map_tensors() runs;
// const accessors may be used concurrently.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <sstream>

#include "model/gguf_internal.h"
#include "common/file_io.h"

namespace herd::model {

std::string_view gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::UINT8: return "u8";
    case GgufType::INT8: return "i8";
    case GgufType::UINT16: return "u16";
    case GgufType::INT16: return "i16";
    case GgufType::UINT32: return "u32";
    case GgufType::INT32: return "i32";
    case GgufType::FLOAT32: return "f32";
    case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "string";
    case GgufType::ARRAY: return "array";
    case GgufType::UINT64: return "u64";
    case GgufType::INT64: return "i64";
    case GgufType::FLOAT64: return "f64";
  }
  return "unknown";
}

int64_t GgufTensorInfo::n_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;  // validated at parse time not to overflow
  return n;
}

namespace {

bool is_integer(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::UINT16: case GgufType::INT16:
    case GgufType::UINT32: case GgufType::INT32: case GgufType::UINT64: case GgufType::INT64: return true;
    default: return false;
  }
}
bool is_float(GgufType t) { return t == GgufType::FLOAT32 || t == GgufType::FLOAT64; }

// Sign-extends the zero-extended little-endian bits of an integer scalar.
int64_t int_of(GgufType t, uint64_t bits) {
  switch (t) {
    case GgufType::INT8: return static_cast<int8_t>(bits);
    case GgufType::INT16: return static_cast<int16_t>(bits);
    case GgufType::INT32: return static_cast<int32_t>(bits);
    case GgufType::INT64: return static_cast<int64_t>(bits);
    default: return static_cast<int64_t>(bits);  // unsigned; u64 range checked by callers
  }
}
double float_of(GgufType t, uint64_t bits) {
  if (t == GgufType::FLOAT32) {
    uint32_t b = static_cast<uint32_t>(bits);
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  }
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}
// Element i of a scalar array, as zero-extended bits.
uint64_t elem_bits(const GgufValue& v, uint64_t i) {
  size_t es = gguf_scalar_size(v.elem_type);
  uint64_t bits = 0;
  for (size_t k = 0; k < es; ++k) bits |= uint64_t(v.raw[i * es + k]) << (8 * k);
  return bits;
}

[[noreturn]] void type_error(const std::string& path, const GgufKv& kv, const std::string& wanted) {
  std::string found(gguf_type_name(kv.value.type));
  if (kv.value.type == GgufType::ARRAY) found += " of " + std::string(gguf_type_name(kv.value.elem_type));
  throw GgufError(path + ": metadata '" + kv.key + "' is " + found + ", not " + wanted);
}

int64_t checked_int(const std::string& path, const GgufKv& kv, GgufType t, uint64_t bits) {
  if (t == GgufType::UINT64 && bits > static_cast<uint64_t>(INT64_MAX))
    throw GgufError(path + ": metadata '" + kv.key + "' value " + std::to_string(bits) + " does not fit in int64");
  return int_of(t, bits);
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else out += c;
  }
  return out + "\"";
}

std::string scalar_to_string(GgufType t, uint64_t bits) {
  if (t == GgufType::BOOL) return bits ? "true" : "false";
  if (is_float(t)) {
    std::ostringstream os;
    os.precision(t == GgufType::FLOAT32 ? 9 : 17);
    os << float_of(t, bits);
    return os.str();
  }
  if (t == GgufType::UINT64) return std::to_string(bits);
  return std::to_string(int_of(t, bits));
}

}  // namespace

// ---- lifetime ----

GgufFile::Impl::~Impl() {
  for (auto& m : mappings) ::munmap(m.addr, m.len);
  if (fd >= 0) ::close(fd);
}

const GgufKv* GgufFile::Impl::find_kv(std::string_view key) const {
  auto it = kv_index.find(key);
  return it == kv_index.end() ? nullptr : &kvs[it->second];
}

GgufFile::GgufFile() : impl_(std::make_unique<Impl>()) {}
GgufFile::~GgufFile() = default;

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path, const GgufOpenOptions& opts) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  Impl& m = *f->impl_;
  m.path = path;
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. It changes nothing for
  // a regular file, and anything else is refused before a byte is read.
  m.fd = open_waiting(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (m.fd < 0) throw GgufError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(m.fd, &st) != 0) throw GgufError(path + ": cannot stat: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) {
    const char* what = S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISDIR(st.st_mode) ? "a directory"
                       : S_ISCHR(st.st_mode) ? "a character device" : S_ISBLK(st.st_mode) ? "a block device"
                       : S_ISSOCK(st.st_mode) ? "a socket" : "a special file";
    throw GgufError(path + ": is " + std::string(what) + ", not a regular GGUF file");
  }
  m.file_size = static_cast<uint64_t>(st.st_size);
  try {
    m.parse();
  } catch (const std::bad_alloc&) {  // counts are bounded before allocating; this is a last resort
    throw GgufError(path + ": out of memory while reading the GGUF header");
  }
  m.tensor_ptr.assign(m.tensors.size(), nullptr);
  if (opts.map_all) {
    std::vector<std::string> all;
    all.reserve(m.tensors.size());
    for (const auto& t : m.tensors) all.push_back(t.name);
    f->map_tensors(all);
  }
  return f;
}

const std::string& GgufFile::path() const { return impl_->path; }
uint32_t GgufFile::version() const { return impl_->version; }
uint64_t GgufFile::file_size() const { return impl_->file_size; }
uint64_t GgufFile::alignment() const { return impl_->alignment; }
uint64_t GgufFile::data_offset() const { return impl_->data_offset; }

// ---- metadata ----

bool GgufFile::has(std::string_view key) const { return impl_->find_kv(key) != nullptr; }

std::optional<GgufType> GgufFile::type_of(std::string_view key) const {
  const GgufKv* kv = impl_->find_kv(key);
  if (!kv) return std::nullopt;
  return kv->value.type;
}

std::optional<GgufType> GgufFile::array_type_of(std::string_view key) const {
  const GgufKv* kv = impl_->find_kv(key);
  if (!kv || kv->value.type != GgufType::ARRAY) return std::nullopt;
  return kv->value.elem_type;
}

std::vector<std::string> GgufFile::keys() const {
  std::vector<std::string> out;
  out.reserve(impl_->kvs.size());
  for (const auto& kv : impl_->kvs) out.push_back(kv.key);
  return out;
}

std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  const GgufKv* kv = impl_->find_kv(key);
  if (!kv) return std::nullopt;
  if (kv->value.type != GgufType::STRING) type_error(impl_->path, *kv, "a string");
  return kv->value.str;
}

std::optional<int64_t> GgufFile::get_int(std::string_view key) const {
  const GgufKv* kv = impl_->find_kv(key);
  if (!kv) return std::nullopt;
  if (!is_integer(kv->value.type)) type_error(impl_->path, *kv, "an integer");
  return checked_int(impl_->path, *kv, kv->value.type, kv->value.bits);
}

std::optional<double> GgufFile::get_float(std::string_view key) const {
  const GgufKv* kv = impl_->find_kv(key);
  if (!kv) return std::nullopt;
  const GgufValue& v = kv->value;
  if (is_float(v.type)) return float_of(v.type, v.bits);
  if (v.type == GgufType::UINT64) return static_cast<double>(v.bits);
  if (is_integer(v.type)) return static_cast<double>(int_of(v.type, v.bits));
  type_error(impl_->path, *kv, "a number");
}

std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const GgufKv* kv = impl_->find_kv(key);
  if (!kv) return std::nullopt;
  if (kv->value.type != GgufType::BOOL) type_error(impl_->path, *kv, "a bool");
  return kv->value.bits != 0;
}

std::optional<std::vector<std::string>> GgufFile::get_string_array(std::string_view key) const {
  const GgufKv* kv = impl_->find_kv(key);
  if (!kv) return std::nullopt;
  if (kv->value.type != GgufType::ARRAY || kv->value.elem_type != GgufType::STRING)
    type_error(impl_->path, *kv, "an array of string");
  return kv->value.strs;
}

std::optional<std::vector<float>> GgufFile::get_float_array(std::string_view key) const {
  const GgufKv* kv = impl_->find_kv(key);
  if (!kv) return std::nullopt;
  const GgufValue& v = kv->value;
  if (v.type != GgufType::ARRAY || !is_float(v.elem_type)) type_error(impl_->path, *kv, "an array of f32/f64");
  std::vector<float> out(v.count);
  for (uint64_t i = 0; i < v.count; ++i) out[i] = static_cast<float>(float_of(v.elem_type, elem_bits(v, i)));
  return out;
}

std::optional<std::vector<int64_t>> GgufFile::get_int_array(std::string_view key) const {
  const GgufKv* kv = impl_->find_kv(key);
  if (!kv) return std::nullopt;
  const GgufValue& v = kv->value;
  if (v.type != GgufType::ARRAY || !is_integer(v.elem_type)) type_error(impl_->path, *kv, "an array of integers");
  std::vector<int64_t> out(v.count);
  for (uint64_t i = 0; i < v.count; ++i) out[i] = checked_int(impl_->path, *kv, v.elem_type, elem_bits(v, i));
  return out;
}

std::optional<uint64_t> GgufFile::array_size(std::string_view key) const {
  const GgufKv* kv = impl_->find_kv(key);
  if (!kv) return std::nullopt;
  if (kv->value.type != GgufType::ARRAY) type_error(impl_->path, *kv, "an array");
  return kv->value.count;
}

std::string GgufFile::value_to_string(std::string_view key, size_t max_elems) const {
  const GgufKv* kv = impl_->find_kv(key);
  if (!kv) throw GgufError(impl_->path + ": no metadata key '" + std::string(key) + "'");
  const GgufValue& v = kv->value;
  if (v.type == GgufType::STRING) return quoted(v.str);
  if (v.type != GgufType::ARRAY) return scalar_to_string(v.type, v.bits);
  std::string out("[");  // built by appends: GCC 12 warns falsely (-Wrestrict) on "[" + string
  out.append(gguf_type_name(v.elem_type)).append(" x ").append(std::to_string(v.count)).append("] [");
  uint64_t shown = std::min<uint64_t>(v.count, max_elems);
  for (uint64_t i = 0; i < shown; ++i) {
    if (i) out += ", ";
    out += v.elem_type == GgufType::STRING ? quoted(v.strs[i]) : scalar_to_string(v.elem_type, elem_bits(v, i));
  }
  if (shown < v.count) out += shown ? ", ..." : "...";
  return out + "]";
}

// ---- tensors ----

const std::vector<GgufTensorInfo>& GgufFile::tensors() const { return impl_->tensors; }

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = impl_->tensor_index.find(name);
  return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

void GgufFile::map_tensors(const std::vector<std::string>& names) {
  Impl& m = *impl_;
  // Collect the not-yet-mapped tensors (unknown names throw before anything is mapped).
  std::vector<size_t> todo;
  for (const auto& n : names) {
    auto it = m.tensor_index.find(n);
    if (it == m.tensor_index.end()) throw GgufError(m.path + ": map_tensors: no tensor named '" + n + "'");
    if (!m.tensor_ptr[it->second]) todo.push_back(it->second);
  }
  std::sort(todo.begin(), todo.end(), [&](size_t a, size_t b) { return m.tensors[a].offset < m.tensors[b].offset; });
  todo.erase(std::unique(todo.begin(), todo.end()), todo.end());
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  // Merge tensors whose page ranges touch into one mapping each. Offsets were validated at
  // parse time: data_offset + offset + n_bytes <= file_size, so none of this overflows.
  for (size_t i = 0; i < todo.size();) {
    uint64_t lo = (m.data_offset + m.tensors[todo[i]].offset) / page * page;
    uint64_t hi = m.data_offset + m.tensors[todo[i]].offset + m.tensors[todo[i]].n_bytes;
    size_t j = i + 1;
    for (; j < todo.size(); ++j) {
      const GgufTensorInfo& t = m.tensors[todo[j]];
      if ((m.data_offset + t.offset) / page * page > (hi + page - 1) / page * page) break;
      hi = std::max(hi, m.data_offset + t.offset + t.n_bytes);
    }
    size_t len = static_cast<size_t>(hi - lo);
    void* addr = ::mmap(nullptr, len, PROT_READ, MAP_PRIVATE, m.fd, static_cast<off_t>(lo));
    if (addr == MAP_FAILED)
      throw GgufError(m.path + ": mmap of bytes [" + std::to_string(lo) + ", " + std::to_string(hi) +
                      ") failed: " + std::strerror(errno));
    m.mappings.push_back({addr, len});
    for (size_t k = i; k < j; ++k) {
      const GgufTensorInfo& t = m.tensors[todo[k]];
      const uint8_t* p = static_cast<const uint8_t*>(addr) + (m.data_offset + t.offset - lo);
      if (reinterpret_cast<uintptr_t>(p) % kTensorAlign != 0 && t.n_bytes > 0) {
        // general.alignment < 4 put this tensor at an odd address: read it once into aligned memory.
        std::unique_ptr<uint8_t[], Impl::AlignedFree> copy(
            static_cast<uint8_t*>(::operator new[](static_cast<size_t>(t.n_bytes), std::align_val_t{64})));
        std::memcpy(copy.get(), p, static_cast<size_t>(t.n_bytes));
        p = copy.get();
        m.copies.push_back(std::move(copy));
        m.copied_bytes += t.n_bytes;
      }
      m.tensor_ptr[todo[k]] = p;
    }
    i = j;
  }
}

const void* GgufFile::tensor_data(const GgufTensorInfo& t) const {
  const auto& ts = impl_->tensors;
  if (!ts.empty() && &t >= ts.data() && &t < ts.data() + ts.size()) {
    const uint8_t* p = impl_->tensor_ptr[static_cast<size_t>(&t - ts.data())];
    if (!p) throw GgufError(impl_->path + ": tensor '" + t.name + "' is not mapped (call map_tensors first)");
    return p;
  }
  return tensor_data(t.name);  // a copy of the info: look it up by name
}

const void* GgufFile::tensor_data(std::string_view name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (!t) throw GgufError(impl_->path + ": no tensor named '" + std::string(name) + "'");
  return tensor_data(*t);
}

uint64_t GgufFile::mapped_bytes() const {
  uint64_t n = 0;
  for (const auto& m : impl_->mappings) n += m.len;
  return n + impl_->copied_bytes;
}

}  // namespace herd::model
