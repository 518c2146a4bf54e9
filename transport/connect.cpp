#include <stdexcept>

#include "transport/codec.h"
#include "transport/inproc_link.h"
#include "transport/link.h"
#include "transport/zmq_link.h"

namespace herd::transport {

SendError Link::send(const Message& m) { return send_frames(encode_frames(m)); }
SendError Listener::send(const std::string& peer, const Message& m) { return send_frames(peer, encode_frames(m)); }

std::string normalize_address(const std::string& address) {
  if (address.find("://") != std::string::npos) return address;
  return "tcp://" + address;
}

std::unique_ptr<Link> connect(const std::string& address) {
  const std::string a = normalize_address(address);
  if (a.rfind("inproc://", 0) == 0) return std::make_unique<InprocLink>(a);
  if (a.rfind("tcp://", 0) == 0 || a.rfind("ipc://", 0) == 0) return std::make_unique<ZmqLink>(a);
  throw std::runtime_error("unsupported address " + address + " (use HOST:PORT, tcp://, ipc:// or inproc://)");
}

std::unique_ptr<Listener> listen(const std::string& address) {
  const std::string a = normalize_address(address);
  if (a.rfind("inproc://", 0) == 0) return std::make_unique<InprocListener>(a);
  if (a.rfind("tcp://", 0) == 0 || a.rfind("ipc://", 0) == 0) return std::make_unique<ZmqListener>(a);
  throw std::runtime_error("unsupported address " + address + " (use HOST:PORT, tcp://, ipc:// or inproc://)");
}

}  // namespace herd::transport
