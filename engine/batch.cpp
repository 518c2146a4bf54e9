#include "engine/batch.h"

#include <algorithm>
#include <stdexcept>

namespace herd {

void Batch::clear() {
  tokens.clear();
  pos.clear();
  seq.clear();
  logits.clear();
}

void Batch::add(int32_t token, int32_t position, int32_t seq_id, bool want_logits) {
  tokens.push_back(token);
  pos.push_back(position);
  seq.push_back(seq_id);
  logits.push_back(want_logits ? 1 : 0);
}

void Batch::add_run(const int32_t* toks, int64_t n, int32_t pos0, int32_t seq_id, bool all_logits) {
  for (int64_t i = 0; i < n; ++i)
    add(toks ? toks[i] : 0, pos0 + static_cast<int32_t>(i), seq_id, all_logits || i + 1 == n);
}

int64_t Batch::n_outputs() const { return std::count(logits.begin(), logits.end(), uint8_t{1}); }

namespace {

// batch_runs, also saying whether the problem is a position past the context (std::out_of_range
// for require_runs) rather than a malformed batch.
std::string find_runs(const Batch& b, int64_t n_seq, int64_t n_ctx, std::vector<SeqRun>& runs, bool* context_full) {
  runs.clear();
  const size_t n = b.pos.size();
  if (n == 0) return "empty batch";
  if (b.seq.size() != n || b.logits.size() != n || (!b.tokens.empty() && b.tokens.size() != n))
    return "batch arrays differ in length";
  for (size_t i = 0; i < n; ++i) {
    const int32_t s = b.seq[i], p = b.pos[i];
    if (s < 0 || s >= n_seq)
      return "sequence id " + std::to_string(s) + " outside 0.." + std::to_string(n_seq - 1) +
             " (raise --parallel for more sequences)";
    if (p < 0) return "position " + std::to_string(p) + " of sequence " + std::to_string(s) + " is negative";
    if (p >= n_ctx) {
      *context_full = true;
      return "context full: position " + std::to_string(p) + " of sequence " + std::to_string(s) +
             " exceeds the context size " + std::to_string(n_ctx);
    }
    if (b.logits[i] > 1) return "logits flag must be 0 or 1";
    if (!runs.empty() && runs.back().seq == s) {
      if (p != runs.back().pos0 + runs.back().size())
        return "positions of sequence " + std::to_string(s) + " are not consecutive";
      runs.back().end = static_cast<int64_t>(i) + 1;
      continue;
    }
    for (const SeqRun& r : runs)
      if (r.seq == s) return "sequence " + std::to_string(s) + " appears in two separate runs of one batch";
    runs.push_back({s, static_cast<int64_t>(i), static_cast<int64_t>(i) + 1, p});
  }
  return "";
}

}  // namespace

std::string batch_runs(const Batch& b, int64_t n_seq, int64_t n_ctx, std::vector<SeqRun>& runs) {
  bool context_full = false;
  return find_runs(b, n_seq, n_ctx, runs, &context_full);
}

void require_runs(const Batch& b, int64_t n_seq, int64_t n_ctx, std::vector<SeqRun>& runs) {
  bool context_full = false;
  std::string err = find_runs(b, n_seq, n_ctx, runs, &context_full);
  if (err.empty()) return;
  if (context_full) throw std::out_of_range(err);
  throw std::invalid_argument(err);
}

}  // namespace herd
