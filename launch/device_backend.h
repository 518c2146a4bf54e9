// --device for the commands that run stages (herd worker): the backend factory for a parsed
// device, checked now. Without HERD_HAVE_CUDA (herd built where nvcc was not found) a CUDA device
// is a clear error naming the build, not a CPU run under a GPU's name.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "kernels/backend.h"

namespace herd::cli {

// Null for the CPU (the caller's CPU backend); else a factory for that device's backend. Throws
// UsageError for text parse_device refuses, std::runtime_error when this build or host has no such
// device (a backend is made once here, so the error comes at startup, naming the device).
std::function<std::unique_ptr<Backend>()> device_backend_factory(const std::string& text);

// What --help says of the devices this build can run.
std::string device_help();

}  // namespace herd::cli
