#include "launch/interrupt.h"

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <stdexcept>

namespace herd::cli {
namespace {

volatile sig_atomic_t g_sigint = 0;
std::atomic<bool> g_installed{false};

extern "C" void on_sigint(int) { g_sigint = 1; }

}  // namespace

Interrupt::Interrupt() {
  if (g_installed.exchange(true)) throw std::logic_error("only one herd::cli::Interrupt at a time");
  g_sigint = 0;
  struct sigaction sa{};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  // Installed even when SIGINT was ignored on entry: herd-cluster starts the coordinator as a
  // background job of a non-interactive shell, which ignores SIGINT, yet chat shares the
  // terminal's process group there and must see the user's Ctrl-C.
  sigaction(SIGINT, &sa, &old_);
}

Interrupt::~Interrupt() {
  sigaction(SIGINT, &old_, nullptr);
  g_installed = false;
}

bool Interrupt::requested() const { return g_sigint != 0; }
void Interrupt::clear() { g_sigint = 0; }

LineReader::Got LineReader::next(std::string& line, const Interrupt& intr) {
  while (true) {
    if (intr.requested()) return Got::interrupted;
    if (const auto nl = buf_.find('\n'); nl != std::string::npos) {
      line.assign(buf_, 0, nl);
      buf_.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return Got::line;
    }
    if (eof_) {
      if (buf_.empty()) return Got::eof;
      line.swap(buf_);
      buf_.clear();
      return Got::line;
    }
    // Wait in slices: a SIGINT delivered to another thread does not interrupt this poll.
    pollfd p{fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, 100);
    if (ready < 0 && errno != EINTR) {
      eof_ = true;  // an unusable descriptor ends the input
      continue;
    }
    if (ready <= 0) continue;
    char chunk[4096];
    const ssize_t got = ::read(fd_, chunk, sizeof chunk);
    if (got > 0) buf_.append(chunk, static_cast<size_t>(got));
    else if (got == 0 || (errno != EINTR && errno != EAGAIN)) eof_ = true;
  }
}

}  // namespace herd::cli
