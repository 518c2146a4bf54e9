#include "coordinator/setup_progress.h"

#include <cstdio>

#include "common/log.h"

namespace herd {
namespace {

std::string mib(uint64_t bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", static_cast<double>(bytes) / 1048576.0);
  return b;
}

std::string strip_scheme(const std::string& address) {
  const auto at = address.find("://");
  return at == std::string::npos ? address : address.substr(at + 3);
}

}  // namespace

SetupProgress::SetupProgress(bool enabled, bool tty, std::FILE* out)
    : enabled_(enabled && notes_shown()), tty_(tty), out_(out) {}

void SetupProgress::show(const std::string& line, bool final) {
  if (!tty_) {
    std::fprintf(out_, "%s\n", line.c_str());
    std::fflush(out_);
    return;
  }
  // Pad over what the previous in-place line left on the terminal.
  std::string out = "\r" + line;
  if (line.size() < shown_len_) out.append(shown_len_ - line.size(), ' ');
  if (final) out += "\n";
  std::fputs(out.c_str(), out_);
  std::fflush(out_);
  shown_len_ = final ? 0 : line.size();
}

void SetupProgress::assigning(const std::string& who, const std::string& layers) {
  who_.clear();
  if (!enabled_ || !tty_) return;
  show("herd: loading " + layers + " on " + strip_scheme(who) + " ...", false);
}

void SetupProgress::sent(const std::string& who, uint64_t done, uint64_t total) {
  if (!enabled_ || total == 0) return;
  const auto now = Clock::now();
  if (who != who_) {
    who_ = who;
    quarters_ = 0;
    t0_ = now;
    last_ = Clock::time_point{};
  }
  done_ = done;
  const int pct = static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total));
  const std::string line = "herd: sending weights to " + strip_scheme(who) + ": " + std::to_string(pct) + "% (" +
                           mib(done) + " / " + mib(total) + " MiB)";
  if (tty_) {
    if (done < total && now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    show(line, false);
    return;
  }
  const int q = static_cast<int>(4 * done / total);  // 25% steps; the last one is stage_done's line
  if (q > quarters_ && q < 4) {
    quarters_ = q;
    show(line, true);
  }
}

void SetupProgress::stage_done(const std::string& who) {
  if (!enabled_) return;
  if (who == who_ && done_ > 0) {
    const double s = std::chrono::duration<double>(Clock::now() - t0_).count();
    char rate[48];
    std::snprintf(rate, sizeof rate, " in %.1f s (%.1f MB/s)", s, s > 0 ? static_cast<double>(done_) / s / 1e6 : 0.0);
    show("herd: sent " + mib(done_) + " MiB of weights to " + strip_scheme(who) + rate, true);
  } else if (shown_len_ > 0) {
    show("", false);  // clear the status line
    std::fputc('\r', out_);
  }
  who_.clear();
  done_ = 0;
}

void SetupProgress::all_ready(size_t n_stages, double seconds, uint64_t bytes_sent) {
  if (!enabled_) return;
  char b[96];
  std::snprintf(b, sizeof b, "herd: %zu stage%s ready in %.1f s", n_stages, n_stages == 1 ? "" : "s", seconds);
  std::string line = b;
  if (bytes_sent > 0) line += " (" + mib(bytes_sent) + " MiB of weights sent)";
  show(line, true);
}

}  // namespace herd
