#include "coordinator/scheduler.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "common/log.h"
#include "coordinator/generator.h"

namespace herd {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kRateWindow = 60;  // seconds of tokens_per_second history

// Moves a per-second window on from second `from` to second `to`: the entries of the seconds that
// passed leave at the front, zeros come in at the back.
void advance_window(std::vector<double>& w, int64_t from, int64_t to) {
  if (from < 0 || to <= from) return;
  const auto shift = static_cast<size_t>(std::min<int64_t>(to - from, kRateWindow));
  w.erase(w.begin(), w.begin() + static_cast<long>(shift));
  w.resize(kRateWindow, 0.0);
}

// Whole seconds of the steady clock.
int64_t clock_second() {
  return std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch()).count();
}

}  // namespace

// ---- RequestStream ----

std::optional<StreamEvent> RequestStream::next(int timeout_ms) {
  std::unique_lock lk(mu_);
  cv_.wait_for(lk, std::chrono::milliseconds(std::max(0, timeout_ms)),
               [&] { return !pending_.empty() || (final_ && !delivered_final_); });
  if (!pending_.empty()) {
    StreamEvent e;
    e.text.swap(pending_);
    return e;
  }
  if (final_ && !delivered_final_) {
    delivered_final_ = true;
    return final_;
  }
  return std::nullopt;
}

void RequestStream::push_text(std::string text) {
  if (text.empty()) return;
  {
    std::lock_guard lk(mu_);
    pending_ += text;
  }
  cv_.notify_all();
}

void RequestStream::finish(StreamEvent last) {
  last.done = true;
  {
    std::lock_guard lk(mu_);
    pending_ += last.text;  // delivered before the final event, in order
    last.text.clear();
    final_ = std::move(last);
  }
  cv_.notify_all();
}

// ---- StopMatcher ----

std::string StopMatcher::push(const std::string& text, bool& stopped) {
  stopped = false;
  held_ += text;
  if (stops_.empty()) {
    std::string out;
    out.swap(held_);
    return out;
  }
  // The earliest complete stop string ends the text.
  size_t cut = std::string::npos;
  for (const std::string& s : stops_)
    if (!s.empty()) cut = std::min(cut, held_.find(s));
  if (cut != std::string::npos) {
    stopped = true;
    std::string out = held_.substr(0, cut);
    held_.clear();
    return out;
  }
  // Keep back the longest tail that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const std::string& s : stops_)
    for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n)
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::flush() {
  std::string out;
  out.swap(held_);
  return out;
}

// ---- Scheduler ----

struct Scheduler::Slot {
  int32_t id = 0;
  bool active = false;
  bool in_flight = false;
  std::shared_ptr<RequestStream> stream;
  GenerationRequest req;
  std::unique_ptr<Sampler> sampler;
  size_t prompt_done = 0;   // prompt tokens submitted (or reused from the cache)
  int32_t next_token = -1;  // sampled, to be evaluated next
  int64_t generated = 0;
  int64_t reused = 0;
  Utf8Stream utf8;
  StopMatcher stop{{}};
  bool decoding() const { return prompt_done == req.prompt.size(); }
};

Scheduler::Scheduler(Pipeline& pipeline, const model::Tokenizer& tokenizer, SchedulerOptions opts)
    : pipe_(pipeline), tok_(tokenizer), opts_(opts) {
  if (opts_.n_batch < 1) throw std::invalid_argument("batch size must be >= 1");
  if (opts_.max_queue < 0) throw std::invalid_argument("queue length must be >= 0");
  const int64_t n_stages = std::max<int64_t>(1, pipe_.n_stages());
  micro_batches_ = static_cast<int>(opts_.micro_batches > 0 ? opts_.micro_batches : n_stages);
  micro_batches_ = static_cast<int>(std::clamp<int64_t>(micro_batches_, 1, pipe_.n_seq()));
  for (int32_t i = 0; i < pipe_.n_seq(); ++i) {
    slots_.push_back(std::make_unique<Slot>());
    slots_.back()->id = i;
  }
  stats_.slots_total = pipe_.n_seq();
  stats_.kv_cells_total = pipe_.n_seq() * pipe_.n_ctx();
  stats_.tokens_per_second.assign(kRateWindow, 0.0);
  stats_.pipeline = pipe_.status();
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() { shutdown(); }

void Scheduler::shutdown() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // Whoever still waits gets an answer (submit() takes nothing new once stop_ is set).
  const StreamEvent bye{{}, true, "", "the server is shutting down", 0, 0, 0};
  for (auto& s : slots_)
    if (s->active) {
      s->active = false;
      s->stream->finish(bye);
    }
  std::deque<Queued> left;
  {
    std::lock_guard lk(mu_);
    left.swap(queue_);
  }
  for (auto& q : left) q.stream->finish(bye);
}

std::shared_ptr<RequestStream> Scheduler::submit(GenerationRequest req) {
  const int64_t n_ctx = pipe_.n_ctx();
  const int64_t n_vocab = pipe_.config().n_vocab;
  if (req.prompt.empty()) throw std::invalid_argument("empty prompt (nothing to evaluate)");
  for (const int32_t t : req.prompt)
    if (t < 0 || t >= n_vocab)
      throw std::invalid_argument("token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                                  std::to_string(n_vocab) + ")");
  if (static_cast<int64_t>(req.prompt.size()) >= n_ctx)
    throw std::length_error("the prompt is " + std::to_string(req.prompt.size()) + " tokens but the context holds " +
                            std::to_string(n_ctx) + " (leave room to generate)");
  if (req.max_tokens < 0) throw std::invalid_argument("max_tokens must be >= 0");
  validate(req.sampling);
  auto stream = std::make_shared<RequestStream>();
  if (req.max_tokens == 0) {  // nothing to generate: the prompt's size is all there is to say
    stream->finish(StreamEvent{{}, true, "length", "", static_cast<int64_t>(req.prompt.size()), 0, 0});
    return stream;
  }
  {
    std::lock_guard lk(mu_);
    if (stop_) return nullptr;
    // Slots busy or about to be, plus the queue: what is admitted but not finished.
    if (static_cast<int64_t>(queue_.size()) + busy_ >= static_cast<int64_t>(slots_.size()) + opts_.max_queue)
      return nullptr;
    queue_.push_back({std::move(req), stream});
    stats_.queue_length = static_cast<int64_t>(queue_.size());
  }
  cv_.notify_all();
  return stream;
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lk(mu_);
  SchedulerStats s = stats_;
  advance_window(s.tokens_per_second, second_, clock_second());  // the last entry is the current second
  return s;
}

void Scheduler::count_tokens(int64_t n) {
  const int64_t now = clock_second();
  std::lock_guard lk(mu_);
  auto& r = stats_.tokens_per_second;
  if (second_ < 0) second_ = now;
  advance_window(r, second_, now);
  second_ = std::max(second_, now);
  r.back() += static_cast<double>(n);
  stats_.generated_tokens_total += static_cast<uint64_t>(n);
}

void Scheduler::admit() {
  std::lock_guard lk(mu_);
  while (!queue_.empty()) {
    // The free slot whose cached tokens share the longest prefix with the prompt.
    const std::vector<int32_t>& prompt = queue_.front().req.prompt;
    Slot* best = nullptr;
    size_t best_common = 0;
    for (auto& s : slots_) {
      if (s->active) continue;
      const std::vector<int32_t>& c = pipe_.cached(s->id);
      size_t n = 0;
      while (n < c.size() && n < prompt.size() && c[n] == prompt[n]) ++n;
      if (!best || n > best_common) {
        best = s.get();
        best_common = n;
      }
    }
    if (!best) return;
    Queued q = std::move(queue_.front());
    queue_.pop_front();
    Slot& s = *best;
    s.active = true;
    s.in_flight = false;
    s.stream = std::move(q.stream);
    s.req = std::move(q.req);
    s.sampler = std::make_unique<Sampler>(s.req.sampling, static_cast<int32_t>(pipe_.config().n_vocab));
    for (const int32_t id : s.req.prompt) s.sampler->accept(id);  // the penalty window sees the prompt, as Generator's
    // Always evaluate at least the last prompt token: its logits are what the first sample comes from.
    s.prompt_done = std::min(best_common, s.req.prompt.size() - 1);
    s.reused = static_cast<int64_t>(s.prompt_done);
    s.next_token = -1;
    s.generated = 0;
    s.utf8 = Utf8Stream();
    s.stop = StopMatcher(s.req.stop);
    ++busy_;
    stats_.slots_busy = busy_;
    stats_.queue_length = static_cast<int64_t>(queue_.size());
    stats_.prompt_tokens_total += s.req.prompt.size();
    stats_.prompt_tokens_evaluated += s.req.prompt.size() - s.prompt_done;
  }
}

bool Scheduler::build_and_submit() {
  std::vector<Slot*> decoders, prefillers;
  int64_t decoding_total = 0;
  for (auto& s : slots_) {
    if (!s->active) continue;
    if (s->decoding()) ++decoding_total;
    if (s->in_flight) continue;
    (s->decoding() ? decoders : prefillers).push_back(s.get());
  }
  if (decoders.empty() && prefillers.empty()) return false;
  // Deal the generating sequences into micro_batches_ groups of about equal size.
  const auto cap = static_cast<size_t>((decoding_total + micro_batches_ - 1) / micro_batches_);
  if (decoders.size() > cap) decoders.resize(std::max<size_t>(cap, 1));

  Batch b;
  Flight f;
  std::vector<Sampler*> samplers;
  for (Slot* s : decoders) {
    const auto pos = static_cast<int32_t>(pipe_.cached(s->id).size());
    b.add(s->next_token, pos, s->id, true);
    f.seqs.push_back(s->id);
    f.output.push_back(s->id);
    samplers.push_back(s->sampler.get());
  }
  int64_t budget = opts_.n_batch - static_cast<int64_t>(decoders.size());
  std::vector<std::pair<Slot*, size_t>> chunks;
  for (Slot* s : prefillers) {
    if (budget <= 0) break;
    const size_t left = s->req.prompt.size() - s->prompt_done;
    const size_t n = std::min(left, static_cast<size_t>(budget));
    b.add_run(s->req.prompt.data() + s->prompt_done, static_cast<int64_t>(n), static_cast<int32_t>(s->prompt_done),
              s->id, false);
    const bool last_chunk = n == left;
    b.logits.back() = last_chunk ? 1 : 0;  // a middle chunk of a prompt has nothing to output
    if (last_chunk) {
      f.output.push_back(s->id);
      samplers.push_back(s->sampler.get());
    }
    f.seqs.push_back(s->id);
    chunks.push_back({s, n});
    budget -= static_cast<int64_t>(n);
  }
  if (b.empty()) return false;
  try {
    pipe_.submit(b, samplers);
  } catch (const std::exception& e) {  // the pipeline could not take it (a lost worker that did not come back)
    HERD_LOG_WARN("serve: a step failed to start: ", e.what());
    for (const int32_t id : f.seqs) finish(*slots_[static_cast<size_t>(id)], "", e.what());
    return true;
  }
  for (const int32_t id : f.seqs) slots_[static_cast<size_t>(id)]->in_flight = true;
  for (auto& [s, n] : chunks) s->prompt_done += n;
  flights_.push_back(std::move(f));
  {
    std::lock_guard lk(mu_);
    ++stats_.steps_total;
  }
  return true;
}

void Scheduler::handle(const BatchOutput& out, const Flight& f) {
  for (const int32_t id : f.seqs) slots_[static_cast<size_t>(id)]->in_flight = false;
  if (out.tokens.size() != f.output.size()) {  // never expected: the pipeline broke its contract
    const std::string why = "the pipeline returned " + std::to_string(out.tokens.size()) + " tokens for " +
                            std::to_string(f.output.size()) + " output rows";
    for (const int32_t id : f.seqs)
      if (slots_[static_cast<size_t>(id)]->active) finish(*slots_[static_cast<size_t>(id)], "", why);
    return;
  }
  for (size_t r = 0; r < f.output.size(); ++r) {
    Slot& s = *slots_[static_cast<size_t>(f.output[r])];
    if (s.active && !s.stream->cancelled()) accept_token(s, out.tokens[r]);
  }
  for (const int32_t id : f.seqs) {
    Slot& s = *slots_[static_cast<size_t>(id)];
    if (s.active && s.stream->cancelled()) finish(s, "cancelled");
  }
}

void Scheduler::accept_token(Slot& s, int32_t token) {
  s.sampler->accept(token);
  ++s.generated;
  count_tokens(1);
  if (tok_.is_eog(token)) {
    finish(s, "stop");
    return;
  }
  bool stopped = false;
  s.stream->push_text(s.stop.push(s.utf8.push(tok_.token_to_piece(token)), stopped));
  if (stopped) {
    finish(s, "stop");
    return;
  }
  if (s.generated >= s.req.max_tokens || static_cast<int64_t>(pipe_.cached(s.id).size()) >= pipe_.n_ctx()) {
    finish(s, "length");
    return;
  }
  s.next_token = token;
}

void Scheduler::finish(Slot& s, const std::string& reason, const std::string& error) {
  StreamEvent e;
  e.finish_reason = reason;
  e.error = error;
  e.prompt_tokens = static_cast<int64_t>(s.req.prompt.size());
  e.completion_tokens = s.generated;
  e.reused_tokens = s.reused;
  if (error.empty() && reason != "cancelled") {
    // Held-back bytes: an incomplete character or the start of a stop string that never came.
    bool stopped = false;
    e.text = s.stop.push(s.utf8.flush(), stopped);
    if (reason != "stop" || !stopped) e.text += s.stop.flush();
  }
  {  // the counts first: whoever reads the end of the stream sees them
    std::lock_guard lk(mu_);
    --busy_;
    stats_.slots_busy = busy_;
    if (!error.empty()) ++stats_.requests_failed;
    else if (reason == "cancelled") ++stats_.requests_cancelled;
    else ++stats_.requests_finished;
  }
  s.stream->finish(std::move(e));
  s.active = false;
  s.stream.reset();
  s.sampler.reset();
}

void Scheduler::fail_in_flight(const std::string& error) {
  HERD_LOG_WARN("serve: a step failed: ", error);
  for (const Flight& f : flights_)
    for (const int32_t id : f.seqs) {
      Slot& s = *slots_[static_cast<size_t>(id)];
      s.in_flight = false;
      if (s.active) finish(s, "", error);
    }
  flights_.clear();
}

void Scheduler::refresh_stats() {
  int64_t cells = 0;
  for (int32_t i = 0; i < pipe_.n_seq(); ++i) cells += static_cast<int64_t>(pipe_.cached(i).size());
  PipelineStatus ps = pipe_.status();
  std::lock_guard lk(mu_);
  stats_.kv_cells_used = cells;
  stats_.pipeline = std::move(ps);
}

void Scheduler::loop() {
  auto last_refresh = Clock::now();
  while (true) {
    {
      std::unique_lock lk(mu_);
      if (stop_) break;
    }
    admit();
    for (auto& s : slots_)  // cancelled while waiting for a step: free the slot now
      if (s->active && !s->in_flight && s->stream->cancelled()) finish(*s, "cancelled");
    while (static_cast<int>(flights_.size()) < micro_batches_ && build_and_submit()) {
    }
    if (!flights_.empty()) {
      try {
        std::optional<BatchOutput> out = pipe_.poll(50);
        if (out) {
          const Flight f = std::move(flights_.front());
          flights_.pop_front();
          handle(*out, f);
        }
      } catch (const std::exception& e) {
        fail_in_flight(e.what());
      }
    } else {
      std::unique_lock lk(mu_);
      cv_.wait_for(lk, std::chrono::milliseconds(100), [&] { return stop_ || !queue_.empty(); });
    }
    if (Clock::now() - last_refresh > std::chrono::milliseconds(500)) {
      refresh_stats();
      last_refresh = Clock::now();
    }
  }
}

}  // namespace herd
