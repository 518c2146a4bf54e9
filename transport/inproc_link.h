// In-memory links: a Listener registered under "inproc://NAME" in this process, and Links that
// connect to it, each a pair of queues. Messages still go through encode_frames/decode_frames, so
// a whole cluster can run inside one test process through exactly the code paths of ZmqLink.
// Closing either end makes the other's recv return `closed` (as a dead worker would).
#pragma once

#include <memory>
#include <string>

#include "transport/link.h"

namespace herd::transport {

struct InprocHub;
struct InprocConn;

class InprocListener : public Listener {
 public:
  // Throws std::runtime_error when NAME is already taken.
  explicit InprocListener(const std::string& address);
  ~InprocListener() override;
  SendError send_frames(const std::string& peer, std::vector<std::string> frames) override;
  Received recv(int timeout_ms) override;
  std::string address() const override { return address_; }
  bool reachable(const std::string& peer) override;

 private:
  std::string address_;
  std::shared_ptr<InprocHub> hub_;
};

class InprocLink : public Link {
 public:
  // Throws std::runtime_error when nobody listens on the address.
  explicit InprocLink(const std::string& address);
  ~InprocLink() override;
  SendError send_frames(std::vector<std::string> frames) override;
  Received recv(int timeout_ms) override;
  bool alive() const override;
  std::string address() const override { return address_; }

 private:
  std::string address_;
  std::shared_ptr<InprocConn> conn_;
};

}  // namespace herd::transport
