// allocate_packed_storage (backend.h): the memory of a backend's repacked weight matrices.
//
// Why huge pages: decode streams every weight byte once per token, and the GGUF file mapping a
// packed copy replaces is often backed by large page-cache folios mapped with 2 MiB entries. The
// same bytes on 4 KiB anonymous pages cost measurable decode speed in TLB misses (stories110M
// Q8_0, one thread: ~125 instead of ~180 tokens/s). So a stage's packed matrices share one mapping
// that starts 2 MiB-aligned, advised MADV_HUGEPAGE, and is rounded up to 4 KiB only: the kernel
// backs the whole 2 MiB stretches with huge pages and the tail with small ones (no RSS inflation).
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <new>

#include "kernels/backend.h"

namespace herd {
namespace {

constexpr size_t kHuge = size_t{2} << 20;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace

std::shared_ptr<uint8_t> allocate_packed_storage(size_t bytes) {
  if (bytes < kHuge) {  // no whole huge page to gain
    auto* p = static_cast<uint8_t*>(::operator new(bytes > 0 ? bytes : 1, std::align_val_t(64)));
    return std::shared_ptr<uint8_t>(p, [](uint8_t* q) { ::operator delete(q, std::align_val_t(64)); });
  }
  const size_t len = round_up(bytes, static_cast<size_t>(::sysconf(_SC_PAGESIZE)));
  void* base = ::mmap(nullptr, len + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t b = reinterpret_cast<uintptr_t>(base), a = round_up(b, kHuge);
  if (a > b) ::munmap(base, a - b);                                           // before the 2 MiB boundary
  if (b + kHuge > a) ::munmap(reinterpret_cast<void*>(a + len), b + kHuge - a);  // after a + len
#if defined(MADV_HUGEPAGE)
  ::madvise(reinterpret_cast<void*>(a), len, MADV_HUGEPAGE);  // advisory: small pages work too
#endif
  return std::shared_ptr<uint8_t>(reinterpret_cast<uint8_t*>(a), [len](uint8_t* p) { ::munmap(p, len); });
}

}  // namespace herd
