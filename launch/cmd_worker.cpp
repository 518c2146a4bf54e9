// herd worker: a long-running pipeline stage server. A coordinator (herd run/chat/logits --workers)
// connects, checks versions and the model, assigns a layer range; the worker maps only that shard
// of its own copy of the GGUF and serves until told to stop (or killed).
#include <unistd.h>

#include <csignal>
#include <cstdio>

#include "common/log.h"
#include "launch/commands.h"
#include "launch/args.h"
#include "transport/link.h"
#include "worker/worker_server.h"

namespace herd::cli {
namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

}  // namespace

int cmd_worker(const Args& args) {
  std::string listen_addr, model, cache_dir;
  int threads = 0, delay_ms = 0;
  ArgParser p("herd worker --listen tcp://ADDR:PORT [-m MODEL] [-t THREADS]",
              "Serves pipeline stages for a coordinator (`herd run --workers HOST:PORT,...`). The model file is "
              "-m, else the path the coordinator sends when it holds the same model here (the handshake checks its "
              "hash), else the coordinator sends exactly the assigned tensors, which are cached under --cache-dir "
              "for the next start. Only the assigned layers are mapped. Runs until a coordinator sends Stop, or SIGINT/SIGTERM.");
  p.add("-l,--listen", "ADDR", "where to listen: tcp://HOST:PORT or HOST:PORT (port * = any free port)", &listen_addr);
  p.add("-m,--model", "FILE", "this host's copy of the GGUF model", &model);
  p.add("-t,--threads", "N", "CPU threads (0 = all cores)", &threads);
  p.add("--cache-dir", "DIR", "where received model shards are kept (default: $HERD_CACHE_DIR, else "
        "~/.cache/herd)", &cache_dir);
  p.add("--debug-delay-ms", "MS", "testing: sleep before each forward pass", &delay_ms);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  if (listen_addr.empty()) throw UsageError("--listen is required");
  WorkerServerOptions o;
  o.model_path = model;
  o.threads = threads;
  o.debug_delay_ms = delay_ms;
  o.cache_dir = cache_dir;
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
