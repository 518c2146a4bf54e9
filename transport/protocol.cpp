#include "transport/protocol.h"

namespace herd::transport {

const char* msg_type_name(uint16_t type) {
  switch (static_cast<MsgType>(type)) {
    case MsgType::Hello: return "Hello";
    case MsgType::Assign: return "Assign";
    case MsgType::Ready: return "Ready";
    case MsgType::Error: return "Error";
    case MsgType::Forward: return "Forward";
    case MsgType::Result: return "Result";
    case MsgType::Reset: return "Reset";
    case MsgType::Stop: return "Stop";
    case MsgType::WeightRequest: return "WeightRequest";
    case MsgType::WeightChunk: return "WeightChunk";
  }
  return "unknown message type";
}

}  // namespace herd::transport
