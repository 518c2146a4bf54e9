// A batch of token rows from one or more sequences, evaluated together in one pass of a stage:
// every weight matrix is read once for all of its rows (decode is memory-bound, so N sequences
// decoding together cost little more than one). Rows of one sequence form a run: contiguous in
// the batch, at consecutive positions, at most one run per sequence. Attention is per run, against
// that sequence's KV slot only, so a sequence's logits do not depend on what else is in the batch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace herd {

struct Batch {
  std::vector<int32_t> tokens;  // [n] token ids (read by the first stage only)
  std::vector<int32_t> pos;     // [n] position of each row in its sequence
  std::vector<int32_t> seq;     // [n] sequence id = KV slot
  std::vector<uint8_t> logits;  // [n] 1: the last stage outputs this row (logits / a sample)

  int64_t size() const { return static_cast<int64_t>(pos.size()); }
  bool empty() const { return pos.empty(); }
  void clear();
  void add(int32_t token, int32_t position, int32_t seq_id, bool want_logits);
  // Adds n tokens of one sequence at positions pos0.. ; output for the last one, or for all.
  void add_run(const int32_t* toks, int64_t n, int32_t pos0, int32_t seq_id, bool all_logits);
  int64_t n_outputs() const;
};

// One sequence's rows of a batch: rows [begin, end) at positions pos0 .. pos0 + (end - begin) - 1.
struct SeqRun {
  int32_t seq = 0;
  int64_t begin = 0, end = 0;
  int32_t pos0 = 0;
  int64_t size() const { return end - begin; }
};

// The runs of `b`, in batch order; "" or the reason the batch is malformed (sizes differ, a
// sequence id outside [0, n_seq), a position outside [0, n_ctx), positions of a run not
// consecutive, a sequence in two runs, no rows).
std::string batch_runs(const Batch& b, int64_t n_seq, int64_t n_ctx, std::vector<SeqRun>& runs);
// The same, throwing: std::out_of_range for a position past the context, std::invalid_argument
// for any other problem.
void require_runs(const Batch& b, int64_t n_seq, int64_t n_ctx, std::vector<SeqRun>& runs);

}  // namespace herd
