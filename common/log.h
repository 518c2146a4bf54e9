// One thin logging layer with levels, chosen by env HERD_LOG=debug|info|warn|error (default warn).
// Logs go to stderr so stdout stays clean for generated text and machine-readable output.
#pragma once

#include <sstream>
#include <string>

namespace herd {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

LogLevel log_level();
void set_log_level(LogLevel level);
void log_write(LogLevel level, const std::string& msg);

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

template <typename... Args>
void log_at(LogLevel level, const Args&... args) {
  if (level >= log_level()) log_write(level, detail::concat(args...));
}

// Status lines a user wants to see by default — a worker's connections and assignments, the
// coordinator's weight transfers and stage summary — rather than diagnostics: shown at the default
// level (warn) and below, hidden by HERD_LOG=error|off. note() writes `line` as given (it carries
// its own "herd worker: " prefix) plus a newline, whole, under the lock log lines use.
inline bool notes_shown() { return log_level() <= LogLevel::warn; }
void note(const std::string& line);

#define HERD_LOG_DEBUG(...) ::herd::log_at(::herd::LogLevel::debug, __VA_ARGS__)
#define HERD_LOG_INFO(...) ::herd::log_at(::herd::LogLevel::info, __VA_ARGS__)
#define HERD_LOG_WARN(...) ::herd::log_at(::herd::LogLevel::warn, __VA_ARGS__)
#define HERD_LOG_ERROR(...) ::herd::log_at(::herd::LogLevel::error, __VA_ARGS__)

}  // namespace herd
