// The KV cache of one stage's layers: n_seq sequence slots (--parallel) of n_ctx positions each,
// in the backend's memory, stored as F32, F16 or Q8_0 rows (--kv-type). Memory is allocated
// uninitialised, so RSS grows with the tokens actually cached, not with slots x context.
// Each slot knows how many positions it holds: the one place a stage keeps per-sequence state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace herd {

class KvCache {
 public:
  // Throws std::invalid_argument for a bad shape or a type that is not a KV type (Q8_0 needs
  // kv_dim to be a multiple of 32), naming the problem.
  KvCache(Backend& backend, int64_t n_layers, int64_t n_seq, int64_t n_ctx, int64_t kv_dim, DType type);

  int64_t n_layers() const { return n_layers_; }
  int64_t n_seq() const { return n_seq_; }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t kv_dim() const { return kv_dim_; }
  DType type() const { return type_; }
  size_t row_bytes() const { return row_bytes_; }
  uint64_t bytes() const { return 2ull * row_bytes_ * n_layers_ * n_seq_ * n_ctx_; }
  Device device() const { return k_.device(); }

  // Positions [0, len) of sequence `seq` hold keys and values (for every layer of this stage).
  int64_t seq_len(int64_t seq) const { return len_[static_cast<size_t>(seq)]; }
  void set_seq_len(int64_t seq, int64_t len) { len_[static_cast<size_t>(seq)] = len; }

  // Layer l's (stage-local) rows of sequence `seq`, from position 0: [n_ctx, kv_dim] of type().
  TypedRows k(int64_t l, int64_t seq) const { return {type_, row(k_, l, seq, 0), row_bytes_}; }
  TypedRows v(int64_t l, int64_t seq) const { return {type_, row(v_, l, seq, 0), row_bytes_}; }
  void* k_row(int64_t l, int64_t seq, int64_t pos) { return row(k_, l, seq, pos); }
  void* v_row(int64_t l, int64_t seq, int64_t pos) { return row(v_, l, seq, pos); }

 private:
  uint8_t* row(const Buffer& b, int64_t l, int64_t seq, int64_t pos) const {
    return b.as<uint8_t>() + static_cast<size_t>((l * n_seq_ + seq) * n_ctx_ + pos) * row_bytes_;
  }

  int64_t n_layers_, n_seq_, n_ctx_, kv_dim_;
  DType type_;
  size_t row_bytes_;
  Buffer k_, v_;              // [n_layers, n_seq, n_ctx, row_bytes]
  std::vector<int64_t> len_;  // [n_seq] positions held
};

// "f32" | "f16" | "q8_0" -> the DType; throws std::invalid_argument listing the choices.
DType parse_kv_type(const std::string& name);

}  // namespace herd
