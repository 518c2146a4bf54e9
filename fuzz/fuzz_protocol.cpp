// herd's cluster protocol decoder on arbitrary bytes: the transport frames (transport/codec.h
// decode_frames) and then cluster/wire.h unpack<T> of every message type, with the checks a
// worker or coordinator applies after unpacking (check_echo_payload). A message that unpacks must
// pack again and unpack to the same bytes. Only ProtocolError may come out.
//
// Input: byte 0 picks the mode. Mode even: byte 1-2 = message type, the rest = the cereal payload
// (every type is tried on it). Mode odd: the rest is a frame list, each frame a u16 length + bytes
// (the envelope, the payload, tensor headers and data), run through decode_frames first.
#include <cstdlib>

#include "cluster/protocol.h"
#include "cluster/wire.h"
#include "fuzz/fuzz_util.h"
#include "transport/codec.h"

using namespace herd::cluster;

namespace {

template <class T>
void try_unpack(const Message& m) {
  Message probe = m;
  probe.type = static_cast<uint16_t>(T::kType);  // every decoder sees the payload, whatever the type says
  try {
    T body = unpack<T>(probe);
    Message again = pack(body);
    T body2 = unpack<T>(again);  // what was accepted re-encodes to something accepted ...
    if (pack(body2).payload != again.payload) std::abort();  // ... and identically
    if constexpr (std::is_same_v<T, Ping>) check_echo_payload(probe, body.bytes);
    if constexpr (std::is_same_v<T, Pong>) check_echo_payload(probe, body.bytes);
  } catch (const ProtocolError&) {
  }
}

void all_types(const Message& m) {
  try_unpack<Hello>(m);
  try_unpack<Assign>(m);
  try_unpack<Ready>(m);
  try_unpack<ErrorMsg>(m);
  try_unpack<Forward>(m);
  try_unpack<Result>(m);
  try_unpack<WeightRequest>(m);
  try_unpack<WeightChunk>(m);
  try_unpack<Ping>(m);
  try_unpack<Pong>(m);
  try_unpack<Reset>(m);
  try_unpack<Stop>(m);
  try_unpack<TpRing>(m);
  try_unpack<HopOffer>(m);
  try_unpack<HopAnswer>(m);
  (void)msg_type_name(m.type);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  herd::fuzz::Input in{data, size};
  const uint8_t mode = in.byte();
  if (mode % 2 == 0) {
    Message m;
    m.type = in.u16();
    m.payload = in.rest();
    all_types(m);
    return 0;
  }
  std::vector<std::string> frames;
  while (!in.empty() && frames.size() < 16) frames.push_back(in.take(in.u16()));
  try {
    Message m = herd::transport::decode_frames(std::move(frames));
    all_types(m);
    (void)herd::transport::encode_frames(m);
  } catch (const ProtocolError&) {
  }
  return 0;
}
