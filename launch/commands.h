// The herd subcommands. Each takes its arguments (after the subcommand name) and returns the
// process exit code; errors the user can act on are printed as one clear line.
#pragma once

#include <string>
#include <vector>

namespace herd {
struct GenerationStats;
}

namespace herd::cli {

using Args = std::vector<std::string>;

int cmd_run(const Args& args);
int cmd_chat(const Args& args);
int cmd_serve(const Args& args);  // launch/cmd_serve.cpp
int cmd_info(const Args& args);
int cmd_logits(const Args& args);
int cmd_compare(const Args& args);
int cmd_worker(const Args& args);
int cmd_synth(const Args& args);
int cmd_bench(const Args& args);
int cmd_plan(const Args& args);
int cmd_cluster(const Args& args);  // launch/cmd_cluster.cpp
int cmd_probe(const Args& args);  // launch/cmd_probe.cpp
int cmd_keygen(const Args& args);  // launch/cmd_keygen.cpp
int cmd_mpi(const Args& args);  // launch/mpi_launch.cpp (mpirun entry)
int cmd_lab(const Args& args);  // launch/cmd_lab.cpp: execs the launch/herd-lab script

// The default model when -m is not given: $HERD_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf
// under the current directory or under the source tree the binary was built from.
std::string default_model_path();

// "prompt: N tokens in X ms (Y tok/s) | generation: ..." on stderr.
void print_speed(const GenerationStats& st);


}  // namespace herd::cli
