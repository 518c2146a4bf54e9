// A plan as `herd plan --json` writes it, read back so that a run executes exactly that plan
// (`herd run --workers ... --plan plan.json`, `herd-cluster FILE --plan plan.json -- run ...`).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace herd::partition {

class PlanFileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct PlanFile {
  std::string source;    // the file (in messages)
  std::string strategy;  // "optimal", "tp 2", ...
  // The model it was made for (0 / "": an older file without the field).
  std::string model_name, arch;
  int64_t n_layers = 0, n_embd = 0, n_heads = 0, n_kv_heads = 0, n_vocab = 0;
  int64_t n_ctx = 0, n_parallel = 0;
  struct Device {
    std::string name, host;
    std::string address;  // HOST:PORT of a worker line; "" for a device line
  };
  std::vector<Device> devices;  // every device of the cluster file, in its order
  struct Stage {
    std::vector<size_t> devices;  // indices into devices: one, or a tensor-parallel group (leader first)
    std::vector<double> weights;  // a group's shares (relative speeds), one per rank; empty for one device
    int64_t first = 0, end = 0;   // layers [first, end)
    double decode_s = 0;          // predicted per token
  };
  std::vector<Stage> stages;      // pipeline order
  std::vector<double> hop_s;      // predicted per token between stage i and i+1
  double coord_in_s = 0, coord_out_s = 0;  // coordinator -> stage 0, last stage -> coordinator
  double decode_tok_s = 0;

  // The tensor-parallel group size of its stages (all the same, else PlanFileError naming them).
  size_t group() const;
};

// Throws PlanFileError "<source>: <what>" for JSON that is not a plan, a plan that does not fit,
// several plans (--compare), stages that do not cover [0, layers) in order, or a stage naming a
// device that is not in the file.
PlanFile parse_plan_file(const std::string& text, const std::string& source);
PlanFile read_plan_file(const std::string& path);

}  // namespace herd::partition
