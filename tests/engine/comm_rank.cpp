// One rank of a RingComm over tcp://127.0.0.1, as a real process (started N times by
// test_comm_processes). Rendezvous through a directory: each rank listens on an OS-picked port,
// publishes its address as DIR/<rank>.addr (written, then renamed, so a reader never sees half),
// and waits for the others'. Exit 0 when every check passed (or, in `expect-error` mode, when the
// collective failed as it must), 1 otherwise; `die` mode kills itself after the handshake.
//   comm_rank RANK SIZE DIR check|die|expect-error
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "engine/ring_comm.h"
#include "tests/engine/comm_checks.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: comm_rank RANK SIZE DIR check|die|expect-error\n");
    return 2;
  }
  const int rank = std::atoi(argv[1]), size = std::atoi(argv[2]);
  const std::string dir = argv[3], mode = argv[4];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::unique_ptr<herd::transport::Listener> listener;
  try {
    listener = herd::transport::listen("tcp://127.0.0.1:*");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    return 1;
  }
  const std::string mine = dir + "/" + std::to_string(rank) + ".addr";
  { std::ofstream(mine + ".tmp") << listener->address(); }
  std::filesystem::rename(mine + ".tmp", mine);
  std::vector<std::string> addrs(size);
  for (int r = 0; r < size; ++r) {
    const std::string path = dir + "/" + std::to_string(r) + ".addr";
    while (!std::filesystem::exists(path)) {
      if (std::chrono::steady_clock::now() > deadline) {
        std::fprintf(stderr, "rank %d: no address from rank %d\n", rank, r);
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::ifstream in(path);
    std::getline(in, addrs[r]);
  }
  std::string err;
  auto comm = herd::make_ring_comm(addrs, rank, &err, 20000, std::move(listener));
  if (!comm) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 1;
  }
  if (mode == "die") {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the others are inside the all-reduce
    raise(SIGKILL);
  }
  if (mode == "expect-error") {
    comm->set_timeout_ms(25000);  // far longer than the test allows: the death must be *noticed*
    std::vector<float> d(1 << 20, 1.0f);
    for (int i = 0; i < 1000; ++i) {
      const std::string e = comm->all_reduce_sum(d.data(), d.size());
      if (!e.empty()) {
        std::printf("rank %d: error as expected: %s\n", rank, e.c_str());
        return 0;
      }
    }
    std::fprintf(stderr, "rank %d: 1000 all-reduces succeeded with a dead rank\n", rank);
    return 1;
  }
  herd::test::CommCheckOptions o;
  o.max_delay_ms = 2;
  if (const std::string e = herd::test::run_comm_checks(*comm, o); !e.empty()) {
    std::fprintf(stderr, "%s\n", e.c_str());
    return 1;
  }
  std::printf("rank %d/%d: all checks passed\n", rank, size);
  return 0;
}
