#include "cluster/protocol.h"

namespace herd::cluster {

void check_layer_range(const model::LayerRange& r) {
  if (r.first < 0 || r.end <= r.first || r.end > kMaxLayers || r.embedding != (r.first == 0))
    throw ProtocolError("Assign: layer range " + std::to_string(r.first) + ".." + std::to_string(r.end) +
                        (r.embedding ? " with" : " without") + " the embedding (must be 0 <= first < end <= " +
                        std::to_string(kMaxLayers) + ", the embedding on the stage at layer 0)");
}

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
    case MsgType::Ping: return "Ping";
    case MsgType::Pong: return "Pong";
    case MsgType::TpRing: return "TpRing";
    case MsgType::HopOffer: return "HopOffer";
    case MsgType::HopAnswer: return "HopAnswer";
  }
  return "unknown message type";
}

void check_echo_payload(const Message& m, uint64_t bytes) {
  if (bytes == 0) {
    if (!m.tensors.empty()) throw ProtocolError(std::string(msg_type_name(m.type)) + " of 0 bytes carries a tensor");
    return;
  }
  if (m.tensors.size() != 1 || m.tensors[0].dtype != WireDType::U8 ||
      m.tensors[0].shape != std::vector<int64_t>{static_cast<int64_t>(bytes)})
    throw ProtocolError(std::string(msg_type_name(m.type)) + " must carry one u8 [" + std::to_string(bytes) + "] tensor");
}

}  // namespace herd::cluster

namespace herd::cluster {

Forward::Forward(uint64_t request_id_, int64_t pos0, int64_t n, bool all_logits, int32_t seq_id)
    : request_id(request_id_) {
  for (int64_t i = 0; i < n; ++i) {
    pos.push_back(static_cast<int32_t>(pos0 + i));
    seq.push_back(seq_id);
    logits.push_back(all_logits || i + 1 == n ? 1 : 0);
  }
}

int64_t Forward::n_outputs() const {
  int64_t n = 0;
  for (uint8_t f : logits) n += f != 0;
  return n;
}

}  // namespace herd::cluster
