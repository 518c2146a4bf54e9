#include "partition/plan_file.h"

#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "common/file_io.h"

namespace herd::partition {
namespace {

using nlohmann::json;

// The field `key` of object `o` as T, or an error naming where it is missing or wrong.
template <typename T>
T get(const json& o, const char* key, const std::string& where) {
  if (!o.is_object() || !o.contains(key)) throw PlanFileError(where + " has no \"" + key + "\"");
  try {
    return o.at(key).get<T>();
  } catch (const json::exception&) {
    throw PlanFileError(where + ": \"" + key + "\" has the wrong type");
  }
}

template <typename T>
T get_or(const json& o, const char* key, T fallback, const std::string& where) {
  return o.is_object() && o.contains(key) ? get<T>(o, key, where) : fallback;
}

}  // namespace

size_t PlanFile::group() const {
  size_t g = 0;
  for (size_t i = 0; i < stages.size(); ++i) {
    const size_t n = stages[i].devices.size();
    if (g != 0 && n != g)
      throw PlanFileError(source + ": stage " + std::to_string(i + 1) + " is a group of " + std::to_string(n) +
                          " devices, an earlier one of " + std::to_string(g) +
                          "; a run takes tensor-parallel groups of one size (make the plan with --tp N)");
    g = n;
  }
  return g == 0 ? 1 : g;
}

PlanFile parse_plan_file(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw PlanFileError(source + ": not JSON (" + e.what() + "); make it with herd plan ... --json > FILE");
  }
  if (!j.is_object() || !j.contains("plans"))
    throw PlanFileError(source + ": not a plan (no \"plans\"); make it with herd plan ... --json > FILE");
  PlanFile p;
  p.source = source;
  const json& model = j.contains("model") ? j["model"] : json::object();
  p.model_name = get_or<std::string>(model, "name", "", source + ": model");
  p.n_layers = get<int64_t>(model, "layers", source + ": model");
  if (j.contains("model_config")) {
    const json& c = j["model_config"];
    const std::string w = source + ": model_config";
    p.arch = get_or<std::string>(c, "arch", "", w);
    p.n_embd = get_or<int64_t>(c, "n_embd", 0, w);
    p.n_heads = get_or<int64_t>(c, "n_heads", 0, w);
    p.n_kv_heads = get_or<int64_t>(c, "n_kv_heads", 0, w);
    p.n_vocab = get_or<int64_t>(c, "n_vocab", 0, w);
  }
  if (j.contains("options")) {
    p.n_ctx = get_or<int64_t>(j["options"], "ctx", 0, source + ": options");
    p.n_parallel = get_or<int64_t>(j["options"], "parallel", 0, source + ": options");
  }
  std::map<std::string, size_t> by_name;
  const json& devices = j.contains("devices") ? j["devices"] : json::array();
  if (!devices.is_array() || devices.empty()) throw PlanFileError(source + ": no \"devices\"");
  for (const auto& d : devices) {
    const std::string w = source + ": device " + std::to_string(p.devices.size() + 1);
    PlanFile::Device dev{get<std::string>(d, "name", w), get_or<std::string>(d, "host", "", w),
                         get_or<std::string>(d, "address", "", w)};
    if (!by_name.emplace(dev.name, p.devices.size()).second) throw PlanFileError(w + ": name '" + dev.name + "' twice");
    p.devices.push_back(std::move(dev));
  }
  const json& plans = j["plans"];
  if (!plans.is_array() || plans.empty()) throw PlanFileError(source + ": \"plans\" is empty");
  if (plans.size() > 1)
    throw PlanFileError(source + ": holds " + std::to_string(plans.size()) +
                        " plans (herd plan --compare); make the one to run without --compare (--strategy S or --tp N)");
  const json& plan = plans[0];
  p.strategy = get_or<std::string>(plan, "strategy", "", source);
  if (!get_or<bool>(plan, "fits", false, source))
    throw PlanFileError(source + ": the plan (" + p.strategy + ") does not fit: " +
                        get_or<std::string>(plan, "error", "no reason given", source));
  const json& stages = plan.contains("stages") ? plan["stages"] : json::array();
  if (!stages.is_array() || stages.empty()) throw PlanFileError(source + ": the plan has no stages");
  auto device_index = [&](const json& o, const std::string& w) {
    const std::string name = get<std::string>(o, "device", w);
    auto it = by_name.find(name);
    if (it == by_name.end()) throw PlanFileError(w + " names device '" + name + "', which is not in \"devices\"");
    return it->second;
  };
  int64_t next = 0;
  std::set<size_t> used;
  for (const auto& s : stages) {
    const std::string w = source + ": stage " + std::to_string(p.stages.size() + 1);
    PlanFile::Stage st;
    st.first = get<int64_t>(s, "first", w);
    st.end = get<int64_t>(s, "end", w);
    st.decode_s = get_or<double>(s, "decode_s", 0, w);
    if (st.first != next || st.end <= st.first || st.end > p.n_layers)
      throw PlanFileError(w + ": layers [" + std::to_string(st.first) + ", " + std::to_string(st.end) +
                          ") do not follow on from layer " + std::to_string(next) + " within the model's " +
                          std::to_string(p.n_layers));
    next = st.end;
    if (s.contains("ranks") && s["ranks"].is_array() && s["ranks"].size() > 1) {
      for (const auto& r : s["ranks"]) {
        st.devices.push_back(device_index(r, w + " rank"));
        st.weights.push_back(get_or<double>(r, "weight", 1.0, w + " rank"));
      }
    } else {
      st.devices.push_back(device_index(s, w));
    }
    for (size_t d : st.devices)
      if (!used.insert(d).second) throw PlanFileError(w + ": device '" + p.devices[d].name + "' runs two stages");
    p.stages.push_back(std::move(st));
  }
  if (next != p.n_layers)
    throw PlanFileError(source + ": the stages end at layer " + std::to_string(next) + " of " + std::to_string(p.n_layers));
  if (plan.contains("hops") && plan["hops"].is_array())
    for (const auto& h : plan["hops"]) p.hop_s.push_back(get_or<double>(h, "decode_s", 0, source + ": hop"));
  p.coord_in_s = get_or<double>(plan, "coordinator_in_s", 0, source);
  p.coord_out_s = get_or<double>(plan, "coordinator_out_s", 0, source);
  p.decode_tok_s = get_or<double>(plan, "decode_tok_s", 0, source);
  p.group();  // mixed group sizes: refused here
  return p;
}

PlanFile read_plan_file(const std::string& path) {
  std::string text;
  if (!read_whole_file(path, text)) throw PlanFileError(path + ": cannot open plan file");
  return parse_plan_file(text, path);
}

}  // namespace herd::partition
