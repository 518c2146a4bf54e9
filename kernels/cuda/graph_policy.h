// When the CUDA backend records a stage's pass as a CUDA graph and replays it, instead of launching
// its kernels one by one (tens of launches per layer: at decode the launch cost is a large share of
// a small model's step). Host logic only, tested on the CPU (tests/kernels/test_graph_policy.cpp);
// kernels/cuda/cuda_backend.cpp follows its decisions.
//
// How a pass is recorded: every eligible pass is captured (stream capture: the kernels are
// recorded, not run), then the executable graph of the previous pass is updated in place from it
// (cudaGraphExecUpdate: same topology, new parameters such as the cache length and positions,
// much cheaper than instantiating) or, when that fails or there is none, instantiated anew; then
// it is launched. Eligible: a decode-sized pass (at most kMaxRows rows; prefill's few large
// kernels gain nothing), on a backend where graphs are on and not given up, after the first such
// pass (which runs directly: it allocates what the later ones reuse).
//
// It gives up (direct launches from then on) after a capture or launch failed, or after
// kMaxChangedRun consecutive passes whose shape key changed (every update fails then, and
// instantiating each pass costs more than it saves).
#pragma once

#include <cstdint>
#include <string>

namespace herd::cuda {

class GraphPolicy {
 public:
  static constexpr int64_t kMaxRows = 8;
  static constexpr int kMaxChangedRun = 8;

  enum class Begin { Direct, Capture };
  enum class Finish { Update, Instantiate };

  explicit GraphPolicy(bool enabled) : enabled_(enabled) {}

  // A pass of `rows` rows whose shapes (rows per sequence, outputs: what decides the kernels and
  // their grid, not the values) hash to `key`.
  Begin begin(uint64_t key, int64_t rows) {
    if (!enabled_ || given_up_ || rows < 1 || rows > kMaxRows) return Begin::Direct;
    if (!warm_) {  // the first eligible pass runs directly: it sizes the backend's scratch buffers
      warm_ = true;
      return Begin::Direct;
    }
    changed_ = has_exec_ && key != key_;
    run_ = changed_ ? run_ + 1 : 0;
    if (run_ >= kMaxChangedRun) {
      given_up_ = true;
      why_ = "the pass shape changed " + std::to_string(kMaxChangedRun) + " times in a row";
      return Begin::Direct;
    }
    key_ = key;
    return Begin::Capture;
  }

  // After a successful capture: update the existing executable graph when there is one for the
  // same key, else instantiate.
  Finish finish() const { return has_exec_ && !changed_ ? Finish::Update : Finish::Instantiate; }

  // What finish() led to: the update failed (instantiate instead), an executable graph exists now.
  void update_failed() { changed_ = true; }
  void instantiated() { has_exec_ = true; }

  // A capture, an instantiation or a launch failed: direct launches from now on.
  void give_up(const char* why) {
    given_up_ = true;
    why_ = why;
  }

  bool enabled() const { return enabled_ && !given_up_; }
  bool given_up() const { return given_up_; }
  const std::string& why_given_up() const { return why_; }

 private:
  bool enabled_;
  bool given_up_ = false;
  bool warm_ = false;
  bool has_exec_ = false;
  bool changed_ = false;
  int run_ = 0;
  uint64_t key_ = 0;
  std::string why_;
};

}  // namespace herd::cuda
