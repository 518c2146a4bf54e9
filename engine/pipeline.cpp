#include "engine/pipeline.h"

#include <chrono>
#include <sstream>
#include <stdexcept>
#include <string>

#include "model/gguf.h"

namespace herd {

uint64_t Pipeline::submit(const Batch& b, std::span<Sampler* const> samplers) {
  if (seq_tokens_.size() != static_cast<size_t>(n_seq())) seq_tokens_.resize(static_cast<size_t>(n_seq()));
  std::vector<SeqRun> runs;
  require_runs(b, n_seq(), n_ctx(), runs);
  if (b.tokens.size() != b.pos.size()) throw std::invalid_argument("batch has no token ids");
  for (const int32_t t : b.tokens)
    if (t < 0 || t >= config().n_vocab)
      throw std::out_of_range("token id " + std::to_string(t) + " outside the vocabulary (" +
                              std::to_string(config().n_vocab) + ")");
  for (const SeqRun& r : runs)
    if (r.pos0 > static_cast<int64_t>(seq_tokens_[r.seq].size()))
      throw std::invalid_argument("sequence " + std::to_string(r.seq) + " continues at position " +
                                  std::to_string(r.pos0) + " but only " +
                                  std::to_string(seq_tokens_[r.seq].size()) + " positions are cached");
  const int64_t n_out = b.n_outputs();
  if (!samplers.empty() && static_cast<int64_t>(samplers.size()) != n_out)
    throw std::invalid_argument(std::to_string(samplers.size()) + " samplers for " + std::to_string(n_out) +
                                " output rows");
  std::vector<RowSample> samples;
  for (Sampler* s : samplers) samples.push_back({s, s->next_draw()});

  const uint64_t ticket = next_ticket_++;
  InFlight f{ticket, {}};
  for (const SeqRun& r : runs) f.starts.push_back({r.seq, r.pos0});
  try {
    do_submit(ticket, b, std::move(samples));
  } catch (...) {  // the stages may have dropped positions >= pos0 of these sequences
    for (const SeqRun& r : runs) cut(r.seq, r.pos0);
    throw;
  }
  for (const SeqRun& r : runs) {
    auto& toks = seq_tokens_[r.seq];
    toks.resize(static_cast<size_t>(r.pos0));
    toks.insert(toks.end(), b.tokens.begin() + r.begin, b.tokens.begin() + r.end);
  }
  tickets_.push_back(std::move(f));
  return ticket;
}

std::optional<BatchOutput> Pipeline::poll(int timeout_ms) {
  if (tickets_.empty()) return std::nullopt;
  std::optional<BatchOutput> out;
  try {
    out = do_poll(timeout_ms);
  } catch (...) {
    rewind_failed();
    throw;
  }
  if (out) tickets_.pop_front();
  return out;
}

void Pipeline::rewind_failed() {
  // Every batch in flight is lost with the failure: its sequences hold at most what they held
  // before it (the earliest start of each sequence wins).
  for (auto it = tickets_.rbegin(); it != tickets_.rend(); ++it)
    for (const auto& [seq, pos0] : it->starts) cut(seq, pos0);
  tickets_.clear();
}

void Pipeline::cut(int32_t seq, int32_t pos0) {
  auto& toks = seq_tokens_[static_cast<size_t>(seq)];
  if (toks.size() > static_cast<size_t>(pos0)) toks.resize(static_cast<size_t>(pos0));
}

BatchOutput Pipeline::eval(const Batch& b, std::span<Sampler* const> samplers) {
  const uint64_t ticket = submit(b, samplers);
  while (true) {
    std::optional<BatchOutput> o = poll(-1);
    if (o && o->ticket == ticket) return std::move(*o);
  }
}

void Pipeline::eval(const int32_t* tokens, int64_t n, int64_t pos0, bool all_logits, std::vector<float>& logits) {
  if (n <= 0) throw std::invalid_argument("eval: no tokens");
  one_.clear();
  one_.add_run(tokens, n, static_cast<int32_t>(pos0), 0, all_logits);
  logits = eval(one_).logits;
}

int32_t Pipeline::eval_sample(const int32_t* tokens, int64_t n, int64_t pos0, Sampler& sampler, int32_t seq) {
  if (n <= 0) throw std::invalid_argument("eval: no tokens");
  one_.clear();
  one_.add_run(tokens, n, static_cast<int32_t>(pos0), seq, false);
  Sampler* s[] = {&sampler};
  return eval(one_, s).tokens.at(0);
}

const std::vector<int32_t>& Pipeline::cached(int32_t seq) const {
  static const std::vector<int32_t> none;
  return static_cast<size_t>(seq) < seq_tokens_.size() ? seq_tokens_[static_cast<size_t>(seq)] : none;
}

void Pipeline::forget(int32_t seq) {
  if (static_cast<size_t>(seq) < seq_tokens_.size()) seq_tokens_[static_cast<size_t>(seq)].clear();
}

void PipelineStats::reset(std::vector<StageStatus> stages, size_t n_hops) {
  std::lock_guard<std::mutex> lock(mu_);
  s_ = PipelineStatus{};
  s_.stages = std::move(stages);
  s_.hop_ms.assign(n_hops, 0.0);
}

int PipelineStats::add_observer(BatchObserver o) {
  std::lock_guard<std::mutex> lock(mu_);
  observers_.emplace_back(next_observer_, std::move(o));
  return next_observer_++;
}

void PipelineStats::remove_observer(int id) {
  std::lock_guard<std::mutex> lock(mu_);
  std::erase_if(observers_, [id](const auto& o) { return o.first == id; });
}

void PipelineStats::record(std::span<const double> compute_ms, std::span<const double> overhead_ms,
                           std::span<const double> hop_ms, double batch_ms,
                           std::chrono::steady_clock::time_point submitted, int64_t rows) {
  std::vector<std::pair<int, BatchObserver>> observers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    record_locked(compute_ms, overhead_ms, hop_ms, batch_ms);
    observers = observers_;
  }
  if (observers.empty()) return;
  const BatchTimes t{submitted, rows, {compute_ms.begin(), compute_ms.end()},
                     {overhead_ms.begin(), overhead_ms.end()}, {hop_ms.begin(), hop_ms.end()}, batch_ms};
  for (const auto& [id, o] : observers) o(t);
}

void PipelineStats::record_locked(std::span<const double> compute_ms, std::span<const double> overhead_ms,
                                  std::span<const double> hop_ms, double batch_ms) {
  if (compute_ms.size() != s_.stages.size() || hop_ms.size() != s_.hop_ms.size() ||
      (!overhead_ms.empty() && overhead_ms.size() != s_.stages.size()))
    throw std::logic_error("PipelineStats::record: times for another layout");
  const bool first = s_.batches == 0;
  auto mean = [first](double& m, double x) { m = first ? x : m + kAlpha * (x - m); };
  for (size_t i = 0; i < compute_ms.size(); ++i) {
    mean(s_.stages[i].compute_ms, compute_ms[i]);
    if (!overhead_ms.empty()) mean(s_.stages[i].overhead_ms, overhead_ms[i]);
  }
  for (size_t h = 0; h < hop_ms.size(); ++h) mean(s_.hop_ms[h], hop_ms[h]);
  mean(s_.batch_ms, batch_ms);
  ++s_.batches;
}

PipelineStatus PipelineStats::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return s_;
}

LocalPipeline::LocalPipeline(const model::GgufFile& f, const model::ModelConfig& c, Backend& backend,
                             const KvOptions& kv, std::vector<model::LayerRange> ranges)
    : config_(c), kv_(kv) {
  if (kv.n_ctx <= 0) throw std::invalid_argument("context size must be positive");
  if (kv.n_seq <= 0) throw std::invalid_argument("--parallel must be at least 1");
  if (ranges.empty()) ranges.push_back({0, c.n_layers, true, true});
  for (size_t i = 0; i < ranges.size(); ++i) {
    ranges[i].embedding = i == 0;
    ranges[i].output = i + 1 == ranges.size();
    stages_.push_back(std::make_unique<Stage>(c, model::load_stage_weights(f, c, ranges[i]), backend, kv));
  }
  std::vector<StageStatus> st;
  for (size_t i = 0; i < ranges.size(); ++i)
    st.push_back({"local", backend.description(), ranges[i].first, ranges[i].end,
                  model::stage_weight_bytes(f, c, ranges[i]) + stages_[i]->cache().bytes()});
  stats_.reset(std::move(st), 0);
  compute_ms_.assign(stages_.size(), 0.0);
}

void LocalPipeline::do_submit(uint64_t ticket, const Batch& b, std::vector<RowSample> samples) {
  // In this process the stages run one after another at once; poll() hands the result back.
  // Each stage's forward is timed (steady_clock); sampling counts to the last stage, as on a cluster.
  using Clock = std::chrono::steady_clock;
  auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  const auto start = Clock::now();
  const float* in = nullptr;
  BatchOutput out{ticket, {}, {}};
  for (size_t i = 0; i < stages_.size(); ++i) {
    const bool last = i + 1 == stages_.size();
    std::vector<float>& o = last ? out.logits : (i % 2 ? hidden_b_ : hidden_a_);
    o.resize(static_cast<size_t>(stages_[i]->output_floats(b)));
    const auto t0 = Clock::now();
    stages_[i]->forward(b, in, o.data());
    compute_ms_[i] = ms(Clock::now() - t0);
    in = o.data();
  }
  if (!samples.empty()) {
    const auto t0 = Clock::now();
    for (size_t r = 0; r < samples.size(); ++r)
      out.tokens.push_back(samples[r].sampler->sample_with_draw(out.logits.data() + r * config_.n_vocab,
                                                                samples[r].draw));
    out.logits.clear();
    compute_ms_.back() += ms(Clock::now() - t0);
  }
  done_.push_back(std::move(out));
  stats_.record(compute_ms_, {}, {}, ms(Clock::now() - start), start, b.size());
}

std::optional<BatchOutput> LocalPipeline::do_poll(int) {
  if (done_.empty()) throw std::logic_error("LocalPipeline: poll without a batch in flight");
  BatchOutput o = std::move(done_.front());
  done_.pop_front();
  return o;
}

std::vector<model::LayerRange> parse_split(const std::string& spec, int64_t n_layers) {
  std::vector<model::LayerRange> out;
  std::stringstream ss(spec);
  std::string part;
  int64_t next = 0;
  while (std::getline(ss, part, ',')) {
    int64_t a = 0, b = 0;
    char dash = 0, extra = 0;
    std::istringstream ps(part);
    if (!(ps >> a >> dash >> b) || dash != '-' || (ps >> extra))
      throw std::invalid_argument("bad --split part '" + part + "' (expected FIRST-LAST, e.g. 0-9)");
    if (a != next)
      throw std::invalid_argument("--split part '" + part + "' must start at layer " + std::to_string(next) +
                                  " (ranges are contiguous and in order)");
    if (b < a) throw std::invalid_argument("--split part '" + part + "' is empty or reversed");
    if (b >= n_layers)
      throw std::invalid_argument("--split part '" + part + "' goes past the model's last layer " +
                                  std::to_string(n_layers - 1));
    out.push_back({a, b + 1, false, false});
    next = b + 1;
  }
  if (next != n_layers)
    throw std::invalid_argument("--split '" + spec + "' covers layers 0-" + std::to_string(next - 1) + " of 0-" +
                                std::to_string(n_layers - 1));
  out.front().embedding = true;
  out.back().output = true;
  return out;
}

}  // namespace herd
