// CRC-32 (IEEE 802.3, the zlib/PNG polynomial 0xEDB88320, reflected), for weight chunks on the
// wire: cheap enough to check every byte of a multi-GB transfer. crc32("123456789") == 0xCBF43926.
#pragma once

#include <cstddef>
#include <cstdint>

namespace herd::transport {

// Continues `crc` (0 to start) over data[0, n).
uint32_t crc32(const void* data, size_t n, uint32_t crc = 0);

}  // namespace herd::transport
