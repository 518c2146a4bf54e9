// A small command-line parser whose --help is generated from the options it actually accepts,
// so the help text cannot drift from the behaviour.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace herd::cli {

// Bounds of the numeric options (checked when parsing: a value outside is a usage error naming the
// option). 16M tokens of context is far past any model's training context; 1024 threads past any host.
inline constexpr int64_t kMaxCtx = int64_t{1} << 24;
inline constexpr int64_t kMaxThreads = 1024;

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class ArgParser {
 public:
  ArgParser(std::string usage, std::string summary) : usage_(std::move(usage)), summary_(std::move(summary)) {}

  // names: "-m,--model". A bool target is a flag (no value).
  using Target = std::variant<std::string*, int64_t*, int*, double*, float*, uint64_t*, bool*>;
  void add(const std::string& names, const std::string& metavar, const std::string& help, Target target);
  // An integer option whose value must lie in [lo, hi] (checked at parse time, UsageError naming the
  // option and the range otherwise).
  void add(const std::string& names, const std::string& metavar, const std::string& help, Target target, int64_t lo,
           int64_t hi);
  // The last option added (a bounded integer) also takes the word `keyword`, stored as `value`
  // (e.g. --tp auto = 0); its help shows METAVAR as given.
  void keyword(const std::string& keyword, int64_t value);
  // Positional arguments (in order) collected here.
  void positional(const std::string& metavar, const std::string& help, std::vector<std::string>* out);

  // Returns false when --help was given (the caller prints help() and exits 0). Throws UsageError.
  bool parse(const std::vector<std::string>& args);
  std::string help() const;

 private:
  struct Opt {
    std::vector<std::string> names;
    std::string metavar, help;
    Target target;
    std::string default_text;
    bool bounded = false;
    int64_t lo = 0, hi = 0;
    std::string keyword;  // a word the bounded integer also takes
    int64_t keyword_value = 0;
  };
  std::string usage_, summary_;
  std::vector<Opt> opts_;
  std::string pos_metavar_, pos_help_;
  std::vector<std::string>* positional_ = nullptr;
};

}  // namespace herd::cli
