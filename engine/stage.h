// One pipeline stage: a contiguous range of a model's layers with their KV cache, run on one
// backend. The first stage turns token ids into hidden states (embedding lookup); the last
// turns hidden states into logits (final norm + output projection). A single-process run is
// one stage that is both. A stage evaluates a Batch: rows of one or more sequences, each
// attending only to its own KV slot; its layers follow the architecture's recipe (recipe.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine/batch.h"
#include "engine/kv_cache.h"
#include "engine/recipe.h"
#include "engine/shard_plan.h"
#include "engine/tp_sync.h"
#include "engine/weight_residency.h"
#include "kernels/backend.h"
#include "model/arch.h"
#include "model/weights.h"

namespace herd {

class Comm;

// One rank of a tensor-parallel group (engine/tp_pipeline.h). The Stage's config and weights are
// then the rank's shard (engine/tp_shard.h: its heads, FFN rows and vocabulary rows); the partial
// sums after the attention output projection and after the FFN down projection are joined
// through `comm` (tp_all_reduce), and the logits rows of every rank are gathered in rank order,
// so every rank's forward() writes the whole logits.
struct StageTensorParallel {
  Comm* comm = nullptr;  // null: not tensor-parallel
  TpSync sync = TpSync::F32;
  std::vector<ShardRange> vocab;  // every rank's rows of the output matrix, in rank order
};

struct KvOptions {
  int64_t n_ctx = 0;         // positions per sequence
  int64_t n_seq = 1;         // sequence slots (--parallel)
  DType type = DType::F32;   // --kv-type
};

// The matrices a Stage multiplies by (what a backend may repack), of one layer: wq wk wv wo,
// then w_gate w_up w_down, or for a mixture of experts the router and each expert's gate, up, down.
std::vector<WeightMatrix*> layer_matmuls(model::LayerWeights& l, bool moe);

class Stage {
 public:
  // `weights` point into a mapping that must outlive the Stage.
  Stage(const model::ModelConfig& config, model::StageWeights weights, Backend& backend, const KvOptions& kv);
  // Releases the backend's copies of this stage's weight vectors (Backend::release_resident).
  ~Stage();
  Stage(const Stage&) = delete;
  Stage& operator=(const Stage&) = delete;

  const model::ModelConfig& config() const { return config_; }
  const model::LayerRange& range() const { return w_.range; }
  int64_t n_ctx() const { return cache_.n_ctx(); }
  int64_t n_seq() const { return cache_.n_seq(); }
  const KvCache& cache() const { return cache_; }
  Backend& backend() const { return be_; }

  // Floats forward() writes for `b`: logits [b.n_outputs(), n_vocab] on the last stage, else the
  // hidden state [b.size(), n_embd].
  int64_t output_floats(const Batch& b) const;

  // Runs the batch. A run of sequence s at positions p0.. needs the slot to hold positions < p0;
  // positions >= p0 it held are overwritten (a rewind). First stage: input is b.tokens; others:
  // `hidden` [b.size(), n_embd]. Output to `out` (output_floats(b) floats). Both in host memory
  // unless set_io_on_device says otherwise.
  // Throws std::invalid_argument / std::out_of_range for a malformed batch, naming the row.
  void forward(const Batch& b, const float* hidden, float* out);

  // One sequence (slot 0): n tokens at positions pos0.. ; logits of the last token, or all.
  void forward(const int32_t* tokens, const float* hidden, int64_t n, int64_t pos0, bool all_logits,
               std::vector<float>& out);

  // Every slot holds nothing (a coordinator's Reset, a new assignment).
  void reset_cache();

  // Where forward()'s hidden state lives, for a stage whose neighbour hands it over device to
  // device (a pipeline hop between GPUs: worker/device_hop.h). input: `hidden` is in the backend's
  // memory (alloc) and is copied within it (Backend::copy), not copy_in; output: `out` is in the
  // backend's memory, written with Backend::copy, and forward() ends with Backend::synchronize()
  // so another queue on the device (the hop's NCCL stream) may read it. Both off by default.
  // Throws std::invalid_argument on a host backend (its memory is the host's: nothing to say),
  // for input on the first stage (its input is token ids) and output on the last (logits go to
  // the host).
  void set_io_on_device(bool input, bool output);

  // Makes this stage one rank of a tensor-parallel group (before its first forward; the comm
  // may be replaced after a failed collective broke the group).
  // The comm's data must be where the backend computes (Comm::device(): a host Comm for a CPU
  // backend, a Comm on the same GPU, NCCL, for a CUDA backend), else std::invalid_argument; on a
  // device only f32 sync, and the pass is not bracketed (begin_pass: the comm runs between ops).
  void set_tensor_parallel(StageTensorParallel tp);
  // Seconds this rank has spent inside its all-reduces and logits gathers (waiting for the slower
  // ranks included) since it was built: what `herd bench --tp` reports as the sync share.
  double tp_sync_seconds() const { return tp_sync_s_; }

  // Streams the weights (engine/weight_residency.h): the matrices it has pieces for are multiplied
  // piece by piece, each between its before() and after(); null (the default) = all resident.
  // Host backends only (a device backend's weights are its uploaded copies; refused with
  // std::invalid_argument).
  void set_residency(std::shared_ptr<WeightResidency> r);
  WeightResidency* residency() const { return residency_.get(); }

  // Blocks of a layer recipe (recipe.h), over the current batch; il is the stage-local layer.
  // x += Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x)), per sequence; options:
  // q/k/v biases after the projections, an RMS norm of each q and k head before rope.
  void self_attention(int64_t il, const AttentionOptions& o);
  // x += Wdown · (silu(Wgate·norm(x)) * Wup·norm(x)).
  void swiglu_ffn(int64_t il);
  // Mixture of SwiGLU experts (engine/moe_ffn.cpp): per token, p = softmax(Wrouter·norm(x)) over
  // all experts, the n_expert_used largest p chosen (ties: the lower expert index first), and
  // x += sum over the chosen, in that rank order, of (p_e / sum of chosen p) · expert_e(norm(x)).
  // The rows that chose an expert run through its matrices in one call.
  void moe_ffn(int64_t il);

 private:
  float* scratch(Buffer& b, int64_t floats);
  bool on_device() const { return be_.device().kind != Device::Kind::Host; }
  // The pass of forward_layers (Backend::begin_pass): its shape key, and its end (once).
  uint64_t pass_key(const Batch& b) const;
  void finish_pass();
  // Every weight vector the ops read through vec(): made resident at construction, released at
  // destruction.
  void for_each_vector(const std::function<void(const std::vector<float>&)>& fn) const;
  // A weight vector (norm, bias, rope factors) as the backend's ops read it (Backend::resident).
  const float* vec(const std::vector<float>& v) { return be_.resident(v.data(), v.size()); }
  void forward_layers(const Batch& b, const float* hidden, float* out);  // forward() without the residency's end
  // Compacts x_'s rows to those of `b` that want logits (once per forward; n_ becomes their count).
  void keep_output_rows(const Batch& b);
  // Called first by every feed-forward block: in the last layer of the last stage only the rows
  // that want logits go on. Returns false when no row is left.
  bool begin_feed_forward(int64_t il);
  // The backend that runs `op` on w: ours when it supports(op, w.type), else the host reference
  // (made once); throws std::invalid_argument when ours is a device backend that lacks it.
  Backend& backend_for(Op op, const WeightMatrix& w);
  void matmul(const WeightMatrix& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy);
  // Tensor parallel: x [n, n_embd] is this rank's partial sum; afterwards, every rank's sum.
  void join_partials(float* x, int64_t n);
  // The output projection of the normed rows [n_out, n_embd] into out [n_out, n_vocab]: this
  // rank's vocabulary rows, then (tensor parallel) every rank's, gathered in rank order.
  void output_projection(const float* rows, int64_t n_out, float* out);

  model::ModelConfig config_;
  model::StageWeights w_;
  Backend& be_;
  std::unique_ptr<Backend> fallback_;  // the host reference, for weight types be_ lacks
  bool all_matmuls_ours_ = true;       // decided at construction: no per-call supports() then
  LayerRecipe recipe_;
  KvCache cache_;
  StageTensorParallel tp_;
  std::shared_ptr<WeightResidency> residency_;
  double tp_sync_s_ = 0;
  Buffer tp_logits_, tp_gathered_;  // output_projection: this rank's [n_out, max rows], all ranks'
  std::vector<float> tp_host_;      // ... all ranks' rows copied to the host, on a device
  Buffer logits_;  // output_projection on a device backend: the logits before they are copied out
  // The batch being evaluated (valid during forward).
  const Batch* batch_ = nullptr;
  std::vector<SeqRun> runs_;
  int64_t n_ = 0;
  bool outputs_only_ = false;  // x_ holds only the rows that want logits (keep_output_rows)
  bool in_pass_ = false;       // between the backend's begin_pass and end_pass
  bool input_on_device_ = false, output_on_device_ = false;  // set_io_on_device
  // Activations in the backend's memory, grown on demand: [n, dim] row-major.
  Buffer x_, cur_, q_, k_, v_, attn_, gate_, up_;
  Buffer qk_normed_;         // self_attention with qk_norm: normed q [n, q_dim] then k [n, kv_dim]
  Buffer moe_in_, moe_out_;  // moe_ffn: one expert's gathered rows [m, n_embd]; outputs [n, n_expert_used, n_embd]
  Buffer router_logits_;     // moe_ffn: [n, n_expert]
  // moe_ffn's routing on the host: per (token, rank) the expert and its weight [n, n_expert_used];
  // one token's probabilities [n_expert]; per expert the (token, rank) slots that chose it.
  std::vector<float> route_w_, probs_;
  std::vector<int32_t> route_e_;
  std::vector<uint8_t> taken_;
  std::vector<std::vector<int64_t>> expert_slots_;
  std::vector<int32_t> one_seq_;  // forward(tokens, ...)'s token copy
  Batch one_batch_;
};

}  // namespace herd
