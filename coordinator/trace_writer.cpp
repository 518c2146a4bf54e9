#include "coordinator/trace_writer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace herd {
namespace {

constexpr int kCoordinatorTid = 1;
int stage_tid(size_t i) { return 100 + static_cast<int>(i); }
int hop_tid(size_t h) { return 1000 + static_cast<int>(h); }

std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else {
      o += c;
    }
  }
  return o + "\"";
}

}  // namespace

TraceWriter::TraceWriter(const std::string& path, Pipeline& pipe) : pipe_(pipe), t0_(std::chrono::steady_clock::now()) {
  f_ = std::fopen(path.c_str(), "w");
  if (!f_) throw std::runtime_error("--trace " + path + ": cannot write: " + std::strerror(errno));
  std::fputs("[\n", f_);
  std::fprintf(f_, R"({"ph":"M","name":"process_name","pid":1,"tid":0,"args":{"name":"herd"}})");
  std::fprintf(f_, ",\n" R"({"ph":"M","name":"thread_name","pid":1,"tid":%d,"args":{"name":"coordinator"}})",
               kCoordinatorTid);
  observer_ = pipe_.add_observer([this](const BatchTimes& t) { on_batch(t); });
}

TraceWriter::~TraceWriter() {
  pipe_.remove_observer(observer_);
  std::lock_guard lk(mu_);
  std::fputs("\n]\n", f_);
  std::fclose(f_);
}

uint64_t TraceWriter::batches() const {
  std::lock_guard lk(mu_);
  return batches_;
}

void TraceWriter::name_tracks(size_t n_stages, size_t n_hops) {
  // Tracks are named as they first appear (a reconnect may change the layout; names then follow
  // the newest one).
  const PipelineStatus st = pipe_.status();
  for (size_t i = named_stages_; i < n_stages; ++i) {
    std::string name = "stage " + std::to_string(i);
    if (i < st.stages.size())
      name += " " + st.stages[i].name + " (layers " + std::to_string(st.stages[i].first_layer) + "-" +
              std::to_string(st.stages[i].end_layer - 1) + ")";
    std::fprintf(f_, ",\n" R"({"ph":"M","name":"thread_name","pid":1,"tid":%d,"args":{"name":%s}})", stage_tid(i),
                 json_string(name).c_str());
    std::fprintf(f_, ",\n" R"({"ph":"M","name":"thread_sort_index","pid":1,"tid":%d,"args":{"sort_index":%d}})",
                 stage_tid(i), 2 * static_cast<int>(i) + 3);
  }
  for (size_t h = named_hops_; h < n_hops; ++h) {
    const std::string from = h == 0 ? "coordinator" : "stage " + std::to_string(h - 1);
    const std::string to = h + 1 == n_hops ? "coordinator" : "stage " + std::to_string(h);
    std::fprintf(f_, ",\n" R"({"ph":"M","name":"thread_name","pid":1,"tid":%d,"args":{"name":%s}})", hop_tid(h),
                 json_string("link " + from + " -> " + to).c_str());
    std::fprintf(f_, ",\n" R"({"ph":"M","name":"thread_sort_index","pid":1,"tid":%d,"args":{"sort_index":%d}})",
                 hop_tid(h), 2 * static_cast<int>(h) + 2);
  }
  named_stages_ = std::max(named_stages_, n_stages);
  named_hops_ = std::max(named_hops_, n_hops);
}

void TraceWriter::event(const char* name, int tid, double ts_us, double dur_us, const std::string& args) {
  std::fprintf(f_, ",\n" R"({"ph":"X","name":"%s","pid":1,"tid":%d,"ts":%.3f,"dur":%.3f,"args":{%s}})", name, tid,
               ts_us, dur_us < 0 ? 0.0 : dur_us, args.c_str());
}

void TraceWriter::on_batch(const BatchTimes& t) {
  std::lock_guard lk(mu_);
  if (t.compute_ms.size() > named_stages_ || t.hop_ms.size() > named_hops_)
    name_tracks(t.compute_ms.size(), t.hop_ms.size());
  ++batches_;
  double ts = std::chrono::duration<double, std::micro>(t.submitted - t0_).count();
  const std::string rows = "\"rows\":" + std::to_string(t.rows) + ",\"batch\":" + std::to_string(batches_);
  event("batch", kCoordinatorTid, ts, t.batch_ms * 1e3, rows);
  for (size_t i = 0; i < t.compute_ms.size(); ++i) {
    if (i < t.hop_ms.size()) {
      event("transfer", hop_tid(i), ts, t.hop_ms[i] * 1e3, rows);
      ts += t.hop_ms[i] * 1e3;
    }
    if (i < t.overhead_ms.size() && t.overhead_ms[i] > 0) {
      event("overhead", stage_tid(i), ts, t.overhead_ms[i] * 1e3, rows);
      ts += t.overhead_ms[i] * 1e3;
    }
    event("compute", stage_tid(i), ts, t.compute_ms[i] * 1e3, rows);
    ts += t.compute_ms[i] * 1e3;
  }
  if (t.hop_ms.size() > t.compute_ms.size()) event("transfer", hop_tid(t.hop_ms.size() - 1), ts, t.hop_ms.back() * 1e3, rows);
  std::fflush(f_);
}

}  // namespace herd
