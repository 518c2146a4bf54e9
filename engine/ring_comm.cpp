#include "engine/ring_comm.h"
#include "engine/ring_wire.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace herd {

namespace {

using Clock = std::chrono::steady_clock;

// How long a closing rank waits for its neighbours' goodbyes (ring_comm.h, ~RingComm).
constexpr int kCloseWaitMs = 2000;
constexpr size_t kMaxAbortText = 1024;
// How often a wait that sees data from the predecessor still looks at the successor link (for an
// Abort or a closed connection, and so that ZeroMQ's data-lane handshake, which runs inside the
// link's recv, completes).
constexpr auto kPollNextEvery = std::chrono::milliseconds(10);

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

}  // namespace

namespace {

// Checks a received message as a data chunk of collective `seq`: header, one 1-D f32 tensor whose
// length is the header's count. "" or why not.
std::string check_data(const transport::Message& m, uint32_t seq, RingComm::Header* h) {
  if (m.type == kRingAbort) return "aborted: " + m.payload.substr(0, kMaxAbortText);
  if (m.type != kRingData) return "unexpected message type " + std::to_string(m.type);
  if (!RingComm::Header::decode(m.payload, h)) return "data header is " + std::to_string(m.payload.size()) + " bytes";
  if (h->seq != seq)
    return "message of collective #" + std::to_string(h->seq) + " during #" + std::to_string(seq) +
           " (ranks called different collectives)";
  if (m.tensors.size() != 1) return "data message with " + std::to_string(m.tensors.size()) + " tensors";
  const transport::Tensor& t = m.tensors[0];
  if (t.dtype != transport::WireDType::F32 || t.shape.size() != 1 || t.shape[0] < 0 ||
      static_cast<uint64_t>(t.shape[0]) != h->count || t.data.size() != h->count * sizeof(float))
    return "data tensor is not f32[" + std::to_string(h->count) + "]";
  return {};
}

}  // namespace

RingComm::RingComm(int rank, int size, std::unique_ptr<transport::Listener> listener,
                   std::unique_ptr<transport::Link> next, std::string prev_peer)
    : rank_(rank), size_(size), listener_(std::move(listener)), next_(std::move(next)), prev_peer_(std::move(prev_peer)) {}

RingComm::~RingComm() {
  if (broken_.empty() && size_ > 1 && next_ && listener_) close_handshake();
}

void RingComm::close_handshake() {
  transport::Message bye;
  bye.type = kRingBye;
  if (!next_->send(bye).empty()) return;
  const auto deadline = Clock::now() + std::chrono::milliseconds(kCloseWaitMs);
  bool prev_said_bye = false, next_got_all = false;
  while ((!prev_said_bye || !next_got_all) && Clock::now() < deadline) {
    // The predecessor's Bye comes after all its data: answer it, so it may close.
    const transport::Received r = listener_->recv(std::min(remaining_ms(deadline), 10));
    if (r.status == transport::RecvStatus::ok && r.peer == prev_peer_ && r.msg.type == kRingBye) {
      transport::Message ack;
      ack.type = kRingByeAck;
      (void)listener_->send(prev_peer_, ack);
      prev_said_bye = true;
    }
    const transport::Received a = next_->recv(0);
    if (a.status == transport::RecvStatus::ok && a.msg.type == kRingByeAck) next_got_all = true;
    if (a.status == transport::RecvStatus::closed) next_got_all = true;  // it is gone: nothing to wait for
  }
}

std::string RingComm::begin() {
  ++seq_;
  return broken_;
}

std::string RingComm::fail(std::string why) {
  if (!broken_.empty()) return broken_;
  broken_ = "ring rank " + std::to_string(rank_) + ": " + why;
  // Best effort: a neighbour that is gone cannot be told, and that is what we report anyway.
  transport::Message abort;
  abort.type = kRingAbort;
  abort.payload = broken_.substr(0, kMaxAbortText);
  if (next_) (void)next_->send(abort);
  if (listener_ && !prev_peer_.empty()) (void)listener_->send(prev_peer_, abort);
  return broken_;
}

std::string RingComm::poll_next(bool* closed) {
  if (!next_) return {};
  transport::Received r = next_->recv(0);
  const std::string who = "successor rank " + std::to_string((rank_ + 1) % size_);
  switch (r.status) {
    case transport::RecvStatus::timeout: return {};
    case transport::RecvStatus::closed:
      if (closed) *closed = true;
      return who + " is gone (" + r.error + ")";
    case transport::RecvStatus::malformed: return who + " sent a malformed message (" + r.error + ")";
    case transport::RecvStatus::ok:
      if (r.msg.type == kRingAbort) return who + " aborted: " + r.msg.payload.substr(0, kMaxAbortText);
      return who + " sent an unexpected message (type " + std::to_string(r.msg.type) + ")";
  }
  return {};
}

// Waits for the next data message from the predecessor (at most timeout_ms) and checks it as a
// chunk of this collective. Also watches the successor link at least every kPollNextEvery.
// It blocks, not busy-polls: ranks in worker processes share their host's cores with the
// coordinator and the links' I/O threads, and a spinning rank made them preempt the rank still
// computing (2 workers x 1 thread + coordinator on 2 cores, a 7B: 5.05 tok/s spinning against
// 6.19 blocking, the computing rank's core 79% its own). A wake-up costs ~0.1 ms a collective.
std::string RingComm::recv_data(Header* h, std::string* out, bool successor_needed) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms());
  auto next_poll = Clock::now() + kPollNextEvery;
  bool successor_finished = false;  // closed after this rank's last send to it: it is done, not dead
  while (true) {
    if (!successor_finished && Clock::now() >= next_poll) {
      bool closed = false;
      if (auto e = poll_next(&closed); !e.empty()) {
        if (successor_needed || !closed) return fail(e);
        successor_finished = true;
      }
      next_poll = Clock::now() + kPollNextEvery;
    }
    const int wait = std::min<int>(remaining_ms(deadline), static_cast<int>(kPollNextEvery.count()));
    transport::Received r = listener_->recv(wait);
    if (r.status == transport::RecvStatus::ok) {
      if (r.peer != prev_peer_) return fail("a message from a peer that is not the predecessor");
      if (auto e = check_data(r.msg, seq_, h); !e.empty()) return fail(prev_name() + ": " + e);
      *out = std::move(r.msg.tensors[0].data);
      return {};
    }
    if (r.status == transport::RecvStatus::malformed) return fail(prev_name() + " sent a malformed message (" + r.error + ")");
    if (r.status == transport::RecvStatus::closed) return fail(prev_name() + " is gone (" + r.error + ")");
    if (Clock::now() >= deadline) {
      if (auto e = successor_finished ? std::string() : poll_next(); !e.empty()) return fail(e);
      return fail("timed out after " + std::to_string(timeout_ms()) + " ms waiting for " + prev_name());
    }
  }
}

std::string RingComm::prev_name() const { return "predecessor rank " + std::to_string((rank_ + size_ - 1) % size_); }

bool RingComm::matches(const Header& h, uint32_t phase, uint64_t index, uint32_t origin, size_t count) {
  return h.phase == phase && h.index == index && h.origin == origin && h.count == count;
}

std::string RingComm::unexpected(const Header& h, const std::string& expected) {
  return fail(prev_name() + " sent {" + h.describe() + "}, expected " + expected);
}

std::string RingComm::recv_chunk(uint32_t phase, uint64_t index, uint32_t origin, size_t count, std::string* out,
                                 bool successor_needed) {
  Header h;
  if (auto e = recv_data(&h, out, successor_needed); !e.empty()) return e;
  if (!matches(h, phase, index, origin, count))
    return unexpected(h, "phase " + std::to_string(phase) + " chunk " + std::to_string(index) + " origin " +
                             std::to_string(origin) + " count " + std::to_string(count));
  return {};
}

std::string RingComm::send_chunk_bytes(uint32_t phase, uint32_t index, uint32_t origin, std::string bytes) {
  Header h{seq_, phase, index, origin, bytes.size() / sizeof(float)};
  transport::Message m;
  m.type = kRingData;
  m.payload = h.encode();
  transport::Tensor t;
  t.dtype = transport::WireDType::F32;
  t.shape = {static_cast<int64_t>(h.count)};
  t.data = std::move(bytes);
  m.tensors.push_back(std::move(t));
  if (auto e = next_->send(m); !e.empty())
    return fail("send to successor rank " + std::to_string((rank_ + 1) % size_) + ": " + e);
  return {};
}

std::string RingComm::send_chunk(uint32_t phase, uint32_t index, uint32_t origin, const float* src, size_t count) {
  return send_chunk_bytes(phase, index, origin, std::string(reinterpret_cast<const char*>(src), count * sizeof(float)));
}

std::string RingComm::all_reduce_sum(float* data, size_t n) {
  if (auto e = begin(); !e.empty()) return e;
  if (size_ == 1 || n == 0) return {};
  const size_t C = kRingChunkFloats, K = (n + C - 1) / C;
  auto off = [&](size_t k) { return k * C; };
  auto len = [&](size_t k) { return std::min(C, n - k * C); };
  const uint32_t last = static_cast<uint32_t>(size_ - 1);
  std::string bytes;
  if (rank_ == 0) {
    // Starts every chain, at most kRingWindow chunks ahead of the results coming back.
    const size_t window = static_cast<size_t>(kRingWindow(size_));
    size_t started = 0;
    for (size_t back = 0; back < K; ++back) {
      for (; started < K && started < back + window; ++started)
        if (auto e = send_chunk(kPhaseReduce, started, 0, data + off(started), len(started)); !e.empty()) return e;
      // With 2 ranks the results are not passed on: once every chain is started, rank 1 may finish.
      if (auto e = recv_chunk(kPhaseResult, back, last, len(back), &bytes, started < K || size_ > 2); !e.empty())
        return e;
      std::memcpy(data + off(back), bytes.data(), bytes.size());
      if (size_ > 2)
        if (auto e = send_chunk_bytes(kPhaseResult, back, last, std::move(bytes)); !e.empty()) return e;
    }
    return {};
  }
  if (rank_ == size_ - 1) {
    // The end of every chain: its sum is final; it starts the result's way round the ring.
    for (size_t k = 0; k < K; ++k) {
      if (auto e = recv_chunk(kPhaseReduce, k, rank_ - 1, len(k), &bytes); !e.empty()) return e;
      float* p = reinterpret_cast<float*>(bytes.data());
      float* x = data + off(k);
      for (size_t i = 0; i < len(k); ++i) x[i] = p[i] + x[i];
      std::memcpy(p, x, bytes.size());
      if (auto e = send_chunk_bytes(kPhaseResult, k, last, std::move(bytes)); !e.empty()) return e;
    }
    return {};
  }
  // A middle rank: partial sums and results from the predecessor, interleaved, each in chunk order.
  // A result never overtakes its own partial (it is made after the partial passed every rank), so
  // data's chunk k is still this rank's input when the partial for k arrives.
  const bool forward_result = rank_ != size_ - 2;  // the result has reached every rank after n-2
  size_t reduced = 0, resulted = 0;
  while (reduced < K || resulted < K) {
    Header h;
    if (auto e = recv_data(&h, &bytes, reduced < K || forward_result); !e.empty()) return e;
    if (reduced < K && matches(h, kPhaseReduce, reduced, rank_ - 1, len(reduced))) {
      float* p = reinterpret_cast<float*>(bytes.data());
      const float* x = data + off(reduced);
      for (size_t i = 0; i < len(reduced); ++i) p[i] = p[i] + x[i];
      if (auto e = send_chunk_bytes(kPhaseReduce, reduced, rank_, std::move(bytes)); !e.empty()) return e;
      ++reduced;
    } else if (resulted < reduced && matches(h, kPhaseResult, resulted, last, len(resulted))) {
      std::memcpy(data + off(resulted), bytes.data(), bytes.size());
      if (forward_result)
        if (auto e = send_chunk_bytes(kPhaseResult, resulted, last, std::move(bytes)); !e.empty()) return e;
      ++resulted;
    } else {
      return unexpected(h, "partial sum " + std::to_string(reduced) + " or result " + std::to_string(resulted));
    }
  }
  return {};
}

std::string RingComm::all_gather(const float* in, size_t n, float* out) {
  if (auto e = begin(); !e.empty()) return e;
  if (n) std::memcpy(out + rank_ * n, in, n * sizeof(float));
  if (size_ == 1 || n == 0) return {};
  const size_t C = kRingChunkFloats, K = (n + C - 1) / C;
  std::string bytes;
  // Step s: pass on block (r - s), which arrived in step s - 1 (or is ours), and take block
  // (r - s - 1) from the predecessor; chunk by chunk, one sent then one received, so no link ever
  // holds more than two chunks and the ring cannot fill up.
  for (int s = 0; s < size_ - 1; ++s) {
    const int sb = (rank_ - s + size_) % size_, rb = (rank_ - s - 1 + size_) % size_;
    for (size_t k = 0; k < K; ++k) {
      const size_t o = k * C, l = std::min(C, n - o);
      if (auto e = send_chunk(kPhaseGather, k, sb, out + sb * n + o, l); !e.empty()) return e;
      const bool more_sends = s < size_ - 2 || k + 1 < K;
      if (auto e = recv_chunk(kPhaseGather, k, rb, l, &bytes, more_sends); !e.empty()) return e;
      std::memcpy(out + rb * n + o, bytes.data(), bytes.size());
    }
  }
  return {};
}

std::string RingComm::broadcast(float* data, size_t n, int root) {
  if (auto e = begin(); !e.empty()) return e;
  if (root < 0 || root >= size_) return fail("broadcast root " + std::to_string(root) + " out of range");
  if (size_ == 1 || n == 0) return {};
  const size_t C = kRingChunkFloats, K = (n + C - 1) / C;
  const uint32_t origin = static_cast<uint32_t>(root);
  // A chain root -> root+1 -> ... -> root-1: it ends before the root, so it is no cycle and the
  // root may send all chunks at once.
  if (rank_ == root) {
    for (size_t k = 0; k < K; ++k)
      if (auto e = send_chunk(kPhaseBcast, k, origin, data + k * C, std::min(C, n - k * C)); !e.empty()) return e;
    return {};
  }
  const bool forward = (rank_ + 1) % size_ != root;
  std::string bytes;
  for (size_t k = 0; k < K; ++k) {
    if (auto e = recv_chunk(kPhaseBcast, k, origin, std::min(C, n - k * C), &bytes, forward); !e.empty()) return e;
    std::memcpy(data + k * C, bytes.data(), bytes.size());
    if (forward)
      if (auto e = send_chunk_bytes(kPhaseBcast, k, origin, std::move(bytes)); !e.empty()) return e;
  }
  return {};
}

namespace {
// One receive on the link to the successor while the ring forms: *acked once its answer to this
// rank's hello came; an error for anything else that came, or a lost link.
std::string take_hello_ack(const transport::Received& r, int next_rank, int n, bool* acked) {
  const std::string who = "rank " + std::to_string(next_rank);
  if (r.status == transport::RecvStatus::ok) {
    RingComm::Header h;
    if (r.msg.type != kRingHello || !RingComm::Header::decode(r.msg.payload, &h) || h.phase != kPhaseHelloAck)
      return who + " answered the hello with message type " + std::to_string(r.msg.type);
    if (h.origin != static_cast<uint32_t>(next_rank) || h.count != static_cast<uint64_t>(n))
      return who + "'s answer says rank " + std::to_string(h.origin) + " of " + std::to_string(h.count) +
             ", expected rank " + std::to_string(next_rank) + " of " + std::to_string(n);
    *acked = true;
  }
  if (r.status == transport::RecvStatus::malformed) return "malformed answer from " + who + ": " + r.error;
  if (r.status == transport::RecvStatus::closed) return who + " is gone (" + r.error + ")";
  return {};
}
}  // namespace

std::unique_ptr<RingComm> make_ring_comm(const std::vector<std::string>& addresses, int rank, std::string* error,
                                         int timeout_ms, std::unique_ptr<transport::Listener> listener) {
  const int n = static_cast<int>(addresses.size());
  auto failed = [&](std::string why) -> std::unique_ptr<RingComm> {
    *error = "ring rank " + std::to_string(rank) + ": " + why;
    return nullptr;
  };
  if (n < 1 || rank < 0 || rank >= n) return failed("rank out of range for " + std::to_string(n) + " addresses");
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  try {
    if (!listener) listener = transport::listen(addresses[rank]);
  } catch (const std::exception& e) {
    return failed(std::string("cannot listen: ") + e.what());
  }
  if (n == 1) return std::make_unique<RingComm>(rank, 1, std::move(listener), nullptr, "");
  const int next_rank = (rank + 1) % n, prev_rank = (rank + n - 1) % n;
  // An inproc listener must exist before anyone dials it; the successor may not have started yet.
  std::unique_ptr<transport::Link> next;
  std::string last_error;
  while (!next) {
    try {
      next = transport::connect(addresses[next_rank]);
    } catch (const std::exception& e) {
      last_error = e.what();
      if (Clock::now() >= deadline) return failed("cannot dial rank " + std::to_string(next_rank) + ": " + last_error);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  RingComm::Header hello{0, kPhaseHello, 0, static_cast<uint32_t>(rank), static_cast<uint64_t>(n)};
  transport::Message m;
  m.type = kRingHello;
  m.payload = hello.encode();
  if (auto e = next->send(m); !e.empty()) return failed("hello to rank " + std::to_string(next_rank) + ": " + e);
  bool acked = false;  // the successor answered our hello
  while (true) {
    const transport::Received r = listener->recv(std::min(remaining_ms(deadline), 20));
    if (r.status == transport::RecvStatus::ok) {
      RingComm::Header h;
      if (r.msg.type != kRingHello || !RingComm::Header::decode(r.msg.payload, &h) || h.phase != kPhaseHello)
        return failed("expected a ring hello, got message type " + std::to_string(r.msg.type));
      if (h.origin != static_cast<uint32_t>(prev_rank) || h.count != static_cast<uint64_t>(n))
        return failed("hello from rank " + std::to_string(h.origin) + " of " + std::to_string(h.count) +
                      ", expected rank " + std::to_string(prev_rank) + " of " + std::to_string(n) +
                      " (do all ranks have the same address list?)");
      // Answer it, and wait for the successor's answer on `next`. Reading that link is also what
      // completes its data-lane handshake (transport/tcp_lane.h): the listener's lane offer comes
      // before the answer on the same connection. Without this wait nothing read `next` until a
      // collective ran longer than kPollNextEvery, so a decode's all-reduces went through ZeroMQ's
      // I/O threads for the whole run (measured: a 4 KiB all-reduce of two ranks, 100 us on ZeroMQ,
      // 24 us on the lane).
      RingComm::Header ack{0, kPhaseHelloAck, 0, static_cast<uint32_t>(rank), static_cast<uint64_t>(n)};
      transport::Message am;
      am.type = kRingHello;
      am.payload = ack.encode();
      if (auto e = listener->send(r.peer, am); !e.empty())
        return failed("answer to rank " + std::to_string(prev_rank) + "'s hello: " + e);
      while (!acked) {
        if (auto e = take_hello_ack(next->recv(std::min(remaining_ms(deadline), 20)), next_rank, n, &acked); !e.empty())
          return failed(e);
        if (!acked && Clock::now() >= deadline)
          return failed("no answer to the hello from rank " + std::to_string(next_rank) + " within " +
                        std::to_string(timeout_ms) + " ms");
      }
      return std::make_unique<RingComm>(rank, n, std::move(listener), std::move(next), r.peer);
    }
    if (r.status == transport::RecvStatus::malformed) return failed("malformed hello: " + r.error);
    // Keep the successor link serviced (its data-lane handshake runs in recv) and watch it; its
    // answer to our hello may come first.
    if (auto e = take_hello_ack(next->recv(0), next_rank, n, &acked); !e.empty()) return failed(e);
    if (Clock::now() >= deadline)
      return failed("no hello from rank " + std::to_string(prev_rank) + " within " + std::to_string(timeout_ms) + " ms");
  }
}

}  // namespace herd
