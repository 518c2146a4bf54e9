// A Link carries messages between two processes (or two threads): a control message (a type tag +
// a cereal-serialised payload) plus optional raw tensor frames. Every implementation goes through
// the same frame codec (transport/codec.h), so a malformed frame is rejected the same way whether it
// came over ZeroMQ or from an in-memory queue.
//
// Two shapes: a Link is one connection, opened by the side that dials (a coordinator to a worker, a
// worker to the next stage); a Listener is the side that binds and serves many peers, each named
// by an opaque peer id. Nothing here hangs: recv takes a timeout and returns a status value.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/busy_poll.h"

namespace herd::transport {

// Element types a tensor frame may carry. Values are the wire encoding.
enum class WireDType : uint8_t { F32 = 0, F16 = 1, I32 = 2, U8 = 3 };  // U8: raw bytes (weight chunks)
size_t wire_dtype_size(WireDType t);  // bytes per element
const char* wire_dtype_name(WireDType t);

struct Tensor {
  WireDType dtype = WireDType::F32;
  std::vector<int64_t> shape;  // row-major, shape.back() fastest; at most kMaxTensorRank dims
  std::string data;            // raw little-endian elements, exactly prod(shape) * wire_dtype_size(dtype) bytes
  int64_t n_elements() const;
};

struct Message {
  uint16_t type = 0;            // protocol::MsgType
  std::string payload;          // cereal portable-binary payload of that type
  std::vector<Tensor> tensors;  // raw frames (hidden states, logits, token ids)
};

enum class RecvStatus {
  ok,
  timeout,    // nothing arrived within the timeout
  closed,     // the peer is gone (connection lost, heartbeat timed out, link closed)
  malformed,  // something arrived but failed validation; `error` says why (the peer should be dropped)
};

struct Received {
  RecvStatus status = RecvStatus::timeout;
  std::string error;  // human-readable reason when status != ok
  std::string peer;   // Listener only: who sent it
  Message msg;
};

// Decodes one multipart message into a Received: ok, or malformed with the codec's reason.
// Shared by every Link implementation so they judge bytes the same way.
Received decode_received(std::vector<std::string>&& frames, std::string peer);

// Result of a send: empty string on success, else the reason.
using SendError = std::string;

class Link {
 public:
  virtual ~Link() = default;
  SendError send(const Message& m);  // encodes, then send_frames
  SendError send(Message&& m);       // the same, moving the tensors' bytes instead of copying
  // Raw frames as transport/codec.h lays them out (tests use this to send malformed messages).
  virtual SendError send_frames(std::vector<std::string> frames) = 0;
  // Waits at most timeout_ms (0 = just poll) for one message.
  virtual Received recv(int timeout_ms) = 0;
  // False once the peer is known to be gone (recv has returned `closed`).
  virtual bool alive() const = 0;
  virtual std::string address() const = 0;
};

class Listener {
 public:
  virtual ~Listener() = default;
  SendError send(const std::string& peer, const Message& m);
  SendError send(const std::string& peer, Message&& m);
  virtual SendError send_frames(const std::string& peer, std::vector<std::string> frames) = 0;
  virtual Received recv(int timeout_ms) = 0;
  virtual std::string address() const = 0;
  // Whether `peer`'s connection is still up (a worker asks before it lets another coordinator
  // have it). Costs the peer one ignored control message on ZeroMQ.
  virtual bool reachable(const std::string& peer) = 0;
};

// By scheme: "inproc://NAME" -> in-memory (transport/inproc_link.h); "tcp://..." / "ipc://..." ->
// ZeroMQ. A plain "HOST:PORT" means tcp://HOST:PORT. Throw std::runtime_error when the address is
// unusable (bad scheme, port in use, nobody listening on an inproc name).
std::unique_ptr<Link> connect(const std::string& address);
std::unique_ptr<Listener> listen(const std::string& address);
std::string normalize_address(const std::string& address);
// Checks an address's syntax without touching the network: a known scheme; for tcp:// a host (a
// name, an IPv4 address, or an IPv6 address in brackets) and a port in 1..65535 (also "*" or 0 =
// any free port when `listening`). Throws std::invalid_argument naming the address and what is
// wrong. connect() and listen() call it first.
void check_address(const std::string& address, bool listening);

// Busy polling, for the waits on a pipeline's hot path (a worker between Forwards, the coordinator
// for a Result). A blocked receiver costs a thread wake-up per message — three per ZeroMQ hop
// (sender's I/O thread, receiver's I/O thread, receiver) — and a wake-up of an idle virtual CPU that
// has halted costs ~100 µs on a VM. recv_busy polls recv(0) until `spin_until`, yielding the CPU
// between polls (a computing process on the same core keeps it), and then waits as recv(timeout_ms).
using BusyClock = std::chrono::steady_clock;
Received recv_busy(Link& l, BusyClock::time_point spin_until, int timeout_ms);
Received recv_busy(Listener& l, BusyClock::time_point spin_until, int timeout_ms);
// How long a hot-path wait busy-polls before it blocks (common/busy_poll.h).
using herd::busy_poll_window;

}  // namespace herd::transport
