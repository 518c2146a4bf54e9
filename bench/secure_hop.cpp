// One hop's cost with and without security (issue [trust] target: <= +10 us per hop): a ZmqLink
// ping-pongs hidden-state-sized messages with an echo ZmqListener in another process over
// 127.0.0.1, both sides on the data lane and busy-polling as the pipeline's hot path does
// (transport::recv_busy). Blocks of secure (CURVE + sealed lanes) and --insecure runs alternate,
// each against a fresh echo process; reports per size the median one-way time (round trip / 2) of
// each mode over all its samples and the difference.
//
//   build/bin/bench_secure_hop [iters per block = 2000] [blocks per mode = 5]
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "transport/codec.h"
#include "transport/security.h"
#include "transport/zmq_link.h"

using namespace herd::transport;
using Clock = std::chrono::steady_clock;

extern char** environ;

namespace {

constexpr uint16_t kEcho = 1000, kQuit = 1001;

Message make(uint16_t type, size_t bytes) {
  Message m;
  m.type = type;
  m.payload.assign(1, 'x');
  if (bytes > 0) {
    Tensor t;
    t.dtype = WireDType::U8;
    t.shape = {static_cast<int64_t>(bytes)};
    t.data.assign(bytes, '\x5a');
    m.tensors.push_back(std::move(t));
  }
  return m;
}

int serve(bool insecure, int out_fd) {
  configure_security({insecure, ""});
  ZmqListener l("tcp://127.0.0.1:*");
  const std::string a = l.address() + "\n";
  if (::write(out_fd, a.data(), a.size()) != static_cast<ssize_t>(a.size())) return 1;
  ::close(out_fd);
  while (true) {
    Received r = recv_busy(l, Clock::now() + std::chrono::seconds(1), 1000);
    if (r.status != RecvStatus::ok) continue;
    if (r.msg.type == kQuit) return 0;
    l.send(r.peer, std::move(r.msg));
  }
}

// Runs one block against a fresh echo process; appends one-way microseconds per size.
void block(const char* self, bool insecure, const std::vector<size_t>& sizes, int iters,
           std::vector<std::vector<double>>& out) {
  int fds[2];
  if (::pipe(fds) != 0) std::exit(1);
  const std::string fd = std::to_string(fds[1]);
  const char* argv[] = {self, "--serve", insecure ? "insecure" : "secure", fd.c_str(), nullptr};
  pid_t pid;
  if (posix_spawn(&pid, self, nullptr, nullptr, const_cast<char**>(argv), environ) != 0) std::exit(1);
  ::close(fds[1]);
  std::string addr;
  char c;
  while (::read(fds[0], &c, 1) == 1 && c != '\n') addr += c;
  ::close(fds[0]);
  configure_security({insecure, ""});
  {
    ZmqLink link(addr);
    auto rtt = [&](const Message& m) {
      const auto t = Clock::now();
      link.send(m);
      Received r = recv_busy(link, Clock::now() + std::chrono::seconds(1), 5000);
      if (r.status != RecvStatus::ok) {
        std::fprintf(stderr, "bench_secure_hop: %s\n", r.error.c_str());
        std::exit(1);
      }
      return std::chrono::duration<double, std::micro>(Clock::now() - t).count();
    };
    for (int i = 0; i < 300; ++i) rtt(make(kEcho, 2048));  // lane up, caches warm
    if (insecure == link.lane_sealed() || !link.lane_sending()) {
      std::fprintf(stderr, "bench_secure_hop: lane not in the expected mode\n");
      std::exit(1);
    }
    for (size_t s = 0; s < sizes.size(); ++s) {
      const Message m = make(kEcho, sizes[s]);
      for (int i = 0; i < iters; ++i) out[s].push_back(rtt(m) / 2);
    }
    link.send(make(kQuit, 0));
  }
  int st;
  waitpid(pid, &st, 0);
}

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 4 && std::string(argv[1]) == "--serve") return serve(std::string(argv[2]) == "insecure", std::atoi(argv[3]));
  const int iters = argc > 1 ? std::atoi(argv[1]) : 2000;
  const int blocks = argc > 2 ? std::atoi(argv[2]) : 5;
  // SmolLM2's f32 hidden state (576 x 4), stories110m's (768 x 4), a 32 KiB prefill chunk.
  const std::vector<size_t> sizes = {2304, 3072, 32768};
  std::vector<std::vector<double>> sec(sizes.size()), ins(sizes.size());
  for (int b = 0; b < blocks; ++b) {
    const bool secure_first = b % 2 == 0;
    block(argv[0], !secure_first, sizes, iters, secure_first ? sec : ins);
    block(argv[0], secure_first, sizes, iters, secure_first ? ins : sec);
  }
  std::printf("| message | one-way, secure | one-way, --insecure | secure - insecure |\n|---:|---:|---:|---:|\n");
  for (size_t s = 0; s < sizes.size(); ++s) {
    const double a = median(sec[s]), b = median(ins[s]);
    std::printf("| %zu B | %.1f us | %.1f us | %+.1f us |\n", sizes[s], a, b, a - b);
  }
  return 0;
}
