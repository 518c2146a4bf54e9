#include "engine/stage.h"

#include "common/log.h"
#include "engine/comm.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace herd {

std::vector<WeightMatrix*> layer_matmuls(model::LayerWeights& l, bool moe) {
  std::vector<WeightMatrix*> ms = {&l.wq, &l.wk, &l.wv, &l.wo};
  if (moe) {
    ms.push_back(&l.w_router);
    for (auto* experts : {&l.e_gate, &l.e_up, &l.e_down})
      for (WeightMatrix& m : *experts) ms.push_back(&m);
  } else {
    for (WeightMatrix* m : {&l.w_gate, &l.w_up, &l.w_down}) ms.push_back(m);
  }
  return ms;
}

Stage::Stage(const model::ModelConfig& config, model::StageWeights weights, Backend& backend, const KvOptions& kv)
    : config_(config),
      w_(std::move(weights)),
      be_(backend),
      recipe_(recipe_for(config.arch)),
      cache_(backend, w_.range.size(), kv.n_seq, kv.n_ctx, config.kv_dim(), kv.type) {
  // The backend may keep a copy of each matmul weight in its faster layout (Backend::prepare_matmul,
  // e.g. 16 interleaved rows on x86); the file pages it was copied from are then dropped, so the
  // stage holds its weights once. An untied tok_embd stays in the mapping (get_rows reads a few
  // rows a step). A tied one is the output's bytes: it shares the output's copy, which the
  // backend's get_rows then reads, so the dropped pages are not faulted back in (as whole large
  // page-cache folios: the table would be held twice).
  // A device backend (its memory is not the host's: backend.h) runs the dense recipes; what still
  // reads activations on the host is refused here, before anything is uploaded.
  if (on_device() && config_.is_moe())
    throw std::invalid_argument(be_.name() + ": mixture-of-experts layers route on the host and run on CPU backends only");
  std::vector<WeightMatrix*> ms;
  for (auto& l : w_.layers)
    for (WeightMatrix* m : layer_matmuls(l, config_.is_moe())) ms.push_back(m);
  if (w_.range.output) ms.push_back(&w_.output);
  // Every matrix is asked for before the first batch: a type the backend lacks falls back to the
  // host reference (backend_for), or is a clear error on a device backend, now and not mid-request.
  std::vector<WeightMatrix*> ours;  // the matrices be_ runs (and may repack)
  for (WeightMatrix* m : ms)
    if (&backend_for(Op::MatMul, *m) == &be_) ours.push_back(m);
  all_matmuls_ours_ = ours.size() == ms.size();
  if (w_.range.embedding) backend_for(Op::GetRows, w_.tok_embd);
  for (Op op : {Op::RmsNorm, Op::Rope, Op::SiluMul, Op::Add})
    if (!be_.supports(op, DType::F32)) throw std::invalid_argument(be_.name() + " lacks an f32 activation op");
  const bool drop = w_.file_mapped;
  be_.prepare_matmul(ours, [drop, this](const WeightMatrix& rows_copied) {
    if (drop && !w_.owns(rows_copied)) model::release_pages(rows_copied);
  });
  // The weight vectors are made resident now (a device uploads them), not during a pass.
  for_each_vector([this](const std::vector<float>& v) { vec(v); });
  // (A tensor-parallel rank's output is only some of the table's rows: then it shares nothing.)
  if (w_.range.output && w_.tok_embd.data == w_.output.data && w_.tok_embd.rows == w_.output.rows)
    w_.tok_embd.packed = w_.output.packed;
}

Stage::~Stage() {
  // A device keeps its copies by the host vector's address, which a later stage's weights may
  // reuse once these are freed (a worker assigned again keeps its backend).
  for_each_vector([this](const std::vector<float>& v) { be_.release_resident(v.data()); });
}

void Stage::for_each_vector(const std::function<void(const std::vector<float>&)>& fn) const {
  for (const auto& l : w_.layers)
    for (const std::vector<float>* v : {&l.attn_norm, &l.ffn_norm, &l.bq, &l.bk, &l.bv, &l.q_norm, &l.k_norm})
      if (!v->empty()) fn(*v);
  if (w_.range.output) fn(w_.output_norm);
  if (!w_.rope_freqs.empty()) fn(w_.rope_freqs);
}

void Stage::set_tensor_parallel(StageTensorParallel tp) {
  if (tp.comm && !(tp.comm->device() == be_.device()))
    throw std::invalid_argument(be_.name() + ": a tensor-parallel rank computing on " + be_.device().name() +
                                " joins its shards through a Comm on " + be_.device().name() + ", not through '" +
                                tp.comm->name() + "', whose data is on " + tp.comm->device().name() +
                                (on_device() ? " (a GPU group joins over NCCL)" : ""));
  if (tp.comm && on_device() && tp.sync != TpSync::F32)
    throw std::invalid_argument(be_.name() + ": --tp-sync " + tp_sync_name(tp.sync) +
                                " rounds the partial sums on the host; ranks on GPUs sync in f32 only (give --tp-sync "
                                "f32)");
  tp_ = std::move(tp);
}

void Stage::set_residency(std::shared_ptr<WeightResidency> r) {
  if (r && on_device())
    throw std::invalid_argument(be_.name() + ": streaming weights from disk runs on CPU backends only");
  residency_ = std::move(r);
}

void Stage::set_io_on_device(bool input, bool output) {
  if ((input || output) && !on_device())
    throw std::invalid_argument(be_.name() + ": a host backend's input and output are host memory already");
  if (input && w_.range.embedding)
    throw std::invalid_argument("Stage: the first stage's input is token ids, not a hidden state");
  if (output && w_.range.output) throw std::invalid_argument("Stage: the last stage's logits go to the host");
  input_on_device_ = input;
  output_on_device_ = output;
}

void Stage::reset_cache() {
  for (int64_t s = 0; s < cache_.n_seq(); ++s) cache_.set_seq_len(s, 0);
}

Backend& Stage::backend_for(Op op, const WeightMatrix& w) {
  if (be_.supports(op, w.type)) return be_;
  // The host reference runs every op and type; only a host backend can lend it its buffers.
  if (be_.device().kind != Device::Kind::Host)
    throw std::invalid_argument(be_.name() + " has no " + std::string(op == Op::GetRows ? "get_rows" : "matmul") +
                                " for " + std::string(dtype_name(w.type)) + " weights");
  if (!fallback_) {
    fallback_ = make_reference_backend();
    HERD_LOG_INFO("stage: ", be_.name(), " lacks some weight types; they run on ", fallback_->name());
  }
  return *fallback_;
}

void Stage::matmul(const WeightMatrix& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy) {
  Backend& be = all_matmuls_ours_ ? be_ : backend_for(Op::MatMul, w);
  if (residency_)
    if (const auto* ps = residency_->pieces(w)) {
      // Streamed: piece by piece into y's columns row0.. (each output row is its own dot product).
      for (const auto& p : *ps) {
        residency_->before(p.unit);
        be.matmul(p.w, x, n, ldx, y + p.row0, ldy);
        residency_->after(p.unit);
      }
      return;
    }
  be.matmul(w, x, n, ldx, y, ldy);
}

float* Stage::scratch(Buffer& b, int64_t floats) {
  const size_t bytes = sizeof(float) * static_cast<size_t>(floats);
  if (b.bytes() < bytes) b = be_.alloc(bytes + bytes / 2);  // grow with headroom: batches vary in size
  return b.as<float>();
}

int64_t Stage::output_floats(const Batch& b) const {
  return w_.range.output ? b.n_outputs() * config_.n_vocab : b.size() * config_.n_embd;
}

void Stage::forward(const int32_t* tokens, const float* hidden, int64_t n, int64_t pos0, bool all_logits,
                    std::vector<float>& out) {
  if (n <= 0) throw std::invalid_argument("Stage::forward: no tokens");
  if (pos0 < 0 || pos0 + n > cache_.n_ctx())
    throw std::out_of_range("context full: positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + n - 1) +
                            " exceed the context size " + std::to_string(cache_.n_ctx()));
  one_batch_.clear();
  one_batch_.add_run(w_.range.embedding ? tokens : nullptr, n, static_cast<int32_t>(pos0), 0, all_logits);
  if (w_.range.embedding && !tokens) throw std::invalid_argument("Stage::forward: first stage needs token ids");
  out.resize(static_cast<size_t>(output_floats(one_batch_)));
  forward(one_batch_, hidden, out.data());
}

void Stage::forward(const Batch& b, const float* hidden, float* out) {
  if (!residency_) {
    forward_layers(b, hidden, out);
    return;
  }
  // The residency hears that the pass ended however it ends (a malformed batch throws).
  struct End {
    WeightResidency& r;
    ~End() { r.end_forward(); }
  } end{*residency_};
  forward_layers(b, hidden, out);
}

void Stage::forward_layers(const Batch& b, const float* hidden, float* out) {
  const auto& c = config_;
  require_runs(b, cache_.n_seq(), cache_.n_ctx(), runs_);
  for (const SeqRun& r : runs_)
    if (r.pos0 > cache_.seq_len(r.seq))
      throw std::invalid_argument("Stage::forward: sequence " + std::to_string(r.seq) + " continues at position " +
                                  std::to_string(r.pos0) + " but its cache holds " +
                                  std::to_string(cache_.seq_len(r.seq)) + " positions");
  const int64_t n = b.size(), d = c.n_embd;
  float* x = scratch(x_, n * d);
  if (w_.range.embedding) {
    if (b.tokens.size() != static_cast<size_t>(n)) throw std::invalid_argument("Stage::forward: first stage needs token ids");
    for (int64_t t = 0; t < n; ++t)
      if (b.tokens[t] < 0 || b.tokens[t] >= c.n_vocab)
        throw std::out_of_range("token id " + std::to_string(b.tokens[t]) + " outside the vocabulary (" +
                                std::to_string(c.n_vocab) + ")");
    backend_for(Op::GetRows, w_.tok_embd).get_rows(w_.tok_embd, b.tokens.data(), n, x, d);
  } else {
    if (!hidden) throw std::invalid_argument("Stage::forward: stage needs the hidden state");
    if (input_on_device_) be_.copy(x, hidden, sizeof(float) * n * d);  // a device hop's buffer
    else be_.copy_in(x, hidden, sizeof(float) * n * d);
  }

  // From here to the output's copy_out the work is one pass (Backend::begin_pass): a device may
  // record it and replay it. A pass that ends by an exception is ended as such.
  // (A tensor-parallel rank on a device is not one pass: its Comm waits for the queued ops, and
  // runs on its own stream, between them.)
  if (!(tp_.comm && on_device())) {
    be_.begin_pass(pass_key(b), n);
    in_pass_ = true;
  }
  struct PassEnd {
    Stage& s;
    ~PassEnd() {
      if (s.in_pass_) {
        s.in_pass_ = false;
        s.be_.end_pass(false);
      }
    }
  } pass_end{*this};

  // The slots hold positions < pos0 from here on: if a layer throws, no half-written position
  // counts as cached.
  for (const SeqRun& r : runs_) cache_.set_seq_len(r.seq, r.pos0);
  batch_ = &b;
  n_ = n;
  outputs_only_ = false;
  for (int64_t il = 0; il < w_.range.size(); ++il) recipe_(*this, il);
  batch_ = nullptr;
  for (const SeqRun& r : runs_) cache_.set_seq_len(r.seq, r.pos0 + r.size());

  if (!w_.range.output) {
    finish_pass();
    if (!output_on_device_) {
      be_.copy_out(out, x, sizeof(float) * n * d);
      return;
    }
    be_.copy(out, x, sizeof(float) * n * d);
    be_.synchronize();  // the hop reads `out` on another queue of the device
    return;
  }
  // Only the rows that want logits go through the output projection (the last layer's
  // feed-forward may have kept only them already: keep_output_rows).
  keep_output_rows(b);
  const int64_t n_out = n_;
  x = x_.as<float>();
  float* rows = scratch(cur_, n_out * d);
  if (n_out == 0) {
    finish_pass();
    return;
  }
  be_.rmsnorm(x, d, vec(w_.output_norm), n_out, d, c.rms_eps, rows, d);
  output_projection(rows, n_out, out);
  finish_pass();
}

uint64_t Stage::pass_key(const Batch& b) const {
  // What decides the kernels and their sizes: the rows, each run's sequence and length, and which
  // rows want logits; not the positions or the values.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t v) {
    h ^= v;
    h *= 1099511628211ull;
  };
  mix(static_cast<uint64_t>(b.size()));
  for (const SeqRun& r : runs_) {
    mix(static_cast<uint64_t>(r.seq));
    mix(static_cast<uint64_t>(r.size()));
  }
  for (size_t t = 0; t < b.logits.size(); ++t)
    if (b.logits[t]) mix(t);
  return h;
}

void Stage::finish_pass() {
  if (!in_pass_) return;
  in_pass_ = false;
  be_.end_pass(true);
}

void Stage::join_partials(float* x, int64_t n) {
  if (!tp_.comm) return;
  const auto t0 = std::chrono::steady_clock::now();
  if (on_device()) {
    // x is on the device, and so is the Comm (set_tensor_parallel): f32 only, whose all-reduce is
    // the rank-order sum on every Comm (engine/comm.h), the bits of tp_all_reduce's f32 paths.
    be_.synchronize();
    if (std::string err = tp_.comm->all_reduce_sum(x, static_cast<size_t>(n * config_.n_embd)); !err.empty())
      throw std::runtime_error("tensor parallel all-reduce: " + err);
  } else {
    tp_all_reduce(*tp_.comm, tp_.sync, x, n, config_.n_embd, &be_);  // (f16: the backend's vector conversions)
  }
  tp_sync_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void Stage::output_projection(const float* rows, int64_t n_out, float* out) {
  const int64_t d = config_.n_embd, V = config_.n_vocab;
  if (!tp_.comm) {
    if (!on_device()) {
      matmul(w_.output, rows, n_out, d, out, V);
      return;
    }
    float* logits = scratch(logits_, n_out * V);
    matmul(w_.output, rows, n_out, d, logits, V);
    finish_pass();
    be_.copy_out(out, logits, sizeof(float) * static_cast<size_t>(n_out * V));
    return;
  }
  finish_pass();  // (a host backend: the gather below reads host memory)
  // Comm::all_gather moves equal sizes: each rank's rows padded to the largest share.
  int64_t width = 0;
  for (const ShardRange& r : tp_.vocab) width = std::max(width, r.size());
  float* mine = scratch(tp_logits_, n_out * width);
  be_.fill_zero(mine, sizeof(float) * static_cast<size_t>(n_out * width));
  matmul(w_.output, rows, n_out, d, mine, width);
  const int64_t ranks = static_cast<int64_t>(tp_.vocab.size());
  float* all = scratch(tp_gathered_, ranks * n_out * width);
  const auto t0 = std::chrono::steady_clock::now();
  be_.synchronize();
  const std::string err = tp_.comm->all_gather(mine, static_cast<size_t>(n_out * width), all);
  tp_sync_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!err.empty()) throw std::runtime_error("tensor parallel logits gather: " + err);
  if (on_device()) {  // the gathered rows come to the host once, then are put in vocabulary order there
    tp_host_.resize(static_cast<size_t>(ranks * n_out * width));
    be_.copy_out(tp_host_.data(), all, sizeof(float) * tp_host_.size());
    all = tp_host_.data();
  }
  for (int64_t r = 0; r < ranks; ++r) {
    const ShardRange& v = tp_.vocab[static_cast<size_t>(r)];
    for (int64_t t = 0; t < n_out; ++t)
      std::memcpy(out + t * V + v.begin, all + (r * n_out + t) * width, sizeof(float) * static_cast<size_t>(v.size()));
  }
}

void Stage::keep_output_rows(const Batch& b) {
  if (outputs_only_) return;
  const int64_t d = config_.n_embd;
  float* x = x_.as<float>();
  int64_t n_out = 0;
  for (int64_t t = 0; t < n_; ++t)
    if (b.logits[t]) {
      if (n_out != t) be_.copy(x + n_out * d, x + t * d, sizeof(float) * d);
      ++n_out;
    }
  n_ = n_out;
  outputs_only_ = true;
}

bool Stage::begin_feed_forward(int64_t il) {
  // The last layer of the last stage: what its feed-forward computes for a row is read only by
  // that row's logits (it mixes nothing across rows, and the KV cache was written by the
  // attention before it), so rows that want no logits skip it, as llama.cpp's graphs skip them.
  // Each kept row gets the same bits (matmuls are row-independent: docs/architecture.md).
  if (w_.range.output && il == w_.range.size() - 1) keep_output_rows(*batch_);
  return n_ > 0;
}

void Stage::self_attention(int64_t il, const AttentionOptions& o) {
  const auto& c = config_;
  const auto& w = w_.layers[static_cast<size_t>(il)];
  const int64_t n = n_, d = c.n_embd, qd = c.q_dim(), kvd = c.kv_dim();
  float* x = x_.as<float>();
  float* cur = scratch(cur_, n * d);
  float* q = scratch(q_, n * qd);
  float* k = scratch(k_, n * kvd);
  float* v = scratch(v_, n * kvd);
  float* attn = scratch(attn_, n * qd);

  be_.rmsnorm(x, d, vec(w.attn_norm), n, d, c.rms_eps, cur, d);
  matmul(w.wq, cur, n, d, q, qd);
  matmul(w.wk, cur, n, d, k, kvd);
  matmul(w.wv, cur, n, d, v, kvd);
  if (o.qkv_bias) {
    be_.add_bias(q, n, qd, vec(w.bq), qd);
    be_.add_bias(k, n, kvd, vec(w.bk), kvd);
    be_.add_bias(v, n, kvd, vec(w.bv), kvd);
  }
  if (o.qk_norm) {
    if (w.q_norm.empty()) throw std::logic_error("Stage::self_attention: the stage's weights have no q/k norms");
    // [n, heads * head_dim] is [n * heads, head_dim]: one norm per head, into a buffer of its own
    // (Backend::rmsnorm does not promise that out may alias x).
    float* qn = scratch(qk_normed_, n * (qd + kvd));
    float* kn = qn + n * qd;
    be_.rmsnorm(q, c.head_dim, vec(w.q_norm), n * c.n_heads, c.head_dim, c.rms_eps, qn, c.head_dim);
    be_.rmsnorm(k, c.head_dim, vec(w.k_norm), n * c.n_kv_heads, c.head_dim, c.rms_eps, kn, c.head_dim);
    q = qn;
    k = kn;
  }
  RopeParams rp;
  rp.mode = c.rope_mode;
  rp.n_rot = c.n_rot;
  rp.freq_base = c.rope_freq_base;
  rp.freq_scale = c.rope_freq_scale;
  rp.freq_factors = w_.rope_freqs.empty() ? nullptr : vec(w_.rope_freqs);
  const int32_t* pos = batch_->pos.data();
  be_.rope(q, n, qd, c.n_heads, c.head_dim, pos, rp);
  be_.rope(k, n, kvd, c.n_kv_heads, c.head_dim, pos, rp);
  // Each sequence's rows go to its own slot, then attend to that slot only.
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  for (const SeqRun& r : runs_) {
    be_.store_rows(k + r.begin * kvd, r.size(), kvd, kvd, cache_.type(), cache_.k_row(il, r.seq, r.pos0),
                   cache_.row_bytes());
    be_.store_rows(v + r.begin * kvd, r.size(), kvd, kvd, cache_.type(), cache_.v_row(il, r.seq, r.pos0),
                   cache_.row_bytes());
    const AttentionShape s{r.size(), c.n_heads, c.n_kv_heads, c.head_dim, r.pos0 + r.size()};
    be_.attention_rows(q + r.begin * qd, qd, cache_.k(il, r.seq), cache_.v(il, r.seq), s, scale,
                       attn + r.begin * qd, qd);
  }
  matmul(w.wo, attn, n, qd, cur, d);
  join_partials(cur, n);
  be_.add(x, cur, x, n * d);
}

void Stage::swiglu_ffn(int64_t il) {
  const auto& c = config_;
  const auto& w = w_.layers[static_cast<size_t>(il)];
  if (!w.w_gate.data) throw std::logic_error("Stage::swiglu_ffn: the stage's weights have no dense feed-forward");
  if (!begin_feed_forward(il)) return;
  const int64_t n = n_, d = c.n_embd;
  float* x = x_.as<float>();
  float* cur = scratch(cur_, n * d);
  float* gate = scratch(gate_, n * c.n_ff);
  float* up = scratch(up_, n * c.n_ff);
  be_.rmsnorm(x, d, vec(w.ffn_norm), n, d, c.rms_eps, cur, d);
  matmul(w.w_gate, cur, n, d, gate, c.n_ff);
  matmul(w.w_up, cur, n, d, up, c.n_ff);
  be_.silu_mul(gate, up, gate, n * c.n_ff);
  matmul(w.w_down, gate, n, c.n_ff, cur, d);
  join_partials(cur, n);
  be_.add(x, cur, x, n * d);
}

}  // namespace herd
