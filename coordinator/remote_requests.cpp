// RemotePipeline's request path: batches out to stage 0, results back from the last stage, in
// order, several in flight (micro-batches keep every stage busy); failures become error values
// and the next submit reconnects and replays what each sequence slot held.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "common/log.h"
#include "coordinator/remote_pipeline.h"

namespace herd {

using namespace transport;
using namespace cluster;

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kPollSliceMs = 20;
constexpr int64_t kReplayChunk = 512;  // tokens per replay Forward (a prompt-sized batch)
constexpr int kStuckPingMs = 1000;      // how long a stuck batch's suspects get to answer a Ping
constexpr int kWaitRetryMs = 250;       // on_worker_loss wait: between tries to reconnect

// The repeat window a sampler holds after accepting `token` (what the last stage will hold).
std::vector<int32_t> window_after(std::vector<int32_t> recent, int32_t token, int repeat_last_n) {
  if (repeat_last_n <= 0) return {};
  recent.push_back(token);
  if (recent.size() > static_cast<size_t>(repeat_last_n))
    recent.erase(recent.begin(), recent.end() - repeat_last_n);
  return recent;
}

bool same_params(const SamplerParams& a, const SamplerParams& b) {
  return a.temperature == b.temperature && a.top_k == b.top_k && a.top_p == b.top_p && a.min_p == b.min_p &&
         a.repeat_penalty == b.repeat_penalty && a.repeat_last_n == b.repeat_last_n &&
         a.frequency_penalty == b.frequency_penalty && a.presence_penalty == b.presence_penalty;
}

}  // namespace

std::vector<double> spread_hop_time(double residual_ms, std::span<const double> predicted_ms) {
  if (!(residual_ms > 0) || !std::isfinite(residual_ms)) residual_ms = 0;
  std::vector<double> out(predicted_ms.size(), 0.0);
  if (out.empty()) return out;
  double total = 0;
  for (double p : predicted_ms)
    if (std::isfinite(p) && p > 0) total += p;
  for (size_t h = 0; h < out.size(); ++h) {
    const double p = predicted_ms[h];
    out[h] = total > 0 ? residual_ms * (std::isfinite(p) && p > 0 ? p / total : 0.0)
                       : residual_ms / static_cast<double>(out.size());
  }
  return out;
}

void RemotePipeline::record_times(const Pending& p, const std::vector<StageTime>& stage_times) {
  const double round_trip_ms = std::chrono::duration<double, std::milli>(Clock::now() - p.sent).count();
  std::vector<double> compute(stage_times.size()), overhead(stage_times.size());
  double on_stages = 0;
  for (size_t i = 0; i < stage_times.size(); ++i) {
    compute[i] = static_cast<double>(stage_times[i].compute_us) / 1e3;
    overhead[i] = static_cast<double>(stage_times[i].overhead_us) / 1e3;
    on_stages += compute[i] + overhead[i];
  }
  // What each hop carried for this batch: token ids, hidden states, then sampled ids or logits.
  const double act_bytes = opts_.act_dtype == WireDType::F16 ? 2 : 4;
  std::vector<double> predicted(hop_links_.size());
  for (size_t h = 0; h < hop_links_.size(); ++h) {
    double bytes = static_cast<double>(p.n_rows) * 4;
    if (h > 0 && h + 1 < hop_links_.size()) bytes = static_cast<double>(p.n_rows * config_.n_embd) * act_bytes;
    if (h > 0 && h + 1 == hop_links_.size())
      bytes = static_cast<double>(p.n_outputs) * (p.sample ? 4.0 : 4.0 * static_cast<double>(config_.n_vocab));
    const LinkStats& l = hop_links_[h];
    predicted[h] = 1e3 * (l.latency_s + (l.bandwidth_Bps > 0 ? bytes / l.bandwidth_Bps : 0));
  }
  stats_.record(compute, overhead, spread_hop_time(round_trip_ms - on_stages, predicted), round_trip_ms, p.sent,
                p.n_rows);
}

uint64_t RemotePipeline::send_forward(const Batch& b, Forward& fw) {
  fw.request_id = next_request_++;
  fw.pos = b.pos;
  fw.seq = b.seq;
  fw.logits = b.logits;
  Tensor t;
  t.dtype = WireDType::I32;
  t.shape = {b.size()};
  t.data.assign(reinterpret_cast<const char*>(b.tokens.data()), b.tokens.size() * sizeof(int32_t));
  std::vector<Tensor> ts;
  ts.push_back(std::move(t));
  // A tensor-parallel first stage: every rank of its group computes the batch.
  for (size_t r = 1; r < tp_; ++r)
    if (auto err = workers_[r].link->send(pack(fw, ts)); !err.empty()) fail(r, err);
  if (auto err = workers_[0].link->send(pack(fw, std::move(ts))); !err.empty()) fail(0, err);
  return fw.request_id;
}

int64_t RemotePipeline::replay(const std::vector<int64_t>& keep) {
  // The (new) workers' caches are empty: rebuild each slot's positions from the record. One
  // sequence at a time, in prompt-sized chunks, no outputs.
  int64_t total = 0;
  for (int32_t seq = 0; seq < static_cast<int32_t>(keep.size()); ++seq) {
    const int64_t n = keep[static_cast<size_t>(seq)];
    const std::vector<int32_t>& toks = seq_tokens_[static_cast<size_t>(seq)];
    for (int64_t p = 0; p < n; p += kReplayChunk) {
      Batch b;
      b.add_run(toks.data() + p, std::min(kReplayChunk, n - p), static_cast<int32_t>(p), seq, false);
      b.logits.back() = 0;
      Forward fw;
      const auto sent = Clock::now();
      const uint64_t rid = send_forward(b, fw);
      std::optional<Message> m;
      while (!(m = wait_result(rid, -1, sent, b.size()))) {
      }
    }
    if (n > 0) HERD_LOG_INFO("replayed ", n, " tokens of sequence ", seq, " onto the new workers");
    total += n;
  }
  progress_at_ = Clock::now();
  return total;
}

void RemotePipeline::recover(const std::vector<std::pair<int32_t, int32_t>>& rewinds) {
  setup();
  // Up to where the incoming batch continues each slot.
  std::vector<int64_t> keep(seq_tokens_.size());
  for (size_t seq = 0; seq < keep.size(); ++seq) keep[seq] = static_cast<int64_t>(seq_tokens_[seq].size());
  for (const auto& [s, pos0] : rewinds)
    if (static_cast<size_t>(s) < keep.size())
      keep[static_cast<size_t>(s)] = std::min<int64_t>(keep[static_cast<size_t>(s)], pos0);
  replay(keep);
}

void RemotePipeline::recover_in_place(const WorkerError& first) {
  try {
    recover_rounds(first);
  } catch (...) {
    pending_.clear();  // the caller gets the error: what was in flight is lost with it
    throw;
  }
}

void RemotePipeline::recover_rounds(const WorkerError& first) {
  const auto t0 = Clock::now();
  const bool wait = opts_.on_worker_loss == "wait";
  std::string loss = first.what();
  std::optional<WorkerError> last_loss;
  const WorkerError* e = &first;
  // Each round either ends (recovered, or a named error) or follows one more loss; a `replan`
  // round leaves that worker out for good, so there are at most as many rounds as workers; `wait`
  // is bounded by its clock as well.
  const size_t max_rounds = opts_.workers.size() + 1;
  const auto wait_until = t0 + std::chrono::milliseconds(opts_.wait_timeout_ms);
  bool gave_up = false;
  auto give_up = [&](const std::string& why) {
    gave_up = true;
    throw WorkerError(loss + "; " + why, first.address, first.lost);
  };
  for (size_t round = 0;; ++round) {
    if (opts_.on_worker_loss == "fail") throw WorkerError(first);
    if (!e->lost) throw WorkerError(loss, e->address, false);  // an error the worker reported: not a loss
    if (round >= max_rounds) give_up("gave up after " + std::to_string(round) + " recoveries");
    try {
      if (wait) {
        while (true) {
          try {
            setup();
            break;
          } catch (const WorkerError& w) {
            if (Clock::now() >= wait_until)
              give_up("not back within " + std::to_string(opts_.wait_timeout_ms / 1000.0).substr(0, 4) +
                      " s (--wait-timeout; last try: " + w.what() + ")");
            std::this_thread::sleep_for(std::chrono::milliseconds(kWaitRetryMs));
          }
        }
      } else {
        const auto it = std::find_if(live_.begin(), live_.end(),
                                     [&](const std::string& a) { return normalize_address(a) == e->address; });
        if (tp_ > 1) {
          // Groups are not re-formed: the lost rank's whole group leaves (live_ is groups of tp_
          // consecutive workers, and stays so), the planner splits the layers over the other groups.
          if (it != live_.end()) {
            const auto first = live_.begin() + (it - live_.begin()) / static_cast<std::ptrdiff_t>(tp_) *
                                                   static_cast<std::ptrdiff_t>(tp_);
            std::string left;
            for (auto w = first; w != first + static_cast<std::ptrdiff_t>(tp_); ++w)
              if (w != it) left += (left.empty() ? "" : ", ") + *w;
            HERD_LOG_WARN("leaving out the lost worker's tensor-parallel group (also ", left, ")");
            live_.erase(first, first + static_cast<std::ptrdiff_t>(tp_));
          }
          if (live_.empty())
            give_up("no tensor-parallel group left to re-plan over (groups are not re-formed from the survivors "
                    "yet; --on-worker-loss wait waits for the lost worker instead)");
        } else {
          if (it != live_.end()) live_.erase(it);
        }
        if (live_.empty()) give_up("no worker left to re-plan over");
        replanned_ = true;
        try {
          setup();
        } catch (const WorkerError&) {
          throw;
        } catch (const std::exception& x) {  // the planner: the rest cannot hold the model
          give_up("cannot re-plan over the remaining " + std::to_string(live_.size()) +
                  (live_.size() == 1 ? " worker: " : " workers: ") + x.what());
        }
      }
      // Rebuild what each slot held before the batches in flight, then send those again in order.
      std::vector<int64_t> keep(seq_tokens_.size());
      for (size_t seq = 0; seq < keep.size(); ++seq) keep[seq] = static_cast<int64_t>(seq_tokens_[seq].size());
      for (const Pending& p : pending_)
        for (const auto& [s, pos0] : p.starts)
          keep[static_cast<size_t>(s)] = std::min<int64_t>(keep[static_cast<size_t>(s)], pos0);
      std::vector<int64_t> len = keep;
      for (const Pending& p : pending_) {
        std::vector<SeqRun> runs;
        batch_runs(p.batch, n_seq(), n_ctx(), runs);
        for (const SeqRun& r : runs) {
          if (r.pos0 > len[static_cast<size_t>(r.seq)])  // a batch in flight rewound an earlier one's sequence
            give_up("cannot replay: the batches in flight rewrite sequence " + std::to_string(r.seq));
          len[static_cast<size_t>(r.seq)] = r.pos0 + (r.end - r.begin);
        }
      }
      const int64_t replayed = replay(keep);
      for (Pending& p : pending_) send_pending(p);
      ++recoveries_;
      const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
      char tail[96];
      std::snprintf(tail, sizeof tail, "replayed %lld tokens in %.2f s", static_cast<long long>(replayed), secs);
      const std::string how = wait ? "reconnected to all " + std::to_string(workers_.size()) + " workers"
                                   : "re-planned over " + std::to_string(workers_.size()) +
                                         (workers_.size() == 1 ? " worker" : " workers");
      HERD_LOG_WARN(loss, "; ", how, ", ", tail);
      return;
    } catch (const WorkerError& w) {  // another loss while recovering: one more round
      if (gave_up) throw;
      last_loss.emplace(w);
      e = &*last_loss;
      loss += "; then " + std::string(w.what());
    }
  }
}

void RemotePipeline::send_pending(Pending& p) {
  Forward fw;
  if (p.sample) {
    fw.sample = true;
    for (size_t r = 0; r < p.specs.size(); ++r) {
      const SampleSpec& full = p.specs[r];
      SampleSpec spec;
      spec.draw = full.draw;
      auto& mirror = mirrors_[static_cast<size_t>(p.sample_seqs[r])];
      // Only what the last stage does not already hold travels: usually just the draw.
      if (!mirror || !same_params(mirror->params, full.params) || mirror->recent != full.recent) {
        spec.reset = true;
        spec.params = full.params;
        spec.recent = full.recent;
      }
      mirror = SamplerMirror{full.params, full.recent};
      fw.samples.push_back(std::move(spec));
    }
  }
  p.sent = Clock::now();
  p.request_id = send_forward(p.batch, fw);
}

void RemotePipeline::do_submit(uint64_t ticket, const Batch& b, std::vector<RowSample> samples) {
  try {
    if (!healthy_) {
      std::vector<SeqRun> runs;
      batch_runs(b, n_seq(), n_ctx(), runs);  // valid: Pipeline::submit checked it
      std::vector<std::pair<int32_t, int32_t>> rewinds;
      for (const SeqRun& r : runs) rewinds.push_back({r.seq, r.pos0});
      recover(rewinds);
    }
  } catch (...) {
    pending_.clear();
    throw;
  }
  Pending p;
  p.ticket = ticket;
  p.n_outputs = b.n_outputs();
  p.sample = !samples.empty();
  p.batch = b;
  {
    std::vector<SeqRun> runs;
    batch_runs(b, n_seq(), n_ctx(), runs);
    for (const SeqRun& r : runs) p.starts.push_back({r.seq, r.pos0});
  }
  if (p.sample) {
    for (size_t i = 0; i < b.logits.size(); ++i)
      if (b.logits[i]) p.sample_seqs.push_back(b.seq[i]);
    for (size_t r = 0; r < samples.size(); ++r) {
      const Sampler& s = *samples[r].sampler;
      SampleSpec spec;  // all of it: a recovery may have to send it to a fresh last stage
      spec.draw = samples[r].draw;
      spec.reset = true;
      spec.params = s.params();
      spec.recent = s.recent();
      p.specs.push_back(std::move(spec));
    }
  }
  p.n_rows = b.size();
  pending_.push_back(std::move(p));
  try {
    send_pending(pending_.back());
  } catch (const WorkerError& e) {
    recover_in_place(e);  // sends it (and any other in flight) again, or throws having dropped them
  } catch (...) {
    pending_.clear();
    throw;
  }
}

std::optional<BatchOutput> RemotePipeline::do_poll(int timeout_ms) {
  while (true) {
    try {
      return poll_once(timeout_ms);
    } catch (const WorkerError& e) {
      recover_in_place(e);  // or throws, having dropped pending_
    } catch (...) {
      pending_.clear();
      throw;
    }
  }
}

std::optional<BatchOutput> RemotePipeline::poll_once(int timeout_ms) {
  // Nothing pending while the caller still waits: a failure dropped what was in flight.
  if (pending_.empty()) throw std::runtime_error("the batch was lost with a failed worker (submit it again)");
  const Pending& p = pending_.front();
  std::optional<Message> m = wait_result(p.request_id, timeout_ms, std::max(p.sent, progress_at_), p.n_rows);
  if (!m) return std::nullopt;
  progress_at_ = Clock::now();
  const size_t last = result_worker();
  const size_t n_st = workers_.size() / tp_;
  BatchOutput out;
  out.ticket = p.ticket;
  try {
    const Result res = unpack<Result>(*m);
    if (res.n_rows != p.n_outputs)
      throw ProtocolError("Result has " + std::to_string(res.n_rows) + " rows for " + std::to_string(p.n_outputs) +
                          " outputs");
    if (res.stage_times.size() != n_st)
      throw ProtocolError("Result carries " + std::to_string(res.stage_times.size()) + " stage times for " +
                          std::to_string(n_st) + " stages");
    if (p.sample) {
      if (!m->tensors.empty() || res.tokens.size() != static_cast<size_t>(p.n_outputs))
        throw ProtocolError("Result of a sampling request must carry one token id per output row and no logits");
      for (const int32_t t : res.tokens)
        if (t < 0 || t >= config_.n_vocab)
          throw ProtocolError("sampled token " + std::to_string(t) + " outside [0, " + std::to_string(config_.n_vocab) + ")");
      out.tokens = res.tokens;
    } else {
      if (!res.tokens.empty() || m->tensors.size() != 1 || m->tensors[0].dtype != WireDType::F32 ||
          m->tensors[0].shape != std::vector<int64_t>{p.n_outputs, config_.n_vocab})
        throw ProtocolError("Result has the wrong shape (expected f32 [" + std::to_string(p.n_outputs) + ", " +
                            std::to_string(config_.n_vocab) + "])");
      out.logits.resize(static_cast<size_t>(p.n_outputs * config_.n_vocab));
      std::memcpy(out.logits.data(), m->tensors[0].data.data(), out.logits.size() * sizeof(float));
    }
    record_times(p, res.stage_times);
  } catch (const ProtocolError& e) {
    fail(last, std::string("sent a bad result: ") + e.what());
  }
  // The last stage accepted each sampled token into its sequence's window.
  for (size_t r = 0; r < out.tokens.size(); ++r) {
    auto& mirror = mirrors_[static_cast<size_t>(p.sample_seqs[r])];
    if (mirror) mirror->recent = window_after(std::move(mirror->recent), out.tokens[r], mirror->params.repeat_last_n);
  }
  pending_.pop_front();
  return out;
}

std::optional<Message> RemotePipeline::wait_result(uint64_t rid, int timeout_ms, Clock::time_point since,
                                                   int64_t n_rows) {
  const size_t last = result_worker();
  const auto start = Clock::now();
  // Busy-poll for the result for a while (a decode step is milliseconds; a blocked wait costs a
  // wake-up), then wait in slices that also watch the other workers. Not with several batches in
  // flight: the others keep every stage busy meanwhile, and a spinning coordinator would take a
  // core from them where workers share its machine (measured: 2 workers + coordinator on 2 cores,
  // 8 sequences in 2 micro-batches, ~840 -> ~875 tok/s). Nor when the last step took longer than
  // the window: spinning its first 20 ms would take ~10% of a core from co-located stages for
  // nothing (2 tensor-parallel workers + coordinator on 2 cores, a 7B's 165-190 ms steps), while
  // one wake-up costs ~0.1 ms of such a step.
  const bool spin = pending_.size() <= 1 && last_wait_s_ < std::chrono::duration<double>(busy_poll_window()).count();
  const auto busy_until = spin ? start + busy_poll_window() : start;
  while (true) {
    Received r = recv_busy(*workers_[last].link, busy_until, kPollSliceMs);
    if (r.status == RecvStatus::closed) fail(last, "lost (" + r.error + ")", /*lost=*/true);
    if (r.status == RecvStatus::malformed) fail(last, "sent a malformed message: " + r.error);
    if (r.status == RecvStatus::ok) {
      try {
        if (r.msg.type == static_cast<uint16_t>(MsgType::Error)) {
          const ErrorMsg e = unpack<ErrorMsg>(r.msg);
          fail_root_cause(last, "failed: " + e.message);
        }
        const Result res = unpack<Result>(r.msg);
        if (res.request_id < rid) {  // from before a failure or an abandoned wait: not ours
          HERD_LOG_DEBUG("ignoring a stale result for request ", res.request_id);
          continue;
        }
        if (res.request_id != rid)
          throw ProtocolError("result for request " + std::to_string(res.request_id) + " while " +
                              std::to_string(rid) + " is the oldest in flight");
        last_wait_s_ = std::chrono::duration<double>(Clock::now() - start).count();
        return std::move(r.msg);
      } catch (const ProtocolError& e) {
        fail(last, std::string("sent a bad result: ") + e.what());
      }
    }
    // Any other stage may report a failure (or die) while we wait for the last one.
    for (size_t i = 0; i < workers_.size(); ++i) {
      if (i == last) continue;
      Received o = workers_[i].link->recv(0);
      if (o.status == RecvStatus::closed) fail(i, "lost (" + o.error + ")", /*lost=*/true);
      if (o.status == RecvStatus::malformed) fail(i, "sent a malformed message: " + o.error);
      if (o.status == RecvStatus::ok && o.msg.type == static_cast<uint16_t>(MsgType::Error)) {
        std::string what = "failed";
        try {
          what += ": " + unpack<ErrorMsg>(o.msg).message;
        } catch (const ProtocolError& e) {
          what += " (unreadable error: " + std::string(e.what()) + ")";
        }
        fail_root_cause(i, what);
      }
    }
    const auto now = Clock::now();
    const auto waited = now - start;
    if (opts_.request_timeout_ms > 0 && !pending_.empty() &&
        now - pending_.front().sent > std::chrono::milliseconds(opts_.request_timeout_ms))
      fail(last, "no result within " + std::to_string(opts_.request_timeout_ms) + " ms");
    if (const int st = step_timeout_ms(n_rows); st > 0 && now - since > std::chrono::milliseconds(st))
      fail_stuck(std::chrono::duration<double>(now - since).count());
    if (timeout_ms >= 0 && waited >= std::chrono::milliseconds(timeout_ms)) return std::nullopt;
  }
}

void RemotePipeline::fail_stuck(double waited_s) {
  // A worker's main thread answers a Ping (ZeroMQ's I/O thread answers the heartbeats, so a worker
  // that is alive but stuck still has a healthy link): the first that does not answer within
  // kStuckPingMs is the one to name.
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.1f", waited_s);
  const std::string what = std::string("no progress for ") + secs + " s (--step-timeout)";
  const size_t n = workers_.size();
  const uint64_t seq = next_request_++;
  for (size_t i = 0; i < n; ++i)
    if (auto err = workers_[i].link->send(pack(Ping{seq, 0})); !err.empty())
      fail(i, what + "; it does not take a ping (" + err + ")", /*lost=*/true);
  std::vector<bool> answered(n, false);
  const auto until = Clock::now() + std::chrono::milliseconds(kStuckPingMs);
  size_t left = n;
  while (left > 0 && Clock::now() < until) {
    for (size_t i = 0; i < n; ++i) {
      if (answered[i]) continue;
      Received r = workers_[i].link->recv(0);
      if (r.status == RecvStatus::closed) fail(i, what + "; then lost (" + r.error + ")", /*lost=*/true);
      if (r.status != RecvStatus::ok || r.msg.type != static_cast<uint16_t>(MsgType::Pong)) continue;  // a late result: dropped
      try {
        if (unpack<Pong>(r.msg).seq != seq) continue;
      } catch (const ProtocolError&) {
        continue;
      }
      answered[i] = true;
      --left;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  for (size_t i = 0; i < n; ++i)
    if (!answered[i]) fail(i, what + "; it does not answer a ping", /*lost=*/true);
  fail(result_worker(), what + ": no result although every worker answers a ping", /*lost=*/true);
}

}  // namespace herd
