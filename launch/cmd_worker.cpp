// herd worker: a long-running pipeline stage server. A coordinator (herd run/chat/logits --workers)
// connects, checks versions and the model, assigns a layer range; the worker maps only that shard
// of its own copy of the GGUF and serves until told to stop (or killed).
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <memory>
#include <optional>
#include <thread>
#include <stdexcept>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/log.h"
#include "common/timer.h"
#include "launch/commands.h"
#include "launch/args.h"
#include "launch/device_backend.h"
#include "launch/security_options.h"
#include "model/gguf.h"
#include "engine/host_probe.h"
#include "engine/probe_profile.h"
#include "transport/link.h"
#include "worker/worker_server.h"

namespace herd::cli {
namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

// --exit-with-parent PID: the kernel sends SIGKILL when the parent dies (Linux; elsewhere a thread
// polls getppid()). Checked after arming: a parent that died before that has made us an orphan
// (getppid() is then init or a subreaper), and we leave at once.
void bind_to_parent(pid_t parent) {
#ifdef __linux__
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) throw std::runtime_error("--exit-with-parent: prctl failed");
#else
  std::thread([parent] {
    while (getppid() == parent) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::_Exit(1);
  }).detach();
#endif
  if (getppid() != parent) {
    std::fprintf(stderr, "herd worker: --exit-with-parent %d: that process is not (or no longer) this worker's parent\n",
                 static_cast<int>(parent));
    std::_Exit(1);
  }
}

// The startup profile, measured in a child process so that its buffers (~100 MiB) never count in
// this worker's peak RSS. Empty when the child fails (the server then measures in-process).
std::optional<ProbeResult> measure_in_child(int threads, const std::vector<uint32_t>& types) {
  int fds[2];
  if (::pipe(fds) != 0) return std::nullopt;
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return std::nullopt;
  }
  if (pid == 0) {  // single-threaded here: nothing else has started yet
    ::close(fds[0]);
    int rc = 1;
    try {
      HostProbeOptions o;
      o.threads = threads;
      o.startup = true;
      o.types = types;
      const std::string json = probe_to_json(probe_host(o));
      size_t done = 0;
      while (done < json.size()) {
        const ssize_t w = ::write(fds[1], json.data() + done, json.size() - done);
        if (w <= 0) break;
        done += static_cast<size_t>(w);
      }
      rc = done == json.size() ? 0 : 1;
    } catch (...) {
    }
    ::_exit(rc);
  }
  ::close(fds[1]);
  std::string json;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    json.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    HERD_LOG_WARN("worker: the profile measurement process failed (status ", status, "); measuring in-process");
    return std::nullopt;
  }
  try {
    return probe_from_json(json, "startup profile");
  } catch (const std::exception& e) {
    HERD_LOG_WARN("worker: ", e.what(), "; measuring in-process");
    return std::nullopt;
  }
}

// "300M", "64G", "1.5T", "512MiB", "0": binary units (K/M/G/T, optional "i" and "B").
uint64_t parse_cache_size(const std::string& v, const std::string& flag = "--cache-max") {
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (const std::exception&) {
    throw UsageError(flag + " '" + v + "': not a size (e.g. 300M, 64G)");
  }
  std::string u = v.substr(used);
  for (const char* suffix : {"iB", "B", "i"})
    if (u.size() > 1 && u.size() >= std::strlen(suffix) && u.compare(u.size() - std::strlen(suffix), std::string::npos, suffix) == 0) {
      u.resize(u.size() - std::strlen(suffix));
      break;
    }
  double m = 0;
  if (u.empty() || u == "B") m = 1;
  else if (u == "K" || u == "k") m = 1024.0;
  else if (u == "M") m = 1024.0 * 1024;
  else if (u == "G") m = 1024.0 * 1024 * 1024;
  else if (u == "T") m = 1024.0 * 1024 * 1024 * 1024;
  if (m == 0 || !(x >= 0) || x * m > 1.8e19) throw UsageError(flag + " '" + v + "': not a size (e.g. 300M, 64G)");
  return static_cast<uint64_t>(x * m);
}

}  // namespace

int cmd_worker(const Args& args) {
  std::string listen_addr, model, cache_dir, profile, cache_max = "64G", models_dir, mem_budget = "auto", device = "cpu";
  bool no_stream = false, nccl_across_hosts = false;
  int threads = 0, delay_ms = 0, exit_with_parent = 0;
  int64_t freeze_after = 0;
  double weight_timeout_s = kDefaultChunkTimeoutMs / 1000.0;
  int64_t report_free_mem = 0;
  SecurityOptions security;
  ArgParser p("herd worker --listen tcp://ADDR:PORT [-m MODEL] [-t THREADS]",
              "Serves pipeline stages for a coordinator (`herd run --workers HOST:PORT,...`). The model file is "
              "-m, else the path the coordinator sends when it lies inside --models-dir and holds the same model (the "
              "handshake checks its hash), else the coordinator sends exactly the assigned tensors, which are cached "
              "under --cache-dir (at most --cache-max) for the next start. Only the assigned layers are mapped. Runs until a coordinator sends Stop, or SIGINT/SIGTERM. "
              "Over tcp:// it also listens on one ephemeral TCP port of the same interface for data lanes (activations "
              "without ZeroMQ's I/O threads); peers that cannot reach it stay on ZeroMQ. HERD_LANES=0 turns lanes off.");
  p.add("-l,--listen", "ADDR", "where to listen: tcp://HOST:PORT or HOST:PORT (port * = any free port)", &listen_addr);
  p.add("-m,--model", "FILE", "this host's copy of the GGUF model", &model);
  p.add("-t,--threads", "N", "CPU threads (0 = all cores)", &threads, 0, kMaxThreads);
  p.add("--device", "DEV", "where this worker's stages run: " + device_help(), &device);
  p.add("--nccl-across-hosts", "", "let NCCL join this worker's GPU with GPUs on other hosts (stage hops between GPU "
        "workers, GPU tensor-parallel groups): NCCL's network transport is neither authenticated nor encrypted, so by "
        "default a hop to another host uses the link and a GPU group spanning hosts is refused (implied by --insecure)",
        &nccl_across_hosts);
  p.add("--cache-dir", "DIR", "where received model shards are kept (default: $HERD_CACHE_DIR, else "
        "~/.cache/herd)", &cache_dir);
  p.add("--cache-max", "SIZE", "quota of --cache-dir, e.g. 300M, 64G (binary units; 0 = none): "
        "a transfer that would exceed it evicts the least recently used models not in use, or is refused",
        &cache_max);
  p.add("--models-dir", "DIR", "open a model path the coordinator names only when it lies inside DIR (default: "
        "never; the coordinator sends the weights instead)", &models_dir);
  p.add("--mem-budget", "SIZE|auto", "memory this worker may keep resident, e.g. 2G (binary units); auto (default): "
        "its free memory (MemAvailable), or its memory cgroup's limit when lower. A stage whose weights, KV cache and "
        "activations need more is streamed: its repacked weights are written once to a file under --cache-dir, mapped, "
        "and read layer by layer ahead of the compute (slower: bounded by the disk)", &mem_budget);
  p.add("--no-stream", "", "refuse a stage over --mem-budget (an error naming the bytes needed) instead of streaming it "
             "from disk", &no_stream);
  p.add("--weight-timeout", "S", "seconds to wait for each answer of a weight transfer before the Assign fails", &weight_timeout_s);
  p.add("--profile", "FILE.json", "send this `herd probe --out` profile in the handshake instead of measuring "
        "this host at startup (~1 s; free memory is always read live, as the memory budget; without a disk "
        "figure from `herd probe --disk`, 32 MiB of -m are read uncached to measure its disk)", &profile);
  p.add("--debug-delay-ms", "MS", "testing: sleep before each forward pass", &delay_ms, 0, 3600000);
  p.add("--debug-freeze-after", "N", "testing: the Nth forward pass never ends (a stuck main thread whose "
        "heartbeats still go out; for the coordinator's --step-timeout)", &freeze_after, 0, 1 << 30);
  p.add("--report-free-mem", "BYTES", "testing: report this much free memory to the coordinator's planner "
        "instead of MemAvailable", &report_free_mem);
  p.add("--exit-with-parent", "PID", "end when process PID (this worker's parent: herd-cluster, a test) ends, "
        "even by SIGKILL; exits at once if PID is not the parent any more", &exit_with_parent, 0, INT32_MAX);
  add_security_options(p, security);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  if (exit_with_parent > 0) bind_to_parent(static_cast<pid_t>(exit_with_parent));
  if (listen_addr.empty()) throw UsageError("--listen is required");
  apply_security_options(security, /*load_now=*/true);
  try {
    transport::check_address(listen_addr, /*listening=*/true);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("--listen: ") + e.what());
  }
  // -m is checked now, not at the first Assign: a worker that cannot read its model says so and
  // exits instead of serving a coordinator that would only learn it later.
  std::unique_ptr<model::GgufFile> model_file;
  if (!model.empty()) {
    try {
      model_file = model::GgufFile::open(model, {.map_all = false});
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("-m: ") + e.what());
    }
  }
  WorkerServerOptions o;
  o.device_backend = device_backend_factory(device);  // a missing GPU is an error now, not at the first Assign
  o.nccl_across_hosts = nccl_across_hosts || security.insecure;
  o.model_path = model;
  o.threads = threads;
  o.debug_delay_ms = delay_ms;
  o.debug_freeze_after = static_cast<int>(freeze_after);
  o.cache_dir = cache_dir;
  o.cache_max = parse_cache_size(cache_max);
  if (!(weight_timeout_s > 0 && weight_timeout_s <= 3600)) throw UsageError("--weight-timeout must be in (0, 3600] s");
  o.weight_timeout_ms = static_cast<int>(weight_timeout_s * 1000);
  if (!models_dir.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_directory(models_dir, ec)) throw UsageError("--models-dir " + models_dir + ": not a directory");
    o.models_dir = models_dir;
  }
  if (mem_budget != "auto") {
    o.mem_budget = parse_cache_size(mem_budget, "--mem-budget");
    if (o.mem_budget == 0) throw UsageError("--mem-budget must be more than 0 (or auto)");
  }
  o.no_stream = no_stream;
  if (report_free_mem < 0) throw UsageError("--report-free-mem must be positive");
  o.report_free_mem = static_cast<uint64_t>(report_free_mem);
  if (!profile.empty()) {
    try {
      o.profile = load_probe(profile);
    } catch (const std::exception& e) {
      throw UsageError(e.what());
    }
    o.profile_source = "file " + profile;
  } else if (!model.empty()) {
    // Measure the matvec rates of this model's matrix types only.
    for (const auto& t : model_file->tensors())
      if (t.ne.size() >= 2 && std::find(o.profile_types.begin(), o.profile_types.end(), static_cast<uint32_t>(t.type)) ==
                                  o.profile_types.end())
        o.profile_types.push_back(static_cast<uint32_t>(t.type));
  }
  model_file.reset();  // the worker opens its shard when assigned
  if (o.device_backend) set_worker_device(o, device);
  if (!o.profile) {
    Timer t;
    o.profile = measure_in_child(threads, o.profile_types);
    if (o.profile)
      HERD_LOG_INFO("worker: profile ", o.profile->read_bw_Bps / 1e9, " GB/s read, ", o.profile->matvec_Bps.size(),
                    " matvec types, ", o.profile->op_overhead_s * 1e6, " us per call (", t.seconds(), " s)");
  }
  // The disk its model file is on, for the coordinator's planner (streamed layers): from --profile
  // (`herd probe --disk`), else a short uncached read of -m (no -m: unknown; the coordinator then
  // assumes a speed, coordinator/plan_adapter.h).
  if (o.profile && !(o.profile->disk_read_Bps > 0) && !model.empty()) {
    try {
      o.profile->disk_read_Bps = disk_read_bps(model, size_t{32} << 20, 1);
      HERD_LOG_INFO("worker: disk ", o.profile->disk_read_Bps / 1e9, " GB/s (32 MiB of ", model, ", uncached)");
    } catch (const std::exception& e) {
      HERD_LOG_WARN("worker: cannot measure the disk of ", model, " (", e.what(),
                    "); the coordinator will assume one for any layers it plans to stream here");
    }
  }
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  o.name = std::string(host) + ":" + std::to_string(getpid());
  WorkerServer server(transport::listen(listen_addr), o);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  // Tests and launch scripts read the real address (a port of * is resolved here).
  std::fprintf(stderr, "herd worker: listening on %s\n", server.address().c_str());
  std::fflush(stderr);
  server.serve(&g_stop);
  std::fprintf(stderr, "herd worker: stopped\n");
  return 0;
}

}  // namespace herd::cli
