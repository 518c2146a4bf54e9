// What one worker accepts from a peer, sized before anything is allocated (issue [trust] item 4).
// The transport already refuses frames above transport::kMaxListenerMessageBytes; these are the
// per-message-type bounds a worker checks once a message is decoded, before it acts on it.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>

#include "model/arch.h"
#include "model/gguf.h"
#include "transport/link.h"

namespace herd {

// Tensor bytes a message of this type may carry into a worker (Ping/WeightChunk: 4 MiB; Forward:
// `forward_bytes`, the assigned stage's widest batch; control messages: none). "" or the reason.
std::string check_message_bytes(const transport::Message& m, uint64_t forward_bytes);

// The scratch a Stage needs for a Forward of `rows` rows of which `outputs` want logits (the same
// per-token estimate as `herd info`: x, cur, q, k, v, attention, gate and up rows, plus the logits
// rows on the last stage), against available() bytes (MemAvailable), asked only when the need is
// over kScratchWithoutAsking (reading /proc/meminfo costs tens of microseconds: not per decode
// step). "" or "Forward of N rows needs X GiB of scratch, this worker has Y GiB available".
constexpr double kScratchWithoutAsking = 64.0 * 1024 * 1024;
std::string check_forward_scratch(const model::ModelConfig& c, bool last_stage, int64_t rows, int64_t outputs,
                                  const std::function<uint64_t()>& available);

// Messages from other peers held while a weight transfer runs; more are dropped (with their peer).
constexpr size_t kMaxPendingMessages = 64;

// Log lines about dropped peers (an oversized or malformed frame, a message before Hello), limited
// so that a peer cannot flood the log: a line about a peer is written when none was about it in the
// last kPerPeerSeconds, and at most kPerMinute lines a minute overall; the lines held back are
// counted and the count goes into the next line written. (A peer is a ZeroMQ routing id: each new
// connection is a new one, hence the overall limit.)
class DropLog {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr int kPerPeerSeconds = 10;
  static constexpr size_t kPerMinute = 30;
  // True when a line about `peer` may be written at `now`; then *held_back is the number of lines
  // held back since the last one written (and the count restarts).
  bool allow(const std::string& peer, Clock::time_point now, uint64_t* held_back);

 private:
  std::map<std::string, Clock::time_point> last_;  // per peer, at most 4096 (the oldest forgotten)
  std::deque<Clock::time_point> written_;          // lines written in the last minute
  uint64_t held_back_ = 0;
};

}  // namespace herd
