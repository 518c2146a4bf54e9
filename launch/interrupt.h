// Ctrl-C as a request rather than a kill: while an Interrupt is alive, SIGINT only sets a flag
// that the command polls (herd chat: stop the answer being generated; at the prompt: leave).
// The handler is installed with SA_RESTART, so a signal landing in the middle of a read, write or
// send elsewhere in the process does not turn into a spurious error; the waits that matter poll
// the flag instead (LineReader below wakes up at least every 100 ms).
#pragma once

#include <signal.h>

#include <string>

namespace herd::cli {

class Interrupt {
 public:
  Interrupt();   // installs the handler (one Interrupt at a time)
  ~Interrupt();  // restores the previous disposition
  Interrupt(const Interrupt&) = delete;
  Interrupt& operator=(const Interrupt&) = delete;

  bool requested() const;  // a SIGINT arrived since construction or the last clear()
  void clear();

 private:
  struct sigaction old_{};
};

// Lines from a file descriptor (stdin), read with our own buffer so that waiting for input can be
// abandoned when an Interrupt is requested (std::getline would sit in read() until a line came).
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd) {}
  enum class Got { line, eof, interrupted };
  // The next line without its "\n" (or "\r\n"); a last line without a newline counts. An
  // interrupt requested before or while waiting returns `interrupted` (buffered input is kept).
  Got next(std::string& line, const Interrupt& intr);

 private:
  int fd_;
  std::string buf_;
  bool eof_ = false;
};

}  // namespace herd::cli
