// The ring Comm's wire format (engine/ring_comm.cpp), in one place for it and for the tests that
// play a misbehaving peer: message types, phases and the 24-byte header of every ring message.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "engine/ring_comm.h"

namespace herd {

// Message types of the ring (outside protocol.h's MsgType range: a worker's listener never
// mistakes one for its own protocol).
inline constexpr uint16_t kRingHello = 0xC101, kRingData = 0xC102, kRingAbort = 0xC103, kRingBye = 0xC104,
                                  kRingByeAck = 0xC105;
// Phases: which collective (and which leg of the all-reduce) a data message belongs to.
inline constexpr uint32_t kPhaseHello = 1, kPhaseReduce = 2, kPhaseResult = 3, kPhaseGather = 4, kPhaseBcast = 5;
// A rank's answer to its predecessor's hello (a kRingHello back over the listener, origin = the
// answering rank, count = the group size): see make_ring_comm.
inline constexpr uint32_t kPhaseHelloAck = 6;

// 24 bytes, little-endian (every host herd runs on is): seq | phase | index | origin | count.
struct RingComm::Header {
  uint32_t seq = 0, phase = 0, index = 0, origin = 0;
  uint64_t count = 0;  // floats in the tensor (Hello: the group size)
  static constexpr size_t kBytes = 24;

  std::string encode() const {
    std::string s(kBytes, '\0');
    std::memcpy(s.data(), &seq, 4);
    std::memcpy(s.data() + 4, &phase, 4);
    std::memcpy(s.data() + 8, &index, 4);
    std::memcpy(s.data() + 12, &origin, 4);
    std::memcpy(s.data() + 16, &count, 8);
    return s;
  }
  static bool decode(const std::string& s, Header* h) {
    if (s.size() != kBytes) return false;
    std::memcpy(&h->seq, s.data(), 4);
    std::memcpy(&h->phase, s.data() + 4, 4);
    std::memcpy(&h->index, s.data() + 8, 4);
    std::memcpy(&h->origin, s.data() + 12, 4);
    std::memcpy(&h->count, s.data() + 16, 8);
    return true;
  }
  std::string describe() const {
    return "seq " + std::to_string(seq) + " phase " + std::to_string(phase) + " chunk " + std::to_string(index) +
           " origin " + std::to_string(origin) + " count " + std::to_string(count);
  }
};

}  // namespace herd
