// SHA-256 (FIPS 180-4), for the model identity checked in the handshake (cluster/model_fingerprint.h): both sides hash the
// GGUF file's header + metadata + tensor directory (bytes [0, data_offset)), which is a few MB at
// most, so the check is cheap even for a 40 GB model.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace herd::cluster {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::array<uint8_t, 32> digest();  // finishes; the object must not be updated afterwards
  std::string hex_digest();

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

// Hex SHA-256 of the first n_bytes of a file; throws std::runtime_error when it cannot be read.
std::string sha256_file_prefix(const std::string& path, uint64_t n_bytes);

}  // namespace herd::cluster
