// The data lane's stream framing (transport/tcp_lane.h LaneSocket) on arbitrary bytes, delivered
// through a local socketpair (no network) in chunks whose sizes the input chooses, then every
// complete message through the frame decoder (transport/codec.h decode_frames). A hostile length
// must never allocate ahead of the bytes received; only protocol errors may come out.
//
// Input: byte 0 = chunk size selector, byte 1 = first-message bound selector (bit 7 set: the lane is
// sealed instead, with fuzz_util.h's fixed keys, so the sealed record parser and the AEAD check see
// the stream; make_seeds writes authentic sealed seeds), the rest = the stream.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "fuzz/fuzz_util.h"
#include "transport/codec.h"
#include "transport/tcp_lane.h"

using namespace herd::transport;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  herd::fuzz::Input in{data, size};
  const size_t chunk = 1 + in.byte() * 67;  // 1 .. 17086 bytes per write
  const uint8_t first = in.byte();
  const std::string stream = in.rest();
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  ::fcntl(sv[1], F_SETFL, ::fcntl(sv[1], F_GETFL, 0) | O_NONBLOCK);
  {
    LaneSocket lane(sv[0], uint64_t{1} << 20);  // owns sv[0]
    if (first & 0x80) {
      uint8_t out[kLaneKeyBytes], in[kLaneKeyBytes];
      std::memcpy(out, herd::fuzz::kLaneKeyOut, sizeof out);
      std::memcpy(in, herd::fuzz::kLaneKeyIn, sizeof in);
      lane.seal(out, in, "fuzz");
    } else if (first & 1) {
      lane.limit_first_message(first * 4u);
    }
    size_t off = 0;
    bool alive = true;
    auto drain = [&] {
      while (lane.has_message()) {
        try {
          Message m = decode_frames(lane.pop());
          (void)encode_frames(m);
        } catch (const ProtocolError&) {
        }
      }
    };
    while (off < stream.size() && alive) {
      const size_t n = std::min(chunk, stream.size() - off);
      const ssize_t w = ::send(sv[1], stream.data() + off, n, MSG_NOSIGNAL);
      if (w > 0) off += static_cast<size_t>(w);
      alive = lane.pump();
      drain();
    }
    ::close(sv[1]);
    while (alive) alive = lane.pump();  // reads to the end: "the peer closed the data lane"
    drain();
    (void)lane.error();
    (void)lane.protocol_error();
  }
  return 0;
}
