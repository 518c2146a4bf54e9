#include "worker/bounds.h"

#include <algorithm>
#include <cstdio>

#include "cluster/protocol.h"

namespace herd {

namespace {

std::string gib(double bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return b;
}

}  // namespace

std::string check_message_bytes(const transport::Message& m, uint64_t forward_bytes) {
  uint64_t total = 0;
  for (const auto& t : m.tensors) total += t.data.size();
  using cluster::MsgType;
  uint64_t limit = 0;
  switch (static_cast<MsgType>(m.type)) {
    case MsgType::Ping: limit = cluster::kMaxPingBytes; break;
    case MsgType::WeightChunk: limit = cluster::kMaxWeightChunk; break;
    case MsgType::Forward: limit = forward_bytes; break;
    default: limit = 0;
  }
  if (total <= limit) return "";
  return std::string(cluster::msg_type_name(m.type)) + " carries " + std::to_string(total) +
         " tensor bytes (at most " + std::to_string(limit) + " for this message type" +
         (m.type == static_cast<uint16_t>(MsgType::Forward) ? " and assignment" : "") + ")";
}

std::string check_forward_scratch(const model::ModelConfig& c, bool last_stage, int64_t rows, int64_t outputs,
                                  const std::function<uint64_t()>& available) {
  const int64_t ff = std::max(c.n_ff, c.is_moe() ? c.n_ff_exp : 0);
  const int64_t per_token = 2 * c.n_embd + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * ff +
                            (c.has_qk_norm ? c.q_dim() + c.kv_dim() : 0) +
                            (c.is_moe() ? c.n_expert + (1 + c.n_expert_used) * c.n_embd : 0);
  // Doubles: rows <= 2^16 and widths of a validated model; no overflow.
  const double need = 4.0 * static_cast<double>(rows) * static_cast<double>(per_token) +
                      (last_stage ? 4.0 * static_cast<double>(outputs) * static_cast<double>(c.n_vocab) : 0.0);
  if (need <= kScratchWithoutAsking) return "";  // a decode step: no /proc read on the hot path
  const uint64_t avail = available();
  if (avail == 0 || need <= static_cast<double>(avail)) return "";
  return "Forward of " + std::to_string(rows) + " rows needs " + gib(need) + " of scratch, this worker has " +
         gib(static_cast<double>(avail)) + " available";
}

bool DropLog::allow(const std::string& peer, Clock::time_point now, uint64_t* held_back) {
  while (!written_.empty() && now - written_.front() >= std::chrono::minutes(1)) written_.pop_front();
  const auto it = last_.find(peer);
  const bool peer_quiet = it == last_.end() || now - it->second >= std::chrono::seconds(kPerPeerSeconds);
  if (!peer_quiet || written_.size() >= kPerMinute) {
    ++held_back_;
    return false;
  }
  if (it == last_.end() && last_.size() >= 4096) {  // forget the peer heard from longest ago
    auto oldest = last_.begin();
    for (auto j = last_.begin(); j != last_.end(); ++j)
      if (j->second < oldest->second) oldest = j;
    last_.erase(oldest);
  }
  last_[peer] = now;
  written_.push_back(now);
  *held_back = held_back_;
  held_back_ = 0;
  return true;
}

}  // namespace herd
