#include "launch/args.h"

#include <charconv>
#include <sstream>

namespace herd::cli {
namespace {

template <typename T>
T parse_number(const std::string& name, const std::string& v) {
  T out{};
  const char* end = v.data() + v.size();
  auto [p, ec] = std::from_chars(v.data(), end, out);
  if (ec != std::errc() || p != end) throw UsageError("invalid value '" + v + "' for " + name);
  return out;
}

std::string show_default(const ArgParser::Target& t) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, bool>) {
          return "";
        } else if constexpr (std::is_same_v<T, std::string>) {
          return p->empty() ? "" : *p;
        } else {
          std::ostringstream os;
          os << *p;
          return os.str();
        }
      },
      t);
}

}  // namespace

void ArgParser::add(const std::string& names, const std::string& metavar, const std::string& help, Target target) {
  Opt o;
  std::stringstream ss(names);
  std::string n;
  while (std::getline(ss, n, ',')) o.names.push_back(n);
  o.metavar = metavar;
  o.help = help;
  o.target = target;
  o.default_text = show_default(target);
  opts_.push_back(std::move(o));
}

void ArgParser::add(const std::string& names, const std::string& metavar, const std::string& help, Target target,
                    int64_t lo, int64_t hi) {
  add(names, metavar, help, target);
  opts_.back().bounded = true;
  opts_.back().lo = lo;
  opts_.back().hi = hi;
}

void ArgParser::keyword(const std::string& keyword, int64_t value) {
  if (opts_.empty() || !opts_.back().bounded) throw std::logic_error("ArgParser::keyword: no bounded option to extend");
  opts_.back().keyword = keyword;
  opts_.back().keyword_value = value;
}

void ArgParser::positional(const std::string& metavar, const std::string& help, std::vector<std::string>* out) {
  pos_metavar_ = metavar;
  pos_help_ = help;
  positional_ = out;
}

bool ArgParser::parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    if (a == "-h" || a == "--help") return false;
    std::string inline_value;
    bool has_inline = false;
    if (a.rfind("--", 0) == 0) {
      if (auto eq = a.find('='); eq != std::string::npos) {
        inline_value = a.substr(eq + 1);
        a = a.substr(0, eq);
        has_inline = true;
      }
    }
    Opt* opt = nullptr;
    for (auto& o : opts_)
      for (const auto& n : o.names)
        if (n == a) opt = &o;
    if (!opt) {
      if (!a.empty() && a[0] == '-' && a.size() > 1 && !(a[1] >= '0' && a[1] <= '9'))
        throw UsageError("unknown option " + a + " (see --help)");
      if (!positional_) throw UsageError("unexpected argument '" + a + "' (see --help)");
      positional_->push_back(args[i]);
      continue;
    }
    if (std::holds_alternative<bool*>(opt->target)) {
      if (has_inline) throw UsageError(a + " takes no value");
      *std::get<bool*>(opt->target) = true;
      continue;
    }
    std::string v;
    if (has_inline) {
      v = inline_value;
    } else {
      if (i + 1 >= args.size()) throw UsageError(a + " needs a value (" + opt->metavar + ")");
      v = args[++i];
    }
    std::visit(
        [&](auto* p) {
          using T = std::remove_pointer_t<decltype(p)>;
          if constexpr (std::is_same_v<T, std::string>) {
            *p = v;
          } else if constexpr (std::is_same_v<T, bool>) {
          } else if constexpr (std::is_floating_point_v<T>) {
            try {
              size_t used = 0;
              double d = std::stod(v, &used);
              if (used != v.size()) throw UsageError("invalid number '" + v + "' for " + a);
              *p = static_cast<T>(d);
            } catch (const std::logic_error&) {
              throw UsageError("invalid number '" + v + "' for " + a);
            }
          } else {
            if (!opt->bounded) {
              *p = parse_number<T>(a, v);
              return;
            }
            if (!opt->keyword.empty() && v == opt->keyword) {
              *p = static_cast<T>(opt->keyword_value);
              return;
            }
            // Parse wide so that a huge value reads "out of range", not "invalid".
            const char* end = v.data() + v.size();
            int64_t wide = 0;
            auto [q, ec] = std::from_chars(v.data(), end, wide);
            if (q != end || (ec != std::errc() && ec != std::errc::result_out_of_range))
              throw UsageError("invalid value '" + v + "' for " + a);
            if (ec == std::errc::result_out_of_range || wide < opt->lo || wide > opt->hi)
              throw UsageError(a + " " + v + " is out of range: it must be in " + std::to_string(opt->lo) + ".." +
                               std::to_string(opt->hi) + (opt->keyword.empty() ? "" : " or " + opt->keyword));
            *p = static_cast<T>(wide);
          }
        },
        opt->target);
  }
  return true;
}

std::string ArgParser::help() const {
  std::ostringstream os;
  os << "usage: " << usage_ << "\n\n" << summary_ << "\n";
  if (positional_) os << "\n  " << pos_metavar_ << "\n      " << pos_help_ << "\n";
  if (!opts_.empty()) os << "\noptions:\n";
  for (const auto& o : opts_) {
    std::string lhs;
    for (size_t i = 0; i < o.names.size(); ++i) lhs += (i ? ", " : "") + o.names[i];
    if (!std::holds_alternative<bool*>(o.target)) lhs += " " + o.metavar;
    os << "  " << lhs << "\n      " << o.help;
    if (!o.default_text.empty()) os << " (default: " << o.default_text << ")";
    os << "\n";
  }
  os << "  -h, --help\n      show this help\n";
  return os.str();
}

}  // namespace herd::cli
