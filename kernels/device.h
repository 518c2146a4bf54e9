// Device: where a buffer's bytes live, and where a Comm's pointers point. Its own header so the
// collectives (engine/comm.h) can say where their data lives without the kernel seam.
#pragma once

#include <cstdint>
#include <string>

namespace herd {

// Where a buffer's bytes live. Host memory is what every CPU backend computes on; a CUDA backend
// ([cuda]) allocates on its GPU, so a stage's KV cache and activations never leave it.
struct Device {
  enum class Kind : uint8_t { Host, Cuda };
  Kind kind = Kind::Host;
  int index = 0;
  std::string name() const { return kind == Kind::Host ? "host" : "cuda:" + std::to_string(index); }
  bool operator==(const Device&) const = default;
};

// "cpu" (or "host") and "cuda:N" (or "cuda" = cuda:0), as --device takes them. Throws
// std::invalid_argument naming the text otherwise.
Device parse_device(const std::string& text);

}  // namespace herd
