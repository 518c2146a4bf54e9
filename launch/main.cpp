// herd: one binary, several subcommands.
#include <sys/resource.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "launch/args.h"
#include "launch/commands.h"

namespace {

struct Command {
  const char* name;
  int (*fn)(const herd::cli::Args&);
  const char* help;
};

const Command kCommands[] = {
    {"run", herd::cli::cmd_run, "generate text from a prompt"},
    {"chat", herd::cli::cmd_chat, "chat with an instruct model (applies its chat template)"},
    {"serve", herd::cli::cmd_serve, "serve the model over HTTP: OpenAI's API, /metrics and a chat page"},
    {"info", herd::cli::cmd_info, "print a GGUF model's architecture, tensors and memory needs"},
    {"logits", herd::cli::cmd_logits, "write teacher-forced logits (LOG1) for a reference replay or a prompt"},
    {"compare", herd::cli::cmd_compare, "compare two LOG1 logits files row by row"},
    {"worker", herd::cli::cmd_worker, "serve pipeline stages for a coordinator (run/chat/logits --workers)"},
    {"synth", herd::cli::cmd_synth, "write a GGUF of a named shape (llama3-70b, ...) with seeded random weights"},
    {"bench", herd::cli::cmd_bench, "measure prompt (pp) and generation (tg) speed, like llama-bench"},
    {"plan", herd::cli::cmd_plan, "split a model across a cluster's devices and predict its speed"},
    {"cluster", herd::cli::cmd_cluster, "check a cluster file: its workers (where, how started, figures), devices and links"},
    {"probe", herd::cli::cmd_probe, "measure this host (memory, bandwidth, kernel rates) for a cluster file"},
    {"keygen", herd::cli::cmd_keygen, "write a cluster key (the file every host of a cluster holds), or --host: this host's own key"},
    {"lab", herd::cli::cmd_lab, "emulate a cluster file's hosts on this machine (namespaces, tc, cgroups), sweep, chart"},
    {"mpi", herd::cli::cmd_mpi, "run under mpirun: rank 0 coordinates (run/chat/logits), the other ranks are workers"},
};

void usage(FILE* out) {
  std::fprintf(out, "usage: herd <command> [options]   (herd <command> --help for its options)\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-9s %s\n", c.name, c.help);
  std::fprintf(out, "\nenvironment: HERD_LOG=debug|info|warn|error (default warn), HERD_MODEL=default model path\n");
}

// The soft limit on open files raised to the hard one, for `herd worker` only: a worker's every
// connection (ZeroMQ, data lanes) is a descriptor, and the usual soft limit of 1024 is a small
// target for an attacker who opens idle connections (issue [trust] item 4; with the hard limit also
// small, the handshake deadline of transport/zmq_link.h is what frees them). Not for `herd serve`:
// its HTTP library may use select(), which cannot take descriptors past 1023.
void raise_open_file_limit() {
  rlimit l{};
  if (::getrlimit(RLIMIT_NOFILE, &l) == 0 && l.rlim_cur < l.rlim_max) {
    l.rlim_cur = l.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &l);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "worker") == 0) raise_open_file_limit();
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "-h" || name == "--help" || name == "help") {
    usage(stdout);
    return 0;
  }
  if (name == "--version") {
    std::printf("herd 0.1.0\n");
    return 0;
  }
  for (const auto& c : kCommands) {
    if (name != c.name) continue;
    herd::cli::Args args(argv + 2, argv + argc);
    try {
      return c.fn(args);
    } catch (const herd::cli::UsageError& e) {
      std::fprintf(stderr, "herd %s: %s\n", c.name, e.what());
      return 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "herd %s: error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "herd: unknown command '%s'\n\n", name.c_str());
  usage(stderr);
  return 2;
}
