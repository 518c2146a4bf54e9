// herd mpi: a whole cluster bootstrapped by mpirun. Rank 0 is the coordinator; ranks 1..N-1 are
// pipeline workers, in rank order. MPI only bootstraps: each worker rank binds the ordinary worker
// server on a free port, the ranks gather their endpoints to rank 0, and rank 0 runs the normal
// `herd run|chat|logits --workers ...` over ZeroMQ, so validation, the handshake and failure
// handling are exactly those of a hand-started cluster. At the end rank 0 broadcasts "stop" (also
// after an error) and every rank calls MPI_Finalize.
//
// Activations go over ZeroMQ, not MPI: see bench/mpi_vs_zmq.cpp for the measurement. With --tp N
// the worker ranks' tensor-parallel groups do run their all-reduces over MPI: MPI_COMM_WORLD split
// into one communicator per group of N worker ranks, an MpiComm on each. MPI has no
// failure detection (a dead peer hangs or aborts the job), and the ZeroMQ path is the one every
// other launch uses.
#include <filesystem>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "launch/args.h"
#include "launch/commands.h"
#include "launch/device_backend.h"
#include "launch/security_options.h"

#ifdef HERD_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only (no deprecated C++ bindings)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include "common/log.h"
#include "engine/mpi_comm.h"
#include "transport/link.h"
#include "worker/worker_server.h"
#endif

namespace herd::cli {
namespace {

const char* kMpiHelp =
    "usage: mpirun -np N herd mpi [run|chat|logits|serve|bench] ARGS...\n"
    "\n"
    "Runs a pipeline cluster launched by mpirun: rank 0 is the coordinator and runs `herd run` (or chat,\n"
    "logits, serve, bench) with ARGS; ranks 1..N-1 are its workers, in rank order (with --split, give\n"
    "N-1 ranges).\n"
    "Every option of the subcommand applies except --workers (MPI provides the workers).\n"
    "With --tp T, each T consecutive worker ranks form one tensor-parallel stage whose all-reduces go\n"
    "over MPI (N-1 must be a multiple of T; with --split, give (N-1)/T ranges).\n"
    "--worker-device cpu|cuda:N|cuda:auto: where the worker ranks compute (default cpu); cuda:auto gives\n"
    "each worker rank of a host the next GPU of that host (the first worker on a host cuda:0, ...). GPU\n"
    "ranks of one --tp group join over NCCL, bootstrapped over their MPI group; GPU stages hand their\n"
    "hidden states GPU to GPU. Not yet run on a GPU (see the README's GPU section). NCCL between GPUs of\n"
    "different hosts (its network transport is neither authenticated nor encrypted) needs\n"
    "--nccl-across-hosts (or --insecure).\n"
    "Across hosts: mpirun --hostfile HOSTS -np N herd mpi -m /same/path/model.gguf -p ...\n"
    "(the binary at the same path on every host; the model too, unless the workers receive it from\n"
    "the coordinator). Workers then listen on all interfaces and advertise their host name, or\n"
    "$HERD_MPI_HOST when that is set in the host's environment.\n";

#ifdef HERD_HAVE_MPI

constexpr int kEndpointBytes = 1024;
constexpr int kHostBytes = 256;

// Worker ranks need only their thread count; the coordinator parses everything else.
int threads_from(const Args& a) {
  for (size_t i = 0; i < a.size(); ++i) {
    std::string v;
    if ((a[i] == "-t" || a[i] == "--threads") && i + 1 < a.size()) v = a[i + 1];
    else if (a[i].rfind("--threads=", 0) == 0) v = a[i].substr(10);
    else if (a[i].rfind("-t=", 0) == 0) v = a[i].substr(3);
    else continue;
    try {
      return std::max(0, std::stoi(v));
    } catch (const std::exception&) {
      return 0;  // the coordinator reports the usage error
    }
  }
  return 0;
}

// --tp N as the coordinator will read it (0: absent, auto or malformed: no MPI groups).
int tp_from(const Args& a) {
  for (size_t i = 0; i < a.size(); ++i) {
    std::string v;
    if (a[i] == "--tp" && i + 1 < a.size()) v = a[i + 1];
    else if (a[i].rfind("--tp=", 0) == 0) v = a[i].substr(5);
    else continue;
    try {
      size_t used = 0;
      const int n = std::stoi(v, &used);
      return used == v.size() && n > 1 ? n : 0;
    } catch (const std::exception&) {
      return 0;
    }
  }
  return 0;
}

void fixed_copy(char* dst, size_t cap, const std::string& s) {
  std::memset(dst, 0, cap);
  std::memcpy(dst, s.data(), std::min(s.size(), cap - 1));
}

// Runs the subcommand as main() would (same exit codes and one-line errors).
int run_coordinator(const std::string& sub, const Args& args) {
  int (*fn)(const Args&) = sub == "chat"     ? cmd_chat
                           : sub == "logits" ? cmd_logits
                           : sub == "serve"  ? cmd_serve
                           : sub == "bench"  ? cmd_bench
                                             : cmd_run;
  try {
    return fn(args);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "herd mpi %s: %s\n", sub.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "herd mpi %s: error: %s\n", sub.c_str(), e.what());
    return 1;
  }
}

// A worker rank: serve in a thread while the main thread (the only one calling MPI) waits for
// rank 0's stop broadcast. A server that dies unexpectedly aborts the job (never a silent hang).
// The directory of the model on this job's command line (-m, else herd's default), symlinks
// resolved: a worker rank opens the coordinator's path only inside it (--models-dir), as
// herd-cluster's workers do; "" (then the coordinator sends the weights) when it is not here.
std::string models_dir_from(const Args& a) {
  std::string m;
  for (size_t i = 0; i < a.size(); ++i) {
    if ((a[i] == "-m" || a[i] == "--model") && i + 1 < a.size()) m = a[i + 1];
    else if (a[i].rfind("--model=", 0) == 0) m = a[i].substr(8);
  }
  if (m.empty()) m = default_model_path();
  std::error_code ec;
  const auto p = std::filesystem::canonical(m, ec);
  return ec ? std::string() : p.parent_path().string();
}

// The worker rank's tensor-parallel group over MPI (--tp N): ranks 1..N, N+1..2N, ... are the
// groups the coordinator forms from --workers in rank order. all_reduce is null when there is none.
struct MpiGroup {
  MPI_Comm comm = MPI_COMM_NULL;
  std::unique_ptr<MpiComm> all_reduce;
  int rank = 0, size = 0;
};

// --worker-device V (or =V), taken out of `a` (the coordinator's subcommand does not know it): V, or
// "" when absent. Every rank parses the same argv, so every rank decides alike.
std::string take_worker_device(Args& a) {
  std::string v;
  for (size_t i = 0; i < a.size();) {
    if (a[i] == "--worker-device" && i + 1 < a.size()) {
      v = a[i + 1];
      a.erase(a.begin() + static_cast<std::ptrdiff_t>(i), a.begin() + static_cast<std::ptrdiff_t>(i) + 2);
    } else if (a[i] == "--worker-device") {
      v = "--worker-device needs a value";
      a.erase(a.begin() + static_cast<std::ptrdiff_t>(i));
    } else if (a[i].rfind("--worker-device=", 0) == 0) {
      v = a[i].substr(16);
      a.erase(a.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
  return v;
}

int run_worker(std::unique_ptr<transport::Listener> listener, int threads, int rank, const std::string& models_dir,
               MpiGroup* group, const std::string& device, bool nccl_across_hosts) {
  std::atomic<bool> stop{false}, failed{false};
  std::string failure;
  char host[kHostBytes] = {};
  gethostname(host, sizeof(host) - 1);
  WorkerServerOptions o;
  o.threads = threads;
  o.name = "rank " + std::to_string(rank) + " on " + host;
  o.models_dir = models_dir;
  o.nccl_across_hosts = nccl_across_hosts;
  if (!device.empty() && device != "cpu") {
    try {
      set_worker_device(o, device);  // its GPU's figures measured now; NCCL for its --tp group and hops
    } catch (const std::exception& e) {
      std::fprintf(stderr, "herd mpi: worker rank %d on %s: --worker-device %s: %s; aborting the job\n", rank, host,
                   device.c_str(), e.what());
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  }
  if (group && group->all_reduce) {
    o.group_comm = [group](int r, int n, std::string* why_not) -> Comm* {
      if (r != group->rank || n != group->size) {
        *why_not = "assigned tensor-parallel rank " + std::to_string(r) + " of " + std::to_string(n) +
                   ", but this MPI rank's group is rank " + std::to_string(group->rank) + " of " +
                   std::to_string(group->size);
        return nullptr;
      }
      if (!group->all_reduce->broken().empty()) {
        *why_not = "the MPI group is broken (" + group->all_reduce->broken() + ")";
        return nullptr;
      }
      return group->all_reduce.get();
    };
  }
  std::thread server_thread;
  if (listener) {
    server_thread = std::thread([&, l = std::move(listener)]() mutable {
      try {
        WorkerServer server(std::move(l), o);
        server.serve(&stop);
      } catch (const std::exception& e) {
        failure = e.what();
        failed = true;
      }
    });
  }
  int code = 0;
  MPI_Request req;
  MPI_Ibcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD, &req);
  int done = 0;
  while (!done) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (!done && failed) {
      std::fprintf(stderr, "herd mpi: worker rank %d failed: %s; aborting the job\n", rank, failure.c_str());
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop = true;
  if (server_thread.joinable()) server_thread.join();
  return 0;
}

#endif  // HERD_HAVE_MPI

}  // namespace

int cmd_mpi(const Args& in) {
#ifndef HERD_HAVE_MPI
  (void)in;
  std::fputs(kMpiHelp, stderr);
  std::fprintf(stderr,
               "herd mpi: this build has no MPI support (Open MPI was not found when it was configured); install "
               "openmpi-bin and libopenmpi-dev and rebuild, or start workers with `herd worker` / herd-cluster\n");
  return 1;
#else
  // Help without MPI_Init (so `herd mpi --help` works outside mpirun too); under mpirun, rank 0 prints it.
  if (in.empty() || in[0] == "-h" || in[0] == "--help") {
    const char* r = std::getenv("OMPI_COMM_WORLD_RANK");
    if (!r || std::string(r) == "0") std::fputs(kMpiHelp, stdout);
    return 0;
  }
  // With --tp the worker ranks' groups all-reduce over MPI from the server thread while the main
  // thread polls for "stop": that needs MPI_THREAD_MULTIPLE (without it the groups use the ring).
  const int tp = tp_from(in);
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, tp > 1 ? MPI_THREAD_MULTIPLE : MPI_THREAD_FUNNELED, &provided);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  Args args = in;
  std::string sub = "run";
  if (!args.empty() && (args[0] == "run" || args[0] == "chat" || args[0] == "logits" || args[0] == "serve" ||
                         args[0] == "bench")) {
    sub = args[0];
    args.erase(args.begin());
  }
  // Decisions every rank makes alike (same argv everywhere), so no rank waits for another in vain.
  std::string worker_device = take_worker_device(args);
  bool nccl_across_hosts = false;  // a worker-rank option too: taken out before the coordinator parses
  for (auto it = args.begin(); it != args.end();)
    if (*it == "--nccl-across-hosts") {
      nccl_across_hosts = true;
      it = args.erase(it);
    } else {
      ++it;
    }
  std::string device_error;
  if (!worker_device.empty() && worker_device != "cuda:auto") {
    try {
      (void)parse_device(worker_device);
    } catch (const std::invalid_argument& e) {
      device_error = e.what();
    }
  }
  if (worker_device == "--worker-device needs a value") device_error = worker_device;
  if (!device_error.empty()) {
    if (rank == 0) std::fprintf(stderr, "herd mpi: --worker-device: %s (cpu, cuda:N or cuda:auto)\n", device_error.c_str());
    MPI_Finalize();
    return rank == 0 ? 2 : 0;
  }
  if (worker_device == "cuda:auto") {
    // The worker ranks of each host, numbered on that host: its GPUs in order.
    MPI_Comm workers = MPI_COMM_NULL, host_workers = MPI_COMM_NULL;
    MPI_Comm_split(MPI_COMM_WORLD, rank == 0 ? MPI_UNDEFINED : 0, rank, &workers);
    if (workers != MPI_COMM_NULL) {
      MPI_Comm_split_type(workers, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &host_workers);
      int local = 0;
      MPI_Comm_rank(host_workers, &local);
      worker_device = "cuda:" + std::to_string(local);
      MPI_Comm_free(&host_workers);
      MPI_Comm_free(&workers);
    }
  }
  bool has_workers = false;
  for (const auto& a : args) has_workers |= a == "--workers" || a.rfind("--workers=", 0) == 0;
  if (has_workers || size < 2) {
    if (rank == 0 && has_workers)
      std::fprintf(stderr, "herd mpi: --workers is not allowed (the MPI ranks are the workers)\n");
    else if (rank == 0)
      std::fprintf(stderr, "herd mpi: needs at least 2 ranks (rank 0 coordinates, ranks 1..N-1 are workers): "
                           "mpirun -np N herd mpi ...\n");
    MPI_Finalize();
    return rank == 0 ? 2 : 0;
  }

  // --insecure / --key / --allow-keys apply to the worker ranks too (rank 0's subcommand parses them again).
  {
    SecurityOptions sec;
    for (size_t i = 0; i < args.size(); ++i) {
      if (args[i] == "--insecure") sec.insecure = true;
      else if (args[i] == "--key" && i + 1 < args.size()) sec.key = args[i + 1];
      else if (args[i].rfind("--key=", 0) == 0) sec.key = args[i].substr(6);
      else if (args[i] == "--allow-keys" && i + 1 < args.size()) sec.allow_keys = args[i + 1];
      else if (args[i].rfind("--allow-keys=", 0) == 0) sec.allow_keys = args[i].substr(13);
    }
    try {
      apply_security_options(sec);
    } catch (const std::exception&) {
      // rank 0's subcommand reports the usage error
    }
  }

  // Where everyone runs: one host -> loopback only; several -> bind all interfaces, advertise a name.
  std::vector<char> hosts(static_cast<size_t>(size) * kHostBytes);
  char me[kHostBytes] = {};
  gethostname(me, sizeof(me) - 1);
  MPI_Allgather(me, kHostBytes, MPI_CHAR, hosts.data(), kHostBytes, MPI_CHAR, MPI_COMM_WORLD);
  bool one_host = true;
  for (int r = 1; r < size; ++r) one_host &= std::strncmp(&hosts[r * kHostBytes], &hosts[0], kHostBytes) == 0;

  std::unique_ptr<transport::Listener> listener;
  std::string endpoint;  // "tcp://host:port", or "!reason" when this rank could not listen
  if (rank > 0) {
    try {
      listener = transport::listen(one_host ? "tcp://127.0.0.1:*" : "tcp://*:*");
      endpoint = listener->address();
      if (!one_host) {
        const char* adv = std::getenv("HERD_MPI_HOST");
        endpoint = "tcp://" + std::string(adv && *adv ? adv : me) + endpoint.substr(endpoint.rfind(':'));
      }
    } catch (const std::exception& e) {
      endpoint = std::string("!") + e.what();
    }
  }
  char mine[kEndpointBytes];
  fixed_copy(mine, sizeof(mine), endpoint);
  std::vector<char> all(rank == 0 ? static_cast<size_t>(size) * kEndpointBytes : 0);
  MPI_Gather(mine, kEndpointBytes, MPI_CHAR, all.data(), kEndpointBytes, MPI_CHAR, 0, MPI_COMM_WORLD);

  // Tensor-parallel groups over MPI: a collective split of every rank (rank 0 in none), decided
  // alike everywhere (the same argv, the same thread level from the same library).
  MpiGroup group;
  if (tp > 1 && provided >= MPI_THREAD_MULTIPLE && (size - 1) % tp == 0) {
    const int color = rank == 0 ? MPI_UNDEFINED : (rank - 1) / tp;
    MPI_Comm_split(MPI_COMM_WORLD, color, rank, &group.comm);
    if (group.comm != MPI_COMM_NULL) {
      group.all_reduce = std::make_unique<MpiComm>(group.comm);
      group.rank = (rank - 1) % tp;
      group.size = tp;
    }
  } else if (tp > 1 && rank == 0 && provided < MPI_THREAD_MULTIPLE) {
    std::fprintf(stderr, "herd mpi: this MPI library gives no MPI_THREAD_MULTIPLE: the --tp groups all-reduce over "
                         "a TCP ring instead of MPI\n");
  }

  int code = 0;
  if (rank == 0) {
    std::string workers, errors;
    for (int r = 1; r < size; ++r) {
      const std::string e(&all[static_cast<size_t>(r) * kEndpointBytes]);
      const std::string host(&hosts[static_cast<size_t>(r) * kHostBytes]);
      if (e.empty() || e[0] == '!')
        errors += "herd mpi: rank " + std::to_string(r) + " on " + host + " cannot listen: " +
                  (e.empty() ? "no endpoint" : e.substr(1)) + "\n";
      else
        workers += (workers.empty() ? "" : ",") + e;
    }
    if (!errors.empty()) {
      std::fputs(errors.c_str(), stderr);
      code = 1;
    } else {
      HERD_LOG_INFO("herd mpi: ", size - 1, " workers: ", workers);
      Args full = args;
      full.push_back("--workers");
      full.push_back(workers);
      code = run_coordinator(sub, full);
    }
    std::fflush(stdout);
    std::fflush(stderr);
    // "stop": every worker rank returns. Non-blocking on both sides (the workers use MPI_Ibcast, and
    // a blocking collective never matches a non-blocking one).
    MPI_Request req;
    MPI_Ibcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD, &req);
    MPI_Wait(&req, MPI_STATUS_IGNORE);
  } else {
    code = run_worker(std::move(listener), threads_from(args), rank, models_dir_from(args), &group, worker_device,
                      nccl_across_hosts || std::find(args.begin(), args.end(), "--insecure") != args.end());
    if (group.comm != MPI_COMM_NULL) {
      group.all_reduce.reset();
      MPI_Comm_free(&group.comm);
    }
  }
  MPI_Finalize();
  return rank == 0 ? code : 0;
#endif
}

}  // namespace herd::cli
