// herd synth: write a GGUF of a named shape (llama, qwen3, or a Mixtral / Qwen3-MoE mixture of experts)
// with seeded random weights (see model/synth.h).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "launch/args.h"
#include "launch/commands.h"
#include "model/synth.h"
#include "partition/shapes.h"

namespace herd::cli {
namespace {

// A named shape's hyper-parameters (partition/shapes.h).
model::ModelConfig find_shape(const std::string& name) {
  const auto s = partition::find_shape(name);
  if (!s) throw UsageError("unknown shape '" + name + "' (known: " + partition::known_shape_names() + ")");
  return partition::shape_config(*s);
}

// The Llama-2 SentencePiece vocabulary (32000 tokens) from shared/, when it is beside the repo.
std::string default_spm_vocab() {
  const std::string rel = "shared/models/ggml-vocab-llama-spm.gguf";
  for (const std::string& p : {"../" + rel, std::string(HERD_SOURCE_DIR) + "/../" + rel})
    if (std::filesystem::exists(p)) return p;
  return "";
}

std::string gib(uint64_t b) {
  char buf[32];
  if (b >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", b / 1073741824.0);
  else std::snprintf(buf, sizeof buf, "%.1f MiB", b / 1048576.0);
  return buf;
}

}  // namespace

int cmd_synth(const Args& args) {
  std::string shape, type, out, vocab_from;
  uint64_t seed = 1;
  int64_t layers = 0;
  int threads = 0;
  bool quiet = false, dry_run = false;
  ArgParser p("herd synth --shape NAME --type TYPE --out FILE.gguf [options]",
              "Writes a GGUF of the shape's architecture (llama, qwen3, qwen3moe; Mixtral is llama with experts) with "
              "seeded random weights (N(0, 0.02^2), norms near 1) for a named "
              "shape, streaming one tensor at a time. The same seed gives the same bytes. Tokenizer: copied from "
              "--vocab-from; by default the Llama-2 SentencePiece vocabulary (shared/models/ggml-vocab-llama-spm.gguf) "
              "for 32000-token shapes, else a synthetic SentencePiece vocabulary (<unk> <s> </s>, 256 byte tokens, "
              "filler pieces).");
  p.add("--shape", "NAME", "model shape: " + partition::known_shape_names(), &shape);
  p.add("--type", "TYPE", "weight type: " + model::known_type_mixes(), &type);
  p.add("-o,--out", "FILE", "output GGUF (written as FILE.partial, renamed when complete)", &out);
  p.add("-s,--seed", "S", "random seed", &seed);
  p.add("--layers", "N", "override the number of layers (0 = the shape's)", &layers);
  p.add("--vocab-from", "FILE", "copy the tokenizer from this GGUF (its token count must match the shape); "
        "'synthetic' forces the synthetic vocabulary", &vocab_from);
  p.add("-t,--threads", "N", "generation threads (0 = all cores; the bytes do not depend on it)", &threads, 0, kMaxThreads);
  p.add("--dry-run", "", "print the tensor count, parameters and size, write nothing", &dry_run);
  p.add("-q,--quiet", "", "no progress on stderr", &quiet);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  if (shape.empty()) throw UsageError("no shape: give --shape NAME (known: " + partition::known_shape_names() + ")");
  if (type.empty()) throw UsageError("no type: give --type TYPE (known: " + model::known_type_mixes() + ")");
  if (out.empty() && !dry_run) throw UsageError("no output: give --out FILE.gguf");
  if (layers < 0) throw UsageError("--layers must be >= 0");

  model::SynthOptions o;
  o.config = find_shape(shape);
  if (layers > 0) o.config.n_layers = layers;
  try {
    o.mix = model::parse_type_mix(type);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  o.seed = seed;
  o.n_threads = threads;
  if (vocab_from == "synthetic") {
    vocab_from.clear();
  } else if (vocab_from.empty() && o.config.n_vocab == 32000) {
    vocab_from = default_spm_vocab();
    if (vocab_from.empty()) std::fprintf(stderr, "synth: shared/models/ggml-vocab-llama-spm.gguf not found; "
                                                 "writing a synthetic vocabulary\n");
  }
  o.vocab_from = vocab_from;
  o.config.name = "herd-synth " + std::string(o.config.name) + " " + o.mix.name;

  const auto tensors = model::synth_tensors(o.config, o.mix);
  uint64_t params = 0, bytes = 0;
  for (const auto& t : tensors) params += static_cast<uint64_t>(t.n_elements()), bytes += t.n_bytes;
  if (dry_run) {
    std::string experts;
    if (o.config.is_moe())
      experts = ", " + std::to_string(o.config.n_expert) + " experts per layer (" +
                std::to_string(o.config.n_expert_used) + " per token)";
    std::printf("%s: %zu tensors, %.3f B parameters%s, %s of weights (%.2f bits per weight), file ~%s\n",
                o.config.name.c_str(), tensors.size(), params / 1e9, experts.c_str(), gib(bytes).c_str(),
                8.0 * bytes / params, gib(model::synth_size_estimate(o.config, o.mix)).c_str());
    return 0;
  }

  const bool show = !quiet && bytes >= (64ull << 20);
  const bool tty = isatty(2);
  const auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  if (show) {
    o.progress = [&](uint64_t done, uint64_t total) {
      const auto now = std::chrono::steady_clock::now();
      if (done < total && now - last < std::chrono::seconds(tty ? 1 : 10)) return;
      last = now;
      const double s = std::chrono::duration<double>(now - t0).count();
      const double rate = s > 0 ? done / s : 0;
      std::fprintf(stderr, "%ssynth: %s / %s (%.0f%%), %.0f MiB/s, %.0f s left%s", tty ? "\r" : "",
                   gib(done).c_str(), gib(total).c_str(), 100.0 * done / total, rate / 1048576.0,
                   rate > 0 ? (total - done) / rate : 0.0, tty ? "   " : "\n");
    };
  }
  const model::SynthSummary sum = model::write_synth_model(o, out);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (show && tty) std::fputc('\n', stderr);
  if (!quiet)
    std::fprintf(stderr, "synth: wrote %s: %zu tensors, %.1f M parameters, %s in %.1f s (vocabulary: %s)\n",
                 out.c_str(), sum.tensors.size(), sum.n_params / 1e6, gib(sum.file_bytes).c_str(), s,
                 o.vocab_from.empty() ? "synthetic" : o.vocab_from.c_str());
  return 0;
}

}  // namespace herd::cli
