// A WorkerServer on its own thread, listening on inproc://NAME (o.name); destroying it stops the
// server and closes its listener (a dead worker). For tests that run workers in-process.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "transport/inproc_link.h"
#include "worker/worker_server.h"

namespace herd::test {

class InprocServer {
 public:
  explicit InprocServer(WorkerServerOptions o) {
    std::string address = "inproc://";
    address += o.name;  // (not "inproc://" + name: GCC 12 warns -Wrestrict on that, falsely)
    server_ = std::make_unique<WorkerServer>(transport::listen(address), std::move(o));
    thread_ = std::thread([this] { server_->serve(&stop_); });
  }
  ~InprocServer() {
    stop_ = true;
    thread_.join();
  }
  InprocServer(const InprocServer&) = delete;
  InprocServer& operator=(const InprocServer&) = delete;
  std::string address() const { return server_->address(); }

 private:
  std::atomic<bool> stop_{false};
  std::unique_ptr<WorkerServer> server_;
  std::thread thread_;
};

}  // namespace herd::test
