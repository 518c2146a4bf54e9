// The data lane: a plain TCP connection beside a ZeroMQ link, read and written by the threads that
// use the link. Why: ZeroMQ moves every message through its I/O threads, so one hop costs three
// thread wake-ups (sender's I/O thread, receiver's I/O thread, receiver), ~100 µs each on a VM
// whose idle vCPUs halt; a write() on a lane lands straight in the receiver's socket buffer, where
// a receiver that is polling finds it with no wake-up at all. ZeroMQ keeps the handshake, the
// heartbeats that notice a dead host, and every peer that cannot reach the lane port.
//
// Wire format, per message (little endian): u32 magic 'HRDL' | u32 n_frames | then per frame
// u64 n_bytes | bytes. The frames are transport/codec.h's, so a message is judged by the same
// decoder whichever way it came. A reader never trusts a length before the bytes arrive: frame
// buffers grow with what was actually received, so a hostile header cannot make it allocate.
//
// Sealed (the default: a lane between two peers of a secure cluster, transport/security.h): after
// seal(), every message is one AEAD record (libsodium's ChaCha20-Poly1305, IETF variant):
//   u32 magic 'HRDS' | u32 n_frames | u64 body_bytes | ciphertext[body_bytes] | tag[16]
// where the plaintext body is, per frame, u64 n_bytes | bytes. The 16-byte header is the associated
// data (authenticated, not encrypted); the nonce is the message's sequence number in its direction
// (0, 1, 2, ... as u64 little endian after 4 zero bytes), counted by both ends and never sent, and
// each direction has its own key (derived per connection from a session secret the listener sent
// over the CURVE-encrypted ZeroMQ link), so a (key, nonce) pair is never used twice. A frame that
// was altered, replayed, reordered, dropped or spliced from another session fails the tag check
// and the lane fails with "lane from HOST:PORT: frame N failed authentication" (N = the sequence
// number it arrived at); a clear message after seal() fails on its magic. Nothing is delivered
// from a record before its tag is checked.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

namespace herd::transport {

constexpr uint32_t kLaneMagic = 0x4C445248;  // "HRDL"
constexpr uint32_t kLaneMaxFrames = 16;
constexpr uint32_t kLaneSealedMagic = 0x53445248;  // "HRDS"
constexpr size_t kLaneKeyBytes = 32;               // a ChaCha20-Poly1305 key
constexpr size_t kLaneTagBytes = 16;
constexpr size_t kLaneSealedHeaderBytes = 16;
constexpr uint64_t kLaneMaxBufferedBytes = uint64_t{64} << 20;

class LaneSocket {
 public:
  // Takes ownership of a connected TCP socket: non-blocking, TCP_NODELAY, close-on-exec.
  // max_message_bytes bounds one message (sum of frames); more is a protocol error.
  LaneSocket(int fd, uint64_t max_message_bytes);
  ~LaneSocket();
  LaneSocket(const LaneSocket&) = delete;
  LaneSocket& operator=(const LaneSocket&) = delete;

  int fd() const { return fd_; }
  // Reads whatever is available without blocking and splits it into messages. False once the
  // connection is closed or the stream is invalid (error() says which; nothing more is read).
  bool pump();
  bool has_message() const { return !ready_.empty(); }
  uint64_t buffered_bytes() const { return ready_bytes_; }  // complete messages not yet popped
  std::vector<std::string> pop();  // the oldest complete message; has_message() must be true
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  bool protocol_error() const { return protocol_error_; }  // the peer sent bytes that are not a lane stream

  // Writes one message, waiting at most timeout_ms for the peer to take it; while it waits it
  // keeps reading (a peer sending to us at the same time cannot deadlock us), up to
  // kLaneMaxBufferedBytes of complete messages not yet popped: a peer that sends without ever
  // reading what we send cannot grow our memory while we wait (the send then times out). "" or
  // the reason.
  std::string send(const std::vector<std::string>& frames, int timeout_ms);
  // A lower bound for the first message only (a listener's pending lane expects a small LaneAttach
  // and keeps reading what follows it under the full bound).
  void limit_first_message(uint64_t bytes) { first_max_ = bytes; }
  // Stop reading after the first message until seal() (a listener's pending lane: the LaneAttach is
  // clear, everything after it sealed with keys known only once its ticket has been looked up).
  void hold_after_first() { hold_ = true; }
  // From now on every message sent and received is sealed (see the header comment) with these
  // per-direction keys. Bytes held after the first message are parsed as sealed. `peer` names the
  // other end in errors (default: its address, from getpeername).
  void seal(const uint8_t (&send_key)[kLaneKeyBytes], const uint8_t (&recv_key)[kLaneKeyBytes], std::string peer = {});
  bool sealed() const { return sealed_; }

 private:
  bool fail(std::string why, bool protocol);
  bool parse(const char* p, size_t n);  // feeds bytes to the state machine
  bool parse_sealed(const char* p, size_t n);
  bool open_record();                   // the sealed record in sbody_ is complete: check and split it
  void finish_frame();                  // the current frame body is complete
  std::string send_sealed(const std::vector<std::string>& frames, int timeout_ms);
  std::string write_all(std::vector<struct iovec>& iov, int timeout_ms);

  int fd_ = -1;
  uint64_t max_message_;
  uint64_t first_max_ = UINT64_MAX;
  bool first_ = true;
  std::string error_;
  bool protocol_error_ = false;
  // Receive state: the 8-byte message header, then per frame an 8-byte length and its bytes.
  enum class State { MsgHeader, FrameLength, FrameBody } state_ = State::MsgHeader;
  char hdr_[8];
  size_t hdr_have_ = 0;
  uint32_t frames_left_ = 0;
  uint64_t body_len_ = 0, body_have_ = 0, msg_bytes_ = 0;
  std::vector<std::string> cur_;
  std::deque<std::vector<std::string>> ready_;
  uint64_t ready_bytes_ = 0;
  // Sealed mode.
  bool hold_ = false, held_ = false, sealed_ = false;
  std::string stash_;  // bytes read past the first message while held
  uint8_t send_key_[kLaneKeyBytes] = {}, recv_key_[kLaneKeyBytes] = {};
  uint64_t send_seq_ = 0, recv_seq_ = 0;
  std::string peer_;
  char shdr_[kLaneSealedHeaderBytes];
  size_t shdr_have_ = 0;
  bool in_body_ = false;
  uint64_t sbody_len_ = 0, sbody_have_ = 0;  // sbody_len_ includes the tag
  uint32_t sframes_ = 0;
  std::string sbody_;
  std::string sbuf_;  // send side: the record being written (reused)
};

// A listening TCP socket on `host` (an IPv4/IPv6 literal; "" or "0.0.0.0" = every interface), on
// an ephemeral port. Returns the fd and sets *port; throws std::runtime_error.
int lane_listen(const std::string& host, uint16_t* port);
// Accepts one pending connection on a non-blocking listening socket; -1 when none is waiting.
int lane_accept(int listen_fd);
// Connects to host:port (name or literal), waiting at most timeout_ms; throws std::runtime_error.
int lane_connect(const std::string& host, uint16_t port, int timeout_ms);

// "tcp://HOST:PORT" (HOST may be [v6]) -> HOST without brackets; "" when it is not that form.
std::string tcp_host_of(const std::string& address);

}  // namespace herd::transport
