// GGUF v3 writer. The header is emitted through a small sink (a vector or a buffered file);
// tensor bytes follow at aligned offsets, each produced just before it is written.
#include "model/gguf_writer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <memory>

namespace herd::model {
namespace {

struct VectorSink {
  std::vector<uint8_t>& out;
  uint64_t pos() const { return out.size(); }
  void write(const void* p, size_t n) {
    auto* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  }
};

struct FileSink {
  std::FILE* f;
  const std::string& path;
  uint64_t written = 0;
  uint64_t pos() const { return written; }
  void write(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f) != n) throw GgufError(path + ": write failed: " + std::strerror(errno));
    written += n;
  }
};

template <typename Sink, typename T>
void emit_le(Sink& s, T v) {
  uint8_t b[sizeof(T)];
  for (size_t i = 0; i < sizeof(T); ++i) b[i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
  s.write(b, sizeof(T));
}

template <typename Sink>
void put_string(Sink& s, const std::string& str) {
  emit_le(s, static_cast<uint64_t>(str.size()));
  s.write(str.data(), str.size());
}

template <typename Sink>
void pad_to(Sink& s, uint64_t alignment) {
  static const uint8_t zeros[256] = {};
  uint64_t n = (alignment - s.pos() % alignment) % alignment;
  while (n > 0) {
    size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof(zeros)));
    s.write(zeros, k);
    n -= k;
  }
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

void GgufWriter::set_entry(const std::string& key, uint32_t type_id, std::vector<uint8_t> value, bool raw) {
  if (key.empty() || key.size() > 65535) throw GgufError("GgufWriter: metadata key length must be 1..65535");
  auto it = entry_index_.find(key);
  if (it != entry_index_.end()) {
    entries_[it->second] = Entry{key, type_id, std::move(value), raw};
    return;
  }
  entry_index_.emplace(key, entries_.size());
  entries_.push_back(Entry{key, type_id, std::move(value), raw});
}

void GgufWriter::set_string(const std::string& key, const std::string& v) {
  std::vector<uint8_t> b;
  put(b, static_cast<uint64_t>(v.size()));
  b.insert(b.end(), v.begin(), v.end());
  set_entry(key, static_cast<uint32_t>(GgufType::STRING), std::move(b), false);
}

void GgufWriter::set_bool_array(const std::string& key, const std::vector<bool>& v) {
  std::vector<uint8_t> b;
  put(b, static_cast<uint32_t>(GgufType::BOOL));
  put(b, static_cast<uint64_t>(v.size()));
  for (bool x : v) b.push_back(x ? 1 : 0);
  set_entry(key, static_cast<uint32_t>(GgufType::ARRAY), std::move(b), false);
}

void GgufWriter::set_string_array(const std::string& key, const std::vector<std::string>& v) {
  std::vector<uint8_t> b;
  put(b, static_cast<uint32_t>(GgufType::STRING));
  put(b, static_cast<uint64_t>(v.size()));
  for (const auto& s : v) {
    put(b, static_cast<uint64_t>(s.size()));
    b.insert(b.end(), s.begin(), s.end());
  }
  set_entry(key, static_cast<uint32_t>(GgufType::ARRAY), std::move(b), false);
}

void GgufWriter::set_alignment(uint32_t a) {
  if (a == 0 || (a & (a - 1)) != 0) throw GgufError("GgufWriter: alignment " + std::to_string(a) + " is not a nonzero power of two");
  set_u32("general.alignment", a);
}

void GgufWriter::set_raw(const std::string& key, uint32_t type_id, std::vector<uint8_t> value) {
  set_entry(key, type_id, std::move(value), true);
}

uint64_t GgufWriter::tensor_n_bytes(const std::vector<int64_t>& ne, DType type) {
  if (ne.empty() || ne.size() > 4) throw GgufError("GgufWriter: a tensor has 1 to 4 dimensions");
  uint64_t n = 1;
  for (int64_t d : ne) {
    if (d <= 0) throw GgufError("GgufWriter: tensor dimensions must be positive");
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n) || n > static_cast<uint64_t>(INT64_MAX))
      throw GgufError("GgufWriter: tensor element count overflows");
  }
  if (ne[0] % block_size(type) != 0)
    throw GgufError("GgufWriter: ne[0] = " + std::to_string(ne[0]) + " is not a multiple of the " +
                    std::string(dtype_name(type)) + " block size");
  return n / static_cast<uint64_t>(block_size(type)) * block_bytes(type);
}

void GgufWriter::add(Tensor t) {
  if (tensor_index_.count(t.name)) throw GgufError("GgufWriter: duplicate tensor name '" + t.name + "'");
  tensor_index_.emplace(t.name, tensors_.size());
  tensors_.push_back(std::move(t));
}

void GgufWriter::add_tensor(const std::string& name, std::vector<int64_t> ne, DType type, std::vector<uint8_t> data) {
  uint64_t n = tensor_n_bytes(ne, type);
  if (data.size() != n)
    throw GgufError("GgufWriter: tensor '" + name + "' needs " + std::to_string(n) + " bytes, got " + std::to_string(data.size()));
  add(Tensor{name, std::move(ne), type, n, std::move(data), nullptr});
}

void GgufWriter::add_tensor_filled(const std::string& name, std::vector<int64_t> ne, DType type, Filler fill) {
  if (!fill) throw GgufError("GgufWriter: tensor '" + name + "' has an empty filler");
  uint64_t n = tensor_n_bytes(ne, type);
  add(Tensor{name, std::move(ne), type, n, {}, std::move(fill)});
}

uint64_t GgufWriter::alignment() const {
  auto it = entry_index_.find("general.alignment");
  if (it == entry_index_.end() || entries_[it->second].raw) return 32;
  const Entry& e = entries_[it->second];
  uint64_t a = 0;
  if (e.type_id == static_cast<uint32_t>(GgufType::UINT32))
    for (size_t i = 0; i < 4; ++i) a |= uint64_t(e.value[i]) << (8 * i);
  if (a == 0 || (a & (a - 1)) != 0) throw GgufError("GgufWriter: general.alignment must be a u32 nonzero power of two");
  return a;
}

template <typename Sink>
GgufWriter::Layout GgufWriter::emit(Sink& s) const {
  const uint64_t align = alignment();
  Layout L;
  s.write("GGUF", 4);
  emit_le(s, version_);
  emit_le(s, static_cast<uint64_t>(tensors_.size()));
  emit_le(s, static_cast<uint64_t>(entries_.size()));
  for (const Entry& e : entries_) {
    Layout::Kv k{e.key, s.pos(), 0, 0};
    put_string(s, e.key);
    k.type = s.pos();
    emit_le(s, e.type_id);
    k.value = s.pos();
    s.write(e.value.data(), e.value.size());
    L.kvs.push_back(std::move(k));
  }
  uint64_t rel = 0;  // next tensor's offset inside the data section
  for (const Tensor& t : tensors_) {
    Layout::Tensor lt{t.name, s.pos()};
    put_string(s, t.name);
    lt.n_dims = s.pos();
    emit_le(s, static_cast<uint32_t>(t.ne.size()));
    lt.dims = s.pos();
    for (int64_t d : t.ne) emit_le(s, static_cast<uint64_t>(d));
    lt.type = s.pos();
    emit_le(s, static_cast<uint32_t>(t.type));
    lt.offset = s.pos();
    emit_le(s, rel);
    lt.data = rel;  // made absolute below
    rel = align_up(rel + t.n_bytes, align);
    L.tensors.push_back(std::move(lt));
  }
  L.header_end = s.pos();
  pad_to(s, align);
  L.data_offset = s.pos();
  std::vector<uint8_t> buf;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& t = tensors_[i];
    L.tensors[i].data += L.data_offset;
    if (t.fill) {
      buf.assign(t.n_bytes, 0);
      t.fill(buf.data(), buf.size());
      s.write(buf.data(), buf.size());
    } else {
      s.write(t.data.data(), t.data.size());
    }
    pad_to(s, align);
  }
  L.file_size = s.pos();
  return L;
}

std::vector<uint8_t> GgufWriter::to_bytes(Layout* layout) const {
  std::vector<uint8_t> out;
  VectorSink sink{out};
  Layout L = emit(sink);
  if (layout) *layout = std::move(L);
  return out;
}

GgufWriter::Layout GgufWriter::write(const std::string& path) const {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!f) throw GgufError(path + ": cannot create: " + std::strerror(errno));
  std::setvbuf(f.get(), nullptr, _IOFBF, 1 << 20);
  FileSink sink{f.get(), path};
  Layout L = emit(sink);
  if (std::fflush(f.get()) != 0) throw GgufError(path + ": write failed: " + std::strerror(errno));
  if (std::fclose(f.release()) != 0) throw GgufError(path + ": close failed: " + std::strerror(errno));
  return L;
}

}  // namespace herd::model
