#include "cluster/model_fingerprint.h"

#include "cluster/sha256.h"

namespace herd::cluster {

std::string model_fingerprint(const std::string& path, uint64_t header_bytes) {
  return sha256_file_prefix(path, header_bytes);
}

std::string model_fingerprint(const model::GgufFile& f) { return model_fingerprint(f.path(), f.data_offset()); }

}  // namespace herd::cluster
