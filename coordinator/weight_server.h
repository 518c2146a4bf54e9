// Serving the coordinator's model file to workers that have no copy of it: a worker asks, while it
// handles its Assign, for the GGUF header and then exactly its own tensors (cluster/protocol.h
// WeightRequest); each answer is one WeightChunk of the file's bytes with their crc32. A request
// outside what that worker may fetch — the header and its stage's tensors — is refused with an Error,
// never served: the file is read with pread from this server's own descriptor, so our own mapping of
// the model stays untouched.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "model/arch.h"
#include "model/gguf.h"
#include "model/weights.h"
#include "transport/link.h"

namespace herd {

class WeightServer {
 public:
  // debug_corrupt_chunks (test hook): flip a byte in the first N chunks sent (-1: all), after their
  // crc32 was taken, so the worker's check must catch it. debug_tamper_chunks (test hook): flip a
  // byte in the first N chunks of tensor bytes *before* the crc32 is taken (a coordinator whose file
  // is not what it hashed), so only the tensor digests can catch it.
  WeightServer(const model::GgufFile& file, int debug_corrupt_chunks, int debug_tamper_chunks = 0);
  ~WeightServer();
  WeightServer(const WeightServer&) = delete;
  WeightServer& operator=(const WeightServer&) = delete;

  // What stage k of `ranges` may fetch from now on: the header, and its own tensors.
  void allow(const model::ModelConfig& c, const std::vector<model::LayerRange>& ranges);

  // Answers one WeightRequest message `m` of stage k on its `link`: a WeightChunk, or an Error when
  // the request is not servable (then logged with `who`). A request of another session is ignored.
  // Returns "" or why the worker must be failed (a malformed request, a link that cannot send).
  std::string serve(size_t k, transport::Link& link, const transport::Message& m, uint64_t session,
                    const std::string& who);

  // Weight bytes sent (since construction).
  uint64_t bytes_sent() const { return bytes_sent_; }
  // What stage k may fetch (allow()): the header plus its tensors, in bytes; 0 for an unknown stage.
  uint64_t servable_bytes(size_t k) const;

 private:
  const model::GgufFile& file_;
  int fd_ = -1;  // -1: the file cannot be read here; every request is refused
  int corrupt_chunks_ = 0;
  int chunks_corrupted_ = 0;
  int tamper_chunks_ = 0;
  int chunks_tampered_ = 0;
  uint64_t bytes_sent_ = 0;
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> servable_;  // per stage: file [begin, end) it may fetch
};

}  // namespace herd
