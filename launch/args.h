// A small command-line parser whose --help is generated from the options it actually accepts,
// so the help text cannot drift from the behaviour.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace herd::cli {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class ArgParser {
 public:
  ArgParser(std::string usage, std::string summary) : usage_(std::move(usage)), summary_(std::move(summary)) {}

  // names: "-m,--model". A bool target is a flag (no value).
  using Target = std::variant<std::string*, int64_t*, int*, double*, float*, uint64_t*, bool*>;
  void add(const std::string& names, const std::string& metavar, const std::string& help, Target target);
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
  };
  std::string usage_, summary_;
  std::vector<Opt> opts_;
  std::string pos_metavar_, pos_help_;
  std::vector<std::string>* positional_ = nullptr;
};

}  // namespace herd::cli
