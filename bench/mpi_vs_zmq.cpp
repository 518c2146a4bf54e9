// MPI vs ZeroMQ for activation-sized messages between two ranks (issue [pipeline], the choice of
// the activation transport under `herd mpi`). Ping-pong between rank 0 and rank 1 for each size:
//   mpi: MPI_Send/MPI_Recv of the raw bytes (on one host Open MPI uses shared memory);
//   zmq: herd's Link with its data lane off (HERD_LANES=0) — a transport::ZmqLink (DEALER) to a
//        ZmqListener (ROUTER) over tcp loopback (or any address of rank 1's host), each message a
//        Forward-style frame set with one f32 tensor, encoded and validated by transport/codec
//        exactly as stages do;
//   lane: the same Link with its data lane (transport/tcp_lane.h, the default): the messages
//        travel over plain TCP written and read by the ranks' own threads.
// Prints, per size, the median over runs of the one-way time (round trip / 2) and the rate, as CSV
// on stdout and a table on stderr.
//
//   mpirun --allow-run-as-root --oversubscribe -np 2 build/bin/bench_mpi_vs_zmq [runs] [iters]
#define OMPI_SKIP_MPICXX 1  // the C API only (no deprecated C++ bindings)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "transport/link.h"
#include "cluster/protocol.h"
#include "transport/zmq_link.h"

using namespace herd::transport;
using namespace herd::cluster;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Message activation(size_t bytes) {
  Tensor t;
  t.dtype = WireDType::F32;
  t.shape = {1, static_cast<int64_t>(bytes / 4)};
  t.data.assign(bytes, '\x01');
  return pack(Forward{1, 0, 1, false}, {std::move(t)});
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != 2) {
    if (rank == 0) std::fprintf(stderr, "run with exactly 2 ranks: mpirun -np 2 %s [runs] [iters]\n", argv[0]);
    MPI_Finalize();
    return 2;
  }
  const int runs = argc > 1 ? std::atoi(argv[1]) : 7;
  const int iters = argc > 2 ? std::atoi(argv[2]) : 200;
  const std::vector<size_t> sizes = {2 << 10, 8 << 10, 32 << 10, 128 << 10, 512 << 10};

  // Rank 1 listens; rank 0 learns the address over MPI (what `herd mpi` does too).
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  // Two Link pairs: [0] ZeroMQ only, [1] with the data lane.
  std::unique_ptr<ZmqListener> listener[2];
  std::unique_ptr<ZmqLink> link[2];
  for (int lane = 0; lane < 2; ++lane) {
    char addr[256] = {};
    if (rank == 1) {
      listener[lane] = std::make_unique<ZmqListener>("tcp://127.0.0.1:*", lane == 1);
      std::snprintf(addr, sizeof(addr), "%s", listener[lane]->address().c_str());
    }
    MPI_Bcast(addr, sizeof(addr), MPI_CHAR, 1, MPI_COMM_WORLD);
    if (rank == 0) link[lane] = std::make_unique<ZmqLink>(addr, lane == 1);
  }
  if (rank == 0) std::printf("transport,bytes,one_way_us,MB_per_s\n");
  std::vector<char> buf(sizes.back());
  for (size_t bytes : sizes) {
    std::vector<double> mpi_s, zmq_s, lane_s;
    const Message msg = activation(bytes);
    for (int run = 0; run < runs; ++run) {
      // MPI ping-pong.
      MPI_Barrier(MPI_COMM_WORLD);
      auto t0 = Clock::now();
      for (int i = 0; i < iters; ++i) {
        if (rank == 0) {
          MPI_Send(buf.data(), static_cast<int>(bytes), MPI_CHAR, 1, 0, MPI_COMM_WORLD);
          MPI_Recv(buf.data(), static_cast<int>(bytes), MPI_CHAR, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
          MPI_Recv(buf.data(), static_cast<int>(bytes), MPI_CHAR, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
          MPI_Send(buf.data(), static_cast<int>(bytes), MPI_CHAR, 0, 0, MPI_COMM_WORLD);
        }
      }
      mpi_s.push_back(std::chrono::duration<double>(Clock::now() - t0).count() / iters / 2);

      // Ping-pong through herd's Link (encode + validate + decode on both sides).
      for (int lane = 0; lane < 2; ++lane) {
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = Clock::now();
        for (int i = 0; i < iters; ++i) {
          if (rank == 0) {
            if (auto e = link[lane]->send(msg); !e.empty()) { std::fprintf(stderr, "send: %s\n", e.c_str()); MPI_Abort(MPI_COMM_WORLD, 1); }
            Received r = link[lane]->recv(10000);
            if (r.status != RecvStatus::ok) { std::fprintf(stderr, "recv: %s\n", r.error.c_str()); MPI_Abort(MPI_COMM_WORLD, 1); }
          } else {
            Received r = listener[lane]->recv(10000);
            if (r.status != RecvStatus::ok) { std::fprintf(stderr, "recv: %s\n", r.error.c_str()); MPI_Abort(MPI_COMM_WORLD, 1); }
            listener[lane]->send(r.peer, r.msg);
          }
        }
        (lane ? lane_s : zmq_s).push_back(std::chrono::duration<double>(Clock::now() - t0).count() / iters / 2);
      }
    }
    if (rank == 0) {
      const double m = median(mpi_s), z = median(zmq_s), l = median(lane_s);
      std::printf("mpi,%zu,%.2f,%.1f\nzmq,%zu,%.2f,%.1f\nlane,%zu,%.2f,%.1f\n", bytes, m * 1e6, bytes / m / 1e6, bytes,
                  z * 1e6, bytes / z / 1e6, bytes, l * 1e6, bytes / l / 1e6);
      std::fprintf(stderr, "%7zu B: mpi %8.2f us %8.1f MB/s | zmq %8.2f us %8.1f MB/s | zmq+lane %8.2f us %8.1f MB/s\n",
                   bytes, m * 1e6, bytes / m / 1e6, z * 1e6, bytes / z / 1e6, l * 1e6, bytes / l / 1e6);
    }
  }
  for (int lane = 0; lane < 2; ++lane) {
    link[lane].reset();
    listener[lane].reset();
  }
  MPI_Finalize();
  return 0;
}
