// The model identity both sides check before a worker serves a shard: the SHA-256 of the GGUF
// file's bytes [0, data_offset) — header, metadata and tensor directory (names, shapes, types,
// offsets). Two files with the same fingerprint have the same architecture, tokenizer and tensor
// layout. The weights themselves are not hashed (that would read a 40 GB file); the header is a
// few MB at most, so the check is cheap. Sent as Assign.model_hash (cluster/protocol.h).
#pragma once

#include <cstdint>
#include <string>

#include "model/gguf.h"

namespace herd::cluster {

// Hex fingerprint of the file at `path` whose header is `header_bytes` long (a file not opened yet,
// or a header fetched from the coordinator). Throws std::runtime_error when it cannot be read.
std::string model_fingerprint(const std::string& path, uint64_t header_bytes);
// The fingerprint of an open GGUF file.
std::string model_fingerprint(const model::GgufFile& f);

}  // namespace herd::cluster
