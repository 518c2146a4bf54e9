// RingComm: a group over herd's transport links. Rank r listens (transport::listen) and dials rank
// (r+1) % n (transport::connect), so every rank has one link to its successor and serves its
// predecessor on its listener; works over tcp:// and inproc:// alike. Data travels as f32
// transport::Tensor frames of at most kRingChunkFloats, each with a small header (collective
// sequence number, phase, chunk index, origin rank) that the receiver checks before using a byte.
//
// All-reduce, in fixed rank order: a pipelined chain. Chunk k's partial sum starts as rank 0's
// chunk, goes 0 -> 1 -> ... -> n-1 (rank r adds its own: partial + x_r, so the result is exactly
// ((x0 + x1) + x2) + ...), and rank n-1 sends the finished chunk on around the ring,
// n-1 -> 0 -> ... -> n-2. Why this and not the textbook ring all-reduce (reduce-scatter + all-gather):
// the textbook reduce-scatter sums chunk c in the order c+1, c+2, ..., c, a different order per
// chunk, which breaks the contract; a chain is the only order a one-directional ring can carry
// without shipping raw inputs. It costs the same 2(n-1) hops of latency (what decides small
// messages) and at most 2N bytes on the busiest link against the ring's 2N(n-1)/n: equal for n=2,
// 4/3 x for n=3, 1.5x for n=4 on large messages. Pipelining in 64 KiB chunks keeps every link busy.
//
// Deadlock freedom: links are buffered but bounded (a TCP data lane blocks a sender whose receiver
// is not reading), and the chain is a cycle (rank 0 both starts chunks and receives results). Rank 0
// keeps at most kRingWindow(n) chunks started but not returned, so at most 2 * window chunks are in
// flight in the whole ring (each chunk is one message somewhere, and results ahead of it on the
// 0..n-2 leg), ~2n * 64 KiB: less than n links' minimum socket buffers (>= 144 KiB each on Linux),
// so the cycle can never be full. All-gather goes step by step (send one chunk, receive one), at
// most two chunks per link; broadcast is a chain from the root that ends before it (no cycle).
//
// Failures: every wait also watches the successor link, so a dead neighbour (the link's `closed`,
// ZeroMQ heartbeats: ~1 s) or silence (timeout_ms) is an error; the rank that sees it sends an Abort
// both ways round the ring (to its successor, and back to its predecessor over the listener), so
// every live rank learns it promptly instead of each waiting out its own timeout.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/comm.h"
#include "transport/link.h"

namespace herd {

constexpr size_t kRingChunkFloats = 16384;  // 64 KiB per message
inline int kRingWindow(int n) { return n < 2 ? 2 : n; }

class RingComm : public Comm {
 public:
  // Use make_ring_comm. Takes the bound listener and the link to the successor, after the handshake.
  RingComm(int rank, int size, std::unique_ptr<transport::Listener> listener, std::unique_ptr<transport::Link> next,
           std::string prev_peer);
  // Closes gracefully (bounded by 2 s): links drop what is still queued when they close, so a rank
  // says Bye to its successor after its last data and waits for the successor's acknowledgement
  // (and answers its predecessor's Bye) before its links go. A broken comm just closes.
  ~RingComm() override;
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "ring"; }
  std::string all_reduce_sum(float* data, size_t n) override;
  std::string all_gather(const float* in, size_t n, float* out) override;
  std::string broadcast(float* data, size_t n, int root) override;

  // Closes without the Bye handshake when destroyed (the neighbours see a lost link): for a group
  // being re-formed long after its last collective's data was delivered (a worker's new Assign),
  // where waiting for neighbours that are not reading their ring would only cost the 2 s bound.
  void abandon() {
    if (broken_.empty()) broken_ = "ring rank " + std::to_string(rank_) + ": closed";
  }

  struct Header;  // the per-message header (ring_comm.cpp; make_ring_comm's hello uses it too)

 private:
  // The next data message from the predecessor, checked as a chunk of this collective (waits at
  // most timeout_ms); recv_chunk also checks it is exactly the chunk expected.
  // successor_needed: false once this rank sends nothing more to its successor in this collective;
  // the successor may then finish and close its link without that being an error here.
  std::string recv_data(Header* h, std::string* out, bool successor_needed = true);
  std::string recv_chunk(uint32_t phase, uint64_t index, uint32_t origin, size_t count, std::string* out,
                         bool successor_needed = true);
  static bool matches(const Header& h, uint32_t phase, uint64_t index, uint32_t origin, size_t count);
  std::string unexpected(const Header& h, const std::string& expected);
  std::string prev_name() const;
  std::string send_chunk(uint32_t phase, uint32_t index, uint32_t origin, const float* src, size_t count);
  std::string send_chunk_bytes(uint32_t phase, uint32_t index, uint32_t origin, std::string bytes);
  // "" or why the successor side failed (closed, Abort, junk); *closed: it was a lost connection.
  std::string poll_next(bool* closed = nullptr);
  std::string fail(std::string why);  // breaks the comm, tells both neighbours, returns why
  std::string begin();               // a new collective: "" or the error that broke this comm
  void close_handshake();

  int rank_, size_;
  std::unique_ptr<transport::Listener> listener_;  // from the predecessor
  std::unique_ptr<transport::Link> next_;          // to the successor
  std::string prev_peer_;                          // the predecessor's id on listener_
  uint32_t seq_ = 0;                               // collectives started on this rank
  std::string broken_;
};

// Opens rank `rank` of a ring: listens on addresses[rank] (or uses `listener`, already bound, e.g.
// to tcp://127.0.0.1:* so the OS picks a port; addresses[rank] is then ignored), dials
// addresses[(rank+1) % n], sends Hello{rank, n} to its successor and waits for its predecessor's, all
// within timeout_ms. Returns null and sets *error on failure (never throws, never hangs).
std::unique_ptr<RingComm> make_ring_comm(const std::vector<std::string>& addresses, int rank, std::string* error,
                                         int timeout_ms = Comm::kDefaultTimeoutMs,
                                         std::unique_ptr<transport::Listener> listener = nullptr);

}  // namespace herd
