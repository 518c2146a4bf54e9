#include "coordinator/bench_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <stdexcept>

#include "engine/tp_pipeline.h"

namespace herd {
namespace {

// llama.cpp ftype ids (general.file_type) of the mixes herd writes or reads.
const char* ftype_name(int64_t ft) {
  switch (ft) {
    case 0: return "F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 7: return "Q8_0";
    case 8: return "Q5_0";
    case 9: return "Q5_1";
    case 10: return "Q2_K";
    case 11: return "Q3_K_S";
    case 12: return "Q3_K_M";
    case 13: return "Q3_K_L";
    case 14: return "Q4_K_S";
    case 15: return "Q4_K_M";
    case 16: return "Q5_K_S";
    case 17: return "Q5_K_M";
    case 18: return "Q6_K";
    case 32: return "BF16";
    default: return nullptr;
  }
}

std::string human_count(uint64_t n) {
  char buf[32];
  if (n >= 1000000000ull) std::snprintf(buf, sizeof buf, "%.2f B", n / 1e9);
  else if (n >= 1000000ull) std::snprintf(buf, sizeof buf, "%.2f M", n / 1e6);
  else std::snprintf(buf, sizeof buf, "%.2f K", n / 1e3);
  return buf;
}

std::string human_bytes(uint64_t b) {
  char buf[32];
  if (b >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", b / 1073741824.0);
  else if (b >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", b / 1048576.0);
  else std::snprintf(buf, sizeof buf, "%.2f KiB", b / 1024.0);
  return buf;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      o += '\\';
      o += static_cast<char>(ch);
    } else if (ch < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", ch);
      o += buf;
    } else {
      o += static_cast<char>(ch);
    }
  }
  return o;
}

// Deterministic token ids (not BOS/EOS-heavy): what is evaluated does not change the cost.
std::vector<int32_t> bench_tokens(int64_t n, int32_t n_vocab, int32_t bos) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  uint64_t s = 0x2545F4914F6CDD1Dull;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    t[static_cast<size_t>(i)] = static_cast<int32_t>((s >> 33) % static_cast<uint64_t>(n_vocab));
  }
  if (n > 0 && bos >= 0) t[0] = bos;
  return t;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

BenchModelInfo bench_model_info(const ModelSession& s) {
  BenchModelInfo m;
  m.path = s.file->path();
  std::map<DType, uint64_t> by_type;
  uint64_t embd_bytes = 0, embd_row = 0;
  for (const auto& t : s.file->tensors()) {
    m.size_bytes += t.n_bytes;
    m.n_params += static_cast<uint64_t>(t.n_elements());
    if (t.ne.size() >= 2) by_type[t.type] += t.n_bytes;
    if (t.name == "token_embd.weight") {
      embd_bytes = t.n_bytes;
      embd_row = t.ne.size() >= 2 && t.ne[1] > 0 ? t.n_bytes / static_cast<uint64_t>(t.ne[1]) : t.n_bytes;
    }
  }
  // Untied: the table itself is only gathered from (one row); tied: it is also the output matrix.
  m.bytes_per_token = s.config.tied_embeddings ? m.size_bytes + embd_row : m.size_bytes - embd_bytes + embd_row;
  const auto ft = s.file->get_int("general.file_type");
  if (const char* n = ft ? ftype_name(*ft) : nullptr) {
    m.type = n;
  } else {
    DType best = DType::F32;
    uint64_t most = 0;
    for (const auto& [t, b] : by_type)
      if (b > most) most = b, best = t;
    m.type = "mostly " + std::string(dtype_name(best));
  }
  std::string params = human_count(m.n_params);
  params.erase(std::remove(params.begin(), params.end(), ' '), params.end());
  m.description = s.config.arch + " " + params + " " + m.type;
  return m;
}

std::vector<double> BenchResult::tokens_per_second() const {
  const double n = static_cast<double>(n_prompt + n_gen);
  std::vector<double> r;
  for (double s : seconds) r.push_back(s > 0 ? n / s : 0.0);
  return r;
}

double BenchResult::median_ts() const {
  auto v = tokens_per_second();
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t k = v.size() / 2;
  return v.size() % 2 ? v[k] : 0.5 * (v[k - 1] + v[k]);
}

double BenchResult::spread_ts() const {
  const auto v = tokens_per_second();
  if (v.empty()) return 0;
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return 0.5 * (*hi - *lo);
}

double BenchResult::mean_ts() const {
  const auto v = tokens_per_second();
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

double BenchResult::stddev_ts() const {
  const auto v = tokens_per_second();
  if (v.size() < 2) return 0;
  const double m = mean_ts();
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

std::vector<BenchResult> run_bench(ModelSession& s, const BenchParams& p,
                                   const std::function<void(const BenchResult&)>& on_result) {
  if (p.reps <= 0) throw std::invalid_argument("bench: repetitions must be positive");
  if (p.n_prompt < 0 || p.n_gen < 0) throw std::invalid_argument("bench: token counts must be >= 0");
  Pipeline& pipe = *s.pipeline;
  for (const int n : p.parallel)
    if (n < 1 || n > pipe.n_seq())
      throw std::invalid_argument("bench: --parallel " + std::to_string(n) + " needs 1.." + std::to_string(pipe.n_seq()) +
                                  " sequence slots");
  if (std::max(p.n_prompt, p.n_gen) > pipe.n_ctx())
    throw std::invalid_argument("bench: " + std::to_string(std::max(p.n_prompt, p.n_gen)) +
                                " tokens do not fit the context of " + std::to_string(pipe.n_ctx()));
  const auto n_vocab = static_cast<int32_t>(s.config.n_vocab);
  const std::vector<int32_t> pp_tokens = bench_tokens(p.n_prompt, n_vocab, s.tokenizer->bos_id());
  const std::vector<int32_t> tg_tokens = bench_tokens(std::max<int64_t>(p.n_gen, 1), n_vocab, s.tokenizer->bos_id());
  std::vector<float> logits;

  auto run_pp = [&] { pipe.eval(pp_tokens.data(), p.n_prompt, 0, false, logits); };
  // Generation as Generator runs it: evaluate and sample (greedy) in one step, so a cluster's last
  // stage returns a token id, not a logits row. The sampled id is not fed back (fixed inputs).
  SamplerParams greedy;
  greedy.temperature = 0.0f;
  Sampler sampler(greedy, n_vocab);
  auto run_tg = [&](int64_t n) {
    for (int64_t i = 0; i < n; ++i) (void)pipe.eval_sample(&tg_tokens[static_cast<size_t>(i)], 1, i, sampler);
  };

  // N sequences decoding together: each step of a group is one batch (a row per sequence at the
  // same position, fixed inputs as above); groups are resubmitted as soon as their step comes back,
  // so with G groups in flight every stage of a cluster has work.
  auto run_parallel = [&](int n_seq, int groups, int64_t n) {
    std::vector<Sampler> samplers(static_cast<size_t>(n_seq), sampler);
    std::vector<std::vector<Sampler*>> group_samplers(static_cast<size_t>(groups));
    for (int q = 0; q < n_seq; ++q) group_samplers[static_cast<size_t>(q % groups)].push_back(&samplers[q]);
    std::map<uint64_t, int> ticket_group;
    std::vector<int64_t> step(static_cast<size_t>(groups), 0);
    Batch b;
    auto submit = [&](int g) {
      b.clear();
      const int64_t i = step[static_cast<size_t>(g)];
      for (int q = g; q < n_seq; q += groups) b.add(tg_tokens[static_cast<size_t>(i)], static_cast<int32_t>(i), q, true);
      ticket_group[pipe.submit(b, group_samplers[static_cast<size_t>(g)])] = g;
    };
    for (int g = 0; g < groups; ++g) submit(g);
    while (pipe.in_flight() > 0) {
      std::optional<BatchOutput> o = pipe.poll(-1);
      if (!o) continue;
      const int g = ticket_group.at(o->ticket);
      ticket_group.erase(o->ticket);
      if (++step[static_cast<size_t>(g)] < n) submit(g);
    }
  };

  std::vector<BenchResult> out;
  for (int threads : p.threads) {
    const int nt = threads > 0 ? threads : default_threads();
    s.backend->set_threads(nt);
    if (auto* tp = dynamic_cast<TpPipeline*>(s.pipeline.get())) tp->set_threads(nt);  // max(1, nt / ranks) each
    for (int which = 0; which < 2; ++which) {
      const bool pp = which == 0;
      if ((pp ? p.n_prompt : p.n_gen) == 0) continue;
      if (!pp && !p.parallel.empty()) continue;  // the tg rows are the --parallel ones (x1 = this one)
      BenchResult r;
      r.n_threads = nt;
      r.n_prompt = pp ? p.n_prompt : 0;
      r.n_gen = pp ? 0 : p.n_gen;
      r.test = (pp ? "pp" : "tg") + std::to_string(pp ? p.n_prompt : p.n_gen);
      if (p.warmup) pp ? run_pp() : run_tg(std::min<int64_t>(p.n_gen, 2));
      for (int rep = 0; rep < p.reps; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        pp ? run_pp() : run_tg(p.n_gen);
        r.seconds.push_back(seconds_since(t0));
      }
      if (on_result) on_result(r);
      out.push_back(std::move(r));
    }
    // The --parallel rows are measured in rounds (every N once per round, in order), so that the
    // machine's drift over the run touches every row alike: their ratios are paired comparisons.
    std::vector<BenchResult> rows;
    for (const int n_seq : p.parallel) {
      if (p.n_gen == 0) break;
      BenchResult r;
      r.n_threads = nt;
      r.n_gen = p.n_gen * n_seq;
      r.n_seq = n_seq;
      r.micro_batches = std::min(n_seq, p.micro_batches > 0 ? p.micro_batches : std::max(1, p.n_stages));
      r.test = "tg" + std::to_string(p.n_gen) + " x" + std::to_string(n_seq);
      if (p.warmup) run_parallel(n_seq, r.micro_batches, std::min<int64_t>(p.n_gen, 2));
      rows.push_back(std::move(r));
    }
    for (int rep = 0; rep < p.reps; ++rep)
      for (BenchResult& r : rows) {
        const auto t0 = std::chrono::steady_clock::now();
        run_parallel(r.n_seq, r.micro_batches, p.n_gen);
        r.seconds.push_back(seconds_since(t0));
      }
    for (BenchResult& r : rows) {
      if (on_result) on_result(r);
      out.push_back(std::move(r));
    }
  }
  return out;
}

std::string bench_table_header() {
  char buf[512];
  std::snprintf(buf, sizeof buf, "| %-30s | %10s | %10s | %-14s | %7s | %10s | %20s |\n", "model", "size", "params",
                "backend", "threads", "test", "t/s");
  std::string h = buf;
  h += "| ------------------------------ | ---------: | ---------: | -------------- | ------: | ---------: | "
       "-------------------: |\n";
  return h;
}

std::string bench_table_row(const BenchModelInfo& m, const std::string& backend, const BenchResult& r) {
  char ts[64], buf[512];
  std::snprintf(ts, sizeof ts, "%.2f ± %.2f", r.median_ts(), r.spread_ts());
  // "±" is two bytes in UTF-8: one more byte of field width keeps the column aligned.
  std::snprintf(buf, sizeof buf, "| %-30s | %10s | %10s | %-14s | %7d | %10s | %21s |\n", m.description.c_str(),
                human_bytes(m.size_bytes).c_str(), human_count(m.n_params).c_str(), backend.c_str(), r.n_threads,
                r.test.c_str(), ts);
  return buf;
}

std::string bench_json_row(const BenchModelInfo& m, const std::string& backend, const BenchResult& r) {
  auto num = [](double x) {
    char b[40];
    std::snprintf(b, sizeof b, "%.6g", std::isfinite(x) ? x : 0.0);
    return std::string(b);
  };
  auto list = [&](const std::vector<double>& v, double scale, bool integer) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) s += ", ";
      s += integer ? std::to_string(static_cast<long long>(std::llround(v[i] * scale))) : num(v[i] * scale);
    }
    return s + "]";
  };
  std::string j = "{";
  j += "\"model_filename\": \"" + json_escape(m.path) + "\"";
  j += ", \"model\": \"" + json_escape(m.description) + "\"";
  j += ", \"model_type\": \"" + json_escape(m.type) + "\"";
  j += ", \"model_size\": " + std::to_string(m.size_bytes);
  j += ", \"model_n_params\": " + std::to_string(m.n_params);
  j += ", \"weights_bytes_per_token\": " + std::to_string(m.bytes_per_token);
  j += ", \"backend\": \"" + json_escape(backend) + "\"";
  j += ", \"n_threads\": " + std::to_string(r.n_threads);
  j += ", \"test\": \"" + r.test + "\"";
  j += ", \"n_prompt\": " + std::to_string(r.n_prompt);
  j += ", \"n_gen\": " + std::to_string(r.n_gen);
  j += ", \"n_seq\": " + std::to_string(r.n_seq);
  j += ", \"micro_batches\": " + std::to_string(r.micro_batches);
  j += ", \"reps\": " + std::to_string(r.seconds.size());
  j += ", \"samples_ns\": " + list(r.seconds, 1e9, true);
  j += ", \"samples_ts\": " + list(r.tokens_per_second(), 1.0, false);
  j += ", \"median_ts\": " + num(r.median_ts());
  j += ", \"spread_ts\": " + num(r.spread_ts());
  j += ", \"avg_ts\": " + num(r.mean_ts());
  j += ", \"stddev_ts\": " + num(r.stddev_ts());
  j += "}\n";
  return j;
}

}  // namespace herd
