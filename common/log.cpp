#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace herd {
namespace {

LogLevel level_from_env() {
  const char* v = std::getenv("HERD_LOG");
  if (!v) return LogLevel::warn;
  if (!std::strcmp(v, "debug")) return LogLevel::debug;
  if (!std::strcmp(v, "info")) return LogLevel::info;
  if (!std::strcmp(v, "warn")) return LogLevel::warn;
  if (!std::strcmp(v, "error")) return LogLevel::error;
  if (!std::strcmp(v, "off")) return LogLevel::off;
  return LogLevel::warn;
}

std::atomic<int>& level_slot() {
  static std::atomic<int> slot{static_cast<int>(level_from_env())};
  return slot;
}

const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
    default: return "";
  }
}

}  // namespace

LogLevel log_level() { return static_cast<LogLevel>(level_slot().load(std::memory_order_relaxed)); }
void set_log_level(LogLevel level) { level_slot().store(static_cast<int>(level)); }

static std::mutex& line_mutex() {  // whole lines, even from worker threads
  static std::mutex mu;
  return mu;
}

void log_write(LogLevel level, const std::string& msg) {
  std::lock_guard<std::mutex> lock(line_mutex());
  std::fprintf(stderr, "herd %s: %s\n", level_name(level), msg.c_str());
}

void note(const std::string& line) {
  if (!notes_shown()) return;
  std::lock_guard<std::mutex> lock(line_mutex());
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace herd
