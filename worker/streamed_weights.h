// Disk-backed weights for a shard larger than the worker's memory budget ([offload] item 1).
//
// The backend's packed copies of the stage's matrices (Backend::packed_layout / prepare_matmul)
// are written once into a file of the weight cache (CACHE/<model hash>/packed-...; a header names
// what it holds and a crc32 per matrix, so a second start reuses it after checking it, and a
// damaged one is rebuilt), mapped read-only MAP_SHARED, and the matrices' `packed` point into the
// mapping: the same bytes as the in-memory copy, so the kernels compute the same bits. Matrices
// the backend does not repack stay in the GGUF mapping (read-only, file-backed too). The file does
// not depend on the budget: any budget reuses it.
//
// A resident prefix: the matrices of the stage's first resident_layers layers (as many as fit:
// worker/stream_plan.h) are populated once by open() and never dropped; they are multiplied whole
// (pieces() is null for them) and are no unit of the stream.
//
// Streaming (engine/weight_residency.h): the units are the other layers' matmul matrices and the
// output matrix, in the order a pass uses them, cut into row pieces that fit the budget several
// times. Before unit u is computed, a reader thread populates u+1..u+k (MADV_WILLNEED +
// MADV_POPULATE_READ, cyclically: the last streamed units prefetch the first streamed ones for
// the next token); the compute waits for u itself to be populated. After u, its pages are dropped
// (MADV_DONTNEED; on the cache file also POSIX_FADV_DONTNEED, so the page cache does not keep them
// either — on a host short of memory the page cache is that memory). So at most k+1 units are
// resident besides the prefix, and k is chosen by the caller so that the prefix, k+1 units and
// everything else fit the budget.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/weight_residency.h"
#include "kernels/backend.h"
#include "model/arch.h"
#include "model/weights.h"

namespace herd {

// Resident bytes of each unit of the stage once prepared, in pass order: every matmul matrix (a
// packed copy where the backend has a layout for it, else its bytes in the file), cut at whole
// packed groups into pieces of at most piece_bytes (0: whole matrices), each piece a unit. Those
// of the first `resident_layers` layers are left out (a prefix kept resident is no unit).
std::vector<uint64_t> stage_unit_bytes(model::StageWeights& w, const model::ModelConfig& c, const Backend& be,
                                       uint64_t piece_bytes, int64_t resident_layers = 0);

struct StreamOptions {
  std::string path;  // the cache file of the packed copies
  std::string key;   // what must match for a cached file to be reused (model hash, layers, backend, layout)
  int prefetch = 1;  // units populated ahead of the one computed (k above); 0 = none
  uint64_t piece_bytes = 0;  // matrices are cut into pieces of at most this (stage_unit_bytes)
  int64_t resident_layers = 0;  // the stage's first layers kept resident (not streamed)
  std::function<void(const std::string&)> note;  // lines a user sees (rebuilding a damaged file...)
};

class StreamedWeights : public WeightResidency {
 public:
  // Makes or reuses o.path (throws std::runtime_error naming the file on an I/O failure), maps it,
  // points w's matmul matrices at their packed copies there. w must outlive the returned object's
  // use by a Stage only through the mappings (the object keeps them alive).
  static std::shared_ptr<StreamedWeights> open(model::StageWeights& w, const model::ModelConfig& c, Backend& be,
                                               const StreamOptions& o);
  ~StreamedWeights() override;

  void before(int64_t unit) override;
  void after(int64_t unit) override;
  void end_forward() override;
  const std::vector<Piece>* pieces(const WeightMatrix& w) const override;

  struct Stats {
    // Bytes the reader thread made resident (re-read from the file or page cache): the streamed
    // units only, so a pass adds the bytes of its streamed units; the prefix is not counted here.
    uint64_t bytes_populated = 0;
    uint64_t resident_bytes = 0;   // the prefix's bytes, populated once by open()
    double stall_s = 0;            // time before() waited for a unit the reader had not finished
    bool rebuilt = false;          // the cache file was (re)written by open()
  };
  Stats stats() const;
  int64_t units() const { return static_cast<int64_t>(units_.size()); }  // streamed units
  int64_t resident_layers() const { return resident_layers_; }

 private:
  struct Range {
    const uint8_t* p = nullptr;
    size_t n = 0;
    int64_t file_offset = -1;  // in the cache file (for POSIX_FADV_DONTNEED); -1: the GGUF mapping
  };
  enum class State { Idle, Queued, Ready };
  StreamedWeights() = default;
  void reader();
  void populate(const std::vector<Range>& rs);
  void release(int64_t u);
  void request(int64_t u);  // mu_ held

  int fd_ = -1;  // the cache file (for fadvise)
  int prefetch_ = 1;
  int64_t resident_layers_ = 0;
  std::vector<std::vector<Range>> units_;
  std::unordered_map<const void*, std::vector<Piece>> pieces_;  // by the matrix's data pointer
  WeightMatrix embedding_;  // an untied tok_embd in the GGUF mapping: its touched rows dropped after each pass
  std::shared_ptr<const void> mapping_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<int64_t> queue_;
  std::vector<State> state_;
  bool stop_ = false;
  Stats stats_;
  std::thread thread_;
};

}  // namespace herd
