#include "engine/probe_profile.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "kernels/dtype.h"

namespace herd {
namespace {

// A small JSON value: enough for the probe file (objects, arrays, strings, numbers, literals).
struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  double num = 0;
  std::string str;
  std::vector<Json> items;
  // An object's members, in order: field_names[i] -> items[i]. (Not a vector of pair<string, Json>:
  // that needs Json complete inside Json, which GCC tolerates and clang, the fuzz build, rejects.)
  std::vector<std::string> field_names;
  const Json* get(const std::string& k) const {
    for (size_t i = 0; i < field_names.size(); ++i)
      if (field_names[i] == k) return &items[i];
    return nullptr;
  }
};

class Parser {
 public:
  Parser(const std::string& t, const std::string& src) : t_(t), src_(src) {}
  Json parse() {
    Json v = value(0);
    ws();
    if (i_ != t_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(src_ + ": invalid probe JSON at byte " + std::to_string(i_) + ": " + what);
  }
  void ws() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\n' || t_[i_] == '\t' || t_[i_] == '\r')) ++i_;
  }
  bool eat(char c) {
    ws();
    if (i_ < t_.size() && t_[i_] == c) return ++i_, true;
    return false;
  }
  std::string string() {
    if (!eat('"')) fail("expected a string");
    std::string s;
    while (i_ < t_.size() && t_[i_] != '"') {
      if (t_[i_] == '\\') {
        if (++i_ >= t_.size()) fail("unterminated escape");
        const char e = t_[i_];
        if (e == 'n') s += '\n';
        else if (e == 't') s += '\t';
        else if (e == 'u') {  // keep it simple: \u00XX only (what probe_to_json writes)
          if (i_ + 4 >= t_.size()) fail("short \\u escape");
          s += static_cast<char>(std::stoi(t_.substr(i_ + 1, 4), nullptr, 16) & 0xff);
          i_ += 4;
        } else s += e;
        ++i_;
      } else {
        s += t_[i_++];
      }
    }
    if (i_ >= t_.size()) fail("unterminated string");
    ++i_;
    return s;
  }
  Json value(int depth) {
    if (depth > 16) fail("nested too deeply");
    ws();
    if (i_ >= t_.size()) fail("unexpected end");
    Json v;
    const char c = t_[i_];
    if (c == '{') {
      ++i_;
      v.kind = Json::Object;
      if (eat('}')) return v;
      do {
        std::string k = string();
        if (!eat(':')) fail("expected ':'");
        Json member = value(depth + 1);
        v.field_names.push_back(std::move(k));
        v.items.push_back(std::move(member));
      } while (eat(','));
      if (!eat('}')) fail("expected '}'");
    } else if (c == '[') {
      ++i_;
      v.kind = Json::Array;
      if (eat(']')) return v;
      do v.items.push_back(value(depth + 1));
      while (eat(','));
      if (!eat(']')) fail("expected ']'");
    } else if (c == '"') {
      v.kind = Json::String;
      v.str = string();
    } else if (t_.compare(i_, 4, "true") == 0 || t_.compare(i_, 5, "false") == 0) {
      v.kind = Json::Bool;
      v.num = t_[i_] == 't';
      i_ += t_[i_] == 't' ? 4 : 5;
    } else if (t_.compare(i_, 4, "null") == 0) {
      i_ += 4;
    } else {
      size_t used = 0;
      try {
        v.num = std::stod(t_.substr(i_, 64), &used);
      } catch (const std::exception&) {
        fail("expected a value");
      }
      v.kind = Json::Number;
      i_ += used;
    }
    return v;
  }
  const std::string& t_;
  const std::string& src_;
  size_t i_ = 0;
};

std::string esc(const std::string& s) {
  std::string o;
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') o += '\\', o += static_cast<char>(ch);
    else if (ch < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", ch);
      o += b;
    } else o += static_cast<char>(ch);
  }
  return o;
}

std::string num(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", x);
  return b;
}

}  // namespace

std::string probe_to_json(const ProbeResult& p) {
  std::ostringstream o;
  o << "{\n  \"herd_probe\": " << p.version << ",\n"
    << "  \"host\": \"" << esc(p.host) << "\",\n"
    << "  \"cpu\": \"" << esc(p.cpu) << "\",\n"
    << "  \"isa\": \"" << esc(p.isa) << "\",\n"
    << "  \"threads\": " << p.threads << ",\n"
    << "  \"hw_threads\": " << p.hw_threads << ",\n"
    << "  \"mem_total_bytes\": " << p.mem_total_bytes << ",\n"
    << "  \"mem_available_bytes\": " << p.mem_available_bytes << ",\n"
    << "  \"read_bw_Bps\": " << num(p.read_bw_Bps) << ",\n"
    << "  \"matmul_flops\": " << num(p.matmul_flops) << ",\n"
    << "  \"op_overhead_s\": " << num(p.op_overhead_s) << ",\n"
    << "  \"attn_Bps\": " << num(p.attn_Bps) << ",\n"
    << "  \"disk_read_Bps\": " << num(p.disk_read_Bps) << ",\n"
    << "  \"loopback_latency_s\": " << num(p.loopback_latency_s) << ",\n"
    << "  \"matvec_Bps\": {";
  bool first = true;
  for (const auto& [t, bps] : p.matvec_Bps) {
    const auto tr = dtype_traits(t);
    o << (first ? "" : ",") << "\n    \"" << (tr ? std::string(tr->name) : std::to_string(t)) << "\": " << num(bps);
    first = false;
  }
  o << (first ? "" : "\n  ") << "},\n  \"matvec_bytes\": " << p.matvec_bytes << ",\n  \"matvec_cached_Bps\": {";
  first = true;
  for (const auto& [t, pts] : p.matvec_cached_Bps) {
    const auto tr = dtype_traits(t);
    o << (first ? "" : ",") << "\n    \"" << (tr ? std::string(tr->name) : std::to_string(t)) << "\": [";
    for (size_t i = 0; i < pts.size(); ++i) o << (i ? ", " : "") << "[" << pts[i].first << ", " << num(pts[i].second) << "]";
    o << "]";
    first = false;
  }
  o << (first ? "" : "\n  ") << "},\n  \"gpus\": [";
  first = true;
  for (const auto& g : p.gpus) {
    o << (first ? "" : ",") << "\n    {\"index\": " << g.index << ", \"name\": \"" << esc(g.name)
      << "\", \"total_bytes\": " << g.total_bytes << ", \"free_bytes\": " << g.free_bytes
      << ", \"copy_bw_Bps\": " << num(g.copy_bw_Bps) << "}";
    first = false;
  }
  o << (first ? "" : "\n  ") << "]\n}\n";
  return o.str();
}

ProbeResult probe_from_json(const std::string& text, const std::string& source) {
  const Json root = Parser(text, source).parse();
  auto fail = [&](const std::string& what) -> void { throw std::runtime_error(source + ": " + what); };
  if (root.kind != Json::Object) fail("not a JSON object");
  if (!root.get("herd_probe")) fail("no \"herd_probe\" key (not a file written by herd probe --out)");
  auto number = [&](const char* k, bool required) -> double {
    const Json* v = root.get(k);
    if (!v) {
      if (required) fail(std::string("missing \"") + k + "\"");
      return 0;
    }
    if (v->kind != Json::Number || !std::isfinite(v->num) || v->num < 0)
      fail(std::string("\"") + k + "\" must be a non-negative number");
    return v->num;
  };
  auto text_of = [&](const char* k) -> std::string {
    const Json* v = root.get(k);
    return v && v->kind == Json::String ? v->str : std::string();
  };
  ProbeResult p;
  p.version = static_cast<int>(number("herd_probe", true));
  p.host = text_of("host");
  p.cpu = text_of("cpu");
  p.isa = text_of("isa");
  p.threads = std::max(1, static_cast<int>(number("threads", false)));
  p.hw_threads = std::max(1, static_cast<int>(number("hw_threads", false)));
  p.mem_total_bytes = static_cast<uint64_t>(number("mem_total_bytes", true));
  p.mem_available_bytes = static_cast<uint64_t>(number("mem_available_bytes", false));
  if (p.mem_total_bytes == 0) fail("\"mem_total_bytes\" must be positive");
  if (p.mem_available_bytes > p.mem_total_bytes) fail("\"mem_available_bytes\" is larger than \"mem_total_bytes\"");
  p.read_bw_Bps = number("read_bw_Bps", true);
  if (!(p.read_bw_Bps > 0)) fail("\"read_bw_Bps\" must be positive");
  p.matmul_flops = number("matmul_flops", false);
  p.op_overhead_s = number("op_overhead_s", false);
  p.attn_Bps = number("attn_Bps", false);
  p.disk_read_Bps = number("disk_read_Bps", false);
  p.loopback_latency_s = number("loopback_latency_s", false);
  if (const Json* mv = root.get("matvec_Bps")) {
    if (mv->kind != Json::Object) fail("\"matvec_Bps\" must be an object");
    for (size_t i = 0; i < mv->field_names.size(); ++i) {
      const std::string& name = mv->field_names[i];
      const Json& v = mv->items[i];
      const auto t = parse_dtype(name);
      if (!t) fail("\"matvec_Bps\": unknown tensor type '" + name + "'");
      if (v.kind != Json::Number || !(v.num > 0) || !std::isfinite(v.num))
        fail("\"matvec_Bps\": '" + name + "' must be a positive number");
      p.matvec_Bps[static_cast<uint32_t>(*t)] = v.num;
    }
  }
  p.matvec_bytes = static_cast<uint64_t>(number("matvec_bytes", false));
  if (const Json* mc = root.get("matvec_cached_Bps")) {  // absent in files from before the cache curve
    auto bad = [&](const std::string& what) { fail("\"matvec_cached_Bps\": " + what); };
    if (mc->kind != Json::Object) bad("must be an object");
    for (size_t i = 0; i < mc->field_names.size(); ++i) {
      const std::string& name = mc->field_names[i];
      const auto t = parse_dtype(name);
      if (!t) bad("unknown tensor type '" + name + "'");
      const Json& pts = mc->items[i];
      if (pts.kind != Json::Array) bad("'" + name + "' must be an array of [bytes, bytes/s] pairs");
      auto& out = p.matvec_cached_Bps[static_cast<uint32_t>(*t)];
      for (const Json& pt : pts.items) {
        if (pt.kind != Json::Array || pt.items.size() != 2 || pt.items[0].kind != Json::Number ||
            pt.items[1].kind != Json::Number || !(pt.items[0].num >= 1) || !(pt.items[1].num > 0) ||
            !std::isfinite(pt.items[0].num) || !std::isfinite(pt.items[1].num) || pt.items[0].num > 1e15)
          bad("'" + name + "': each point must be [bytes >= 1, bytes/s > 0]");
        const auto b = static_cast<uint64_t>(pt.items[0].num);
        if (!out.empty() && b <= out.back().first) bad("'" + name + "': the sizes must ascend");
        out.emplace_back(b, pt.items[1].num);
      }
    }
  }
  if (const Json* gs = root.get("gpus")) {
    if (gs->kind != Json::Array) fail("\"gpus\" must be an array");
    for (const auto& g : gs->items) {
      if (g.kind != Json::Object) fail("\"gpus\" entries must be objects");
      ProbeGpu pg;
      if (const Json* v = g.get("index"); v && v->kind == Json::Number) pg.index = static_cast<int>(v->num);
      if (const Json* v = g.get("name"); v && v->kind == Json::String) pg.name = v->str;
      if (const Json* v = g.get("total_bytes"); v && v->kind == Json::Number && v->num >= 0) pg.total_bytes = static_cast<uint64_t>(v->num);
      if (const Json* v = g.get("free_bytes"); v && v->kind == Json::Number && v->num >= 0) pg.free_bytes = static_cast<uint64_t>(v->num);
      if (const Json* v = g.get("copy_bw_Bps")) {  // absent in probe files from before it: 0, not measured
        if (v->kind != Json::Number || !std::isfinite(v->num) || v->num < 0)
          fail("\"gpus\": \"copy_bw_Bps\" must be a non-negative number");
        pg.copy_bw_Bps = v->num;
      }
      if (pg.free_bytes > pg.total_bytes) fail("\"gpus\": gpu " + std::to_string(pg.index) + " has free_bytes larger than total_bytes");
      p.gpus.push_back(pg);
    }
  }
  return p;
}

ProbeResult load_probe(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(path + ": cannot open probe file");
  std::stringstream ss;
  ss << f.rdbuf();
  return probe_from_json(ss.str(), path);
}

}  // namespace herd
