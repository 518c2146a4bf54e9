#include "coordinator/fixed_plan.h"

#include <cstdio>
#include <map>
#include <stdexcept>

#include "coordinator/worker_set.h"
#include "transport/link.h"

namespace herd {
namespace {

std::string list(const std::vector<std::string>& xs) {
  std::string out;
  for (const auto& x : xs) out += (out.empty() ? "" : ", ") + x;
  return out;
}

}  // namespace

void check_plan_model(const partition::PlanFile& p, const model::ModelConfig& c) {
  auto differs = [&](const char* what, int64_t planned, int64_t here) {
    if (planned != 0 && planned != here)
      throw std::runtime_error(p.source + " was made for a model with " + what + " " + std::to_string(planned) +
                               (p.model_name.empty() ? "" : " (" + p.model_name + ")") + "; this model (" + c.arch +
                               ") has " + std::to_string(here) + ": make the plan with herd plan -m THIS.gguf ... --json");
  };
  differs("layers", p.n_layers, c.n_layers);
  differs("n_embd", p.n_embd, c.n_embd);
  differs("heads", p.n_heads, c.n_heads);
  differs("kv heads", p.n_kv_heads, c.n_kv_heads);
  differs("vocabulary", p.n_vocab, c.n_vocab);
  if (!p.arch.empty() && p.arch != c.arch)
    throw std::runtime_error(p.source + " was made for a " + p.arch + " model; this one is " + c.arch);
}

FixedSplit fixed_split(const partition::PlanFile& p, const std::vector<std::string>& workers) {
  const size_t n = workers.size();
  if (p.devices.size() != n)
    throw std::runtime_error(p.source + " plans " + std::to_string(p.devices.size()) + " devices but " +
                             std::to_string(n) + " workers are given (" + list(workers) +
                             "): run it over the cluster file it was made from");
  // Device d of the plan -> worker position.
  std::vector<size_t> worker_of(n);
  const bool by_address = !p.devices[0].address.empty();
  if (by_address) {
    std::map<std::string, size_t> pos;
    for (size_t i = 0; i < n; ++i) pos[transport::normalize_address(workers[i])] = i;
    std::vector<bool> taken(n, false);
    for (size_t d = 0; d < n; ++d) {
      const auto& dev = p.devices[d];
      if (dev.address.empty())
        throw std::runtime_error(p.source + ": device '" + dev.name + "' has no address (a device line) beside worker "
                                 "lines; a run needs every device to be a worker");
      auto it = pos.find(transport::normalize_address(dev.address));
      if (it == pos.end())
        throw std::runtime_error(p.source + ": device '" + dev.name + "' at " + dev.address +
                                 " is not among the workers (" + list(workers) + ")");
      worker_of[d] = it->second;
      taken[it->second] = true;
    }
    for (size_t i = 0; i < n; ++i)
      if (!taken[i]) throw std::runtime_error(p.source + " names no device at worker " + workers[i]);
  } else {
    for (size_t d = 0; d < n; ++d) worker_of[d] = d;  // device lines: the i-th device is the i-th worker
  }
  FixedSplit out;
  out.group = p.group();
  out.summary = "plan: " + p.source + " (" + p.strategy + "):";
  for (size_t s = 0; s < p.stages.size(); ++s) {
    const auto& st = p.stages[s];
    const model::LayerRange range{st.first, st.end, s == 0, s + 1 == p.stages.size()};
    std::string who;
    for (size_t d : st.devices) {
      out.stage_workers.push_back(worker_of[d]);
      out.ranges.push_back(range);
      // Appended piecewise: GCC 12's -Wrestrict misreads a chain of + here.
      if (!who.empty()) who += "+";
      who += "worker ";
      who += std::to_string(worker_of[d] + 1);
      who += " (";
      who += workers[worker_of[d]];
      who += ")";
    }
    if (out.group > 1) out.tp_weights.push_back(st.weights);
    out.summary += std::string(s ? ", " : " ") + who + " " + layers_text(range);
  }
  char b[64];
  std::snprintf(b, sizeof b, "; predicted %.1f tok/s", p.decode_tok_s);
  out.summary += b;
  if (out.stage_workers.size() < n) out.summary += "; " + std::to_string(n - out.stage_workers.size()) + " unused";
  return out;
}

}  // namespace herd
