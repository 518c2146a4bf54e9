// A protocol message through pack, the frame codec both ways, and unpack: what a peer would read.
#pragma once

#include <utility>
#include <vector>

#include "cluster/wire.h"
#include "transport/codec.h"

namespace herd::cluster {

template <typename T>
T round_trip(const T& body, std::vector<transport::Tensor> tensors = {}) {
  transport::Message m = transport::decode_frames(transport::encode_frames(pack(body, std::move(tensors))));
  return unpack<T>(m);
}

}  // namespace herd::cluster
