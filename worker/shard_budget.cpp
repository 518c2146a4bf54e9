// WorkerServer's memory budget (--mem-budget, --no-stream; [offload] item 1): whether the stage it
// was assigned fits, and when it does not, its leading layers that fit stay resident and the rest
// (and the output matrix) stream from a file of the weight cache (worker/streamed_weights.h, the
// split by worker/stream_plan.h) with a prefetch window that keeps the resident memory in the budget.
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <stdexcept>

#include "common/log.h"
#include "worker/mem_budget.h"
#include "worker/stream_plan.h"
#include "worker/streamed_weights.h"
#include "worker/worker_server.h"

namespace herd {
namespace {

std::string mib(uint64_t b) {  // MiB, or GiB from 1 GiB up
  char s[32];
  if (b >= (uint64_t{1} << 30)) std::snprintf(s, sizeof s, "%.1f GiB", static_cast<double>(b) / 1073741824.0);
  else std::snprintf(s, sizeof s, "%.1f MiB", static_cast<double>(b) / 1048576.0);
  return s;
}

}  // namespace

uint64_t stage_activation_bytes(const model::ModelConfig& c, const model::LayerRange& r, int64_t rows, int64_t n_ctx,
                                DType kv_type) {
  // Stage's scratch per batch row (engine/stage.h, in f32, grown with 1.5x headroom): x cur, q attn
  // (and the q/k norms), k v, the FFN's gate up (or a MoE layer's gathered rows, outputs and router
  // logits); the kernels' 8-bit activations (~1.2 bytes per column of the widest input); the hidden
  // state or logits the stage receives and sends (and the message holding them).
  const int64_t d = c.n_embd, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t ff = c.is_moe() ? c.n_ff_exp : c.n_ff;
  int64_t floats = 2 * d + 3 * qd + 3 * kvd + 2 * ff;
  if (c.is_moe()) floats += (1 + c.n_expert_used) * d + c.n_expert;
  const int64_t out = r.output ? c.n_vocab : d;
  const uint64_t per_row = static_cast<uint64_t>(floats) * 6 + static_cast<uint64_t>(2 * d + 2 * out) * 4 +
                           static_cast<uint64_t>(std::max({d, qd, ff})) * 2;
  // attention_rows converts a slot's non-f32 keys and values to f32 first (x86 reads F16 in place;
  // counted anyway): [2, n_ctx, kv_dim].
  const uint64_t kv_scratch = kv_type == DType::F32 ? 0 : static_cast<uint64_t>(2 * n_ctx * kvd) * 4;
  return per_row * static_cast<uint64_t>(rows) + kv_scratch;
}

std::shared_ptr<WeightResidency> WorkerServer::stream_if_over_budget(const cluster::Assign& a, model::StageWeights& w) {
  // A device backend holds the stage in its own memory (weights uploaded, the file's pages dropped
  // as they are copied): host memory is no budget for it, and a stage its device cannot hold fails
  // at the upload naming the bytes asked for and free (kernels/cuda/cuda_backend.cpp).
  if (backend_->device().kind != Device::Kind::Host) return nullptr;
  std::string how = "--mem-budget";
  const uint64_t budget = opts_.mem_budget > 0 ? opts_.mem_budget : auto_mem_budget(&how);
  if (budget == 0) return nullptr;  // unknown (no /proc): the stage is built as before
  const auto whole = stage_unit_bytes(w, config_, *backend_, 0);
  const uint64_t weights = std::accumulate(whole.begin(), whole.end(), uint64_t{0});
  const uint64_t kv = 2 * row_bytes(a.kv_type, config_.kv_dim()) * static_cast<uint64_t>(a.layers.size()) *
                      static_cast<uint64_t>(a.n_seq) * static_cast<uint64_t>(a.n_ctx);
  const uint64_t act = stage_activation_bytes(config_, a.layers, a.n_seq, a.n_ctx, a.kv_type);
  const uint64_t process = resident_bytes();
  const uint64_t fixed = process + kv + act;
  const std::string name = "layers " + std::to_string(a.layers.first) + "-" + std::to_string(a.layers.end - 1);
  const std::string needs = name + ": the stage needs " + mib(fixed + weights) + " resident (weights " + mib(weights) +
                            ", KV cache " + mib(kv) + ", activations " + mib(act) + ", this process now " +
                            mib(process) + ") but the memory budget is " + mib(budget) + " (" + how + ")";
  if (fixed + weights <= budget) return nullptr;
  if (opts_.no_stream) throw std::runtime_error(needs + "; not streaming the weights from disk (--no-stream)");
  if (a.tp.size > 1) throw std::runtime_error(needs + "; a tensor-parallel rank cannot stream its weights yet");
  if (budget <= fixed)
    throw std::runtime_error(needs + "; even streaming its weights from disk, the rest alone exceeds the budget");
  // The leading layers that fit stay resident (stream_plan.h), so that at least a window of
  // min(twice the widest streamed layer, all that streams, 4 MiB) is left for the rest.
  const StageLayerBytes layer_bytes = stage_layer_bytes(w, config_, *backend_);
  const int64_t resident = resident_prefix_layers(layer_bytes, fixed, budget);
  if (resident < 0) {
    uint64_t widest = layer_bytes.output;
    for (uint64_t b : layer_bytes.layers) widest = std::max(widest, b);
    throw std::runtime_error(needs + "; even streaming its weights from disk, the rest and a window of " +
                             mib(std::min({2 * widest, weights, kStreamWindowFloor})) +
                             " for the streamed pieces exceed the budget");
  }
  const uint64_t kept_bytes =
      std::accumulate(layer_bytes.layers.begin(), layer_bytes.layers.begin() + resident, uint64_t{0});
  // The streamed matrices are cut into pieces of a quarter of what is left (a piece computes while
  // the next ones are read), then the window: the largest run of consecutive pieces that always fits.
  const uint64_t avail = budget - fixed - kept_bytes;
  const uint64_t piece = avail / 4;
  const auto units = stage_unit_bytes(w, config_, *backend_, piece, resident);
  const int64_t n_units = static_cast<int64_t>(units.size());
  const uint64_t largest = units.empty() ? 0 : *std::max_element(units.begin(), units.end());
  if (largest > avail)
    throw std::runtime_error(needs + "; even streaming, one piece of a matrix (" + mib(largest) +
                             ") and the rest must be resident at once: at least " + mib(fixed + kept_bytes + largest));
  const int64_t window = streaming_window(units, avail);
  StreamOptions o;
  o.prefetch = static_cast<int>(std::max<int64_t>(0, window - 1));
  o.piece_bytes = piece;
  o.key = file_hash_ + " layers " + std::to_string(a.layers.first) + "-" + std::to_string(a.layers.end) + " embedding " +
          std::to_string(a.layers.embedding) + " output " + std::to_string(a.layers.output) + " backend " +
          backend_->name();
  o.path = (opts_.cache_dir.empty() ? default_cache_dir() : opts_.cache_dir) + "/" + file_hash_ + "/packed-" +
           std::to_string(a.layers.first) + "-" + std::to_string(a.layers.end) + (a.layers.embedding ? "e" : "") +
           (a.layers.output ? "o" : "") + "-" + backend_->name() + ".bin";
  o.note = [](const std::string& line) { note(line); };
  o.resident_layers = resident;
  const int64_t first = a.layers.first, end = a.layers.end;
  const auto span = [](int64_t l0, int64_t l1) { return std::to_string(l0) + "-" + std::to_string(l1 - 1); };
  const std::string kept = resident > 0 ? "keeping layers " + span(first, first + resident) + " resident (" +
                                              mib(kept_bytes) + ") and " : "";
  note("herd worker: " + needs + "; " + kept + "streaming the weights of layers " + span(first + resident, end) +
       (a.layers.output ? " + output" : "") + " from " + o.path + " (" + std::to_string(window) + " of " +
       std::to_string(n_units) + " pieces of " + mib(piece) + " at most resident at once)");
  return StreamedWeights::open(w, config_, *backend_, o);
}

}  // namespace herd
