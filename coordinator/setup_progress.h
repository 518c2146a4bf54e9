// What a user sees on stderr while a RemotePipeline sets its workers up (the CLI turns it on with
// RemotePipelineOptions::show_progress): the weights sent to each worker that has no copy of the
// model, as they go, and one line when every stage is ready. On a terminal the transfer line is
// updated in place (\r); otherwise a line per quarter of a transfer. Nothing under HERD_LOG=error
// or off (common/log.h notes_shown); the transfer percentages count the header and that stage's
// tensors, so a worker with part of its shard already cached ends below 100%.
//
//   herd: sending weights to 127.0.0.1:5001: 45% (44.1 / 98.0 MiB)
//   herd: sent 98.0 MiB of weights to 127.0.0.1:5001 in 2.1 s (46.7 MB/s)
//   herd: 2 stages ready in 3.2 s (98.0 MiB of weights sent)
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace herd {

class SetupProgress {
 public:
  using Clock = std::chrono::steady_clock;
  // tty: `out` is a terminal (in-place updates). enabled also requires notes_shown().
  SetupProgress(bool enabled, bool tty, std::FILE* out = stderr);

  // Stage `who` (its address) is being assigned `layers`; on a terminal, a status line until it is
  // ready (loading a shard can take a while even with no transfer).
  void assigning(const std::string& who, const std::string& layers);
  // `done` of `total` weight bytes have been sent to `who` in this assignment.
  void sent(const std::string& who, uint64_t done, uint64_t total);
  // The stage `who` answered its assignment (ready or not): ends its lines.
  void stage_done(const std::string& who);
  // Every stage is assigned: "herd: N stages ready in S s".
  void all_ready(size_t n_stages, double seconds, uint64_t bytes_sent);

 private:
  void show(const std::string& line, bool final);  // one line, in place on a terminal

  bool enabled_, tty_;
  std::FILE* out_;
  size_t shown_len_ = 0;  // length of the in-place line now on the terminal (0: none)
  // The transfer in progress.
  std::string who_;
  uint64_t done_ = 0;
  int quarters_ = 0;  // non-tty: the 25% steps printed
  Clock::time_point t0_, last_;
};

}  // namespace herd
