// herd info: what a GGUF file holds and what it needs to run.
#include <algorithm>
#include <cstdio>
#include <map>

#include "cluster/model_fingerprint.h"
#include "cluster/tensor_hashes.h"
#include "coordinator/model_session.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "model/arch.h"
#include "model/chat_template.h"
#include "model/gguf.h"
#include "model/weights.h"

namespace herd::cli {
namespace {

double mib(uint64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); }

}  // namespace

int cmd_info(const Args& args) {
  std::vector<std::string> files;
  int64_t n_ctx = 0, n_batch = 512;
  bool tensors = false, metadata = false, hashes = false, rehash = false;
  ArgParser p("herd info [options] MODEL.gguf",
              "Prints the model's architecture, shapes, tensor types and sizes, and the memory a single-host run "
              "needs at the given context.");
  p.positional("MODEL.gguf", "the model file", &files);
  p.add("-c,--ctx-size", "N", "context size for the memory estimate (0 = min(training context, 4096))", &n_ctx, 0, kMaxCtx);
  p.add("-b,--batch", "N", "prompt batch size for the scratch estimate", &n_batch, 1, 65536);
  p.add("--tensors", "", "list every tensor", &tensors);
  p.add("--metadata", "", "list every metadata key", &metadata);
  p.add("--hashes", "", "print the model hash and every tensor's BLAKE2b-256 (what a cluster's workers are checked "
                        "against; computed once, then read from FILE.herd-hashes)", &hashes);
  p.add("--rehash", "", "with --hashes: read the tensors again whatever the hash cache says, and rewrite it", &rehash);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  if (files.size() != 1) throw UsageError("give exactly one MODEL.gguf (see --help)");
  auto f = model::GgufFile::open(files[0]);
  std::printf("file:         %s (%.1f MiB, GGUF v%u, %zu tensors, %zu metadata keys)\n", f->path().c_str(),
              mib(f->file_size()), f->version(), f->tensors().size(), f->keys().size());
  if (metadata)
    for (const auto& k : f->keys()) std::printf("  %-40s %s\n", k.c_str(), f->value_to_string(k).c_str());
  if (hashes || rehash) {
    cluster::HashOptions ho;
    ho.read_cache = !rehash;
    const std::string header = cluster::model_fingerprint(*f);
    cluster::TensorHashes h(*f, header, ho);
    std::vector<std::string> names;
    for (const auto& t : f->tensors()) names.push_back(t.name);
    const auto digests = h.digests(names);
    std::printf("model hash:   %s (sha256 of the header, metadata and tensor directory)\n", header.c_str());
    const auto& st = h.stats();
    std::printf("tensor hashes (blake2b-256 of each tensor's bytes; %s):\n",
                st.tensors_hashed == 0 ? ("from " + st.loaded_from).c_str()
                                       : (st.saved_to.empty() ? "not cached" : ("cached in " + st.saved_to).c_str()));
    for (const auto& d : digests) std::printf("  %s  %s\n", cluster::digest_hex(d.blake2b).c_str(), d.name.c_str());
  }

  std::map<std::string, std::pair<int, uint64_t>> by_type;
  uint64_t n_params = 0, weight_bytes = 0;
  for (const auto& t : f->tensors()) {
    auto& e = by_type[std::string(dtype_name(t.type))];
    e.first++;
    e.second += t.n_bytes;
    n_params += static_cast<uint64_t>(t.n_elements());
    weight_bytes += t.n_bytes;
    if (tensors) {
      std::string shape;
      for (size_t i = 0; i < t.ne.size(); ++i) shape += (i ? " x " : "") + std::to_string(t.ne[i]);
      std::printf("  %-32s %-6s %-16s %10.3f MiB\n", t.name.c_str(), std::string(dtype_name(t.type)).c_str(),
                  shape.c_str(), mib(t.n_bytes));
    }
  }
  if (f->tensors().empty()) {
    std::printf("no tensors (vocabulary-only file)\n");
    return 0;
  }
  const model::ModelConfig c = model::load_config(*f);
  std::printf("architecture: %s%s%s\n", c.arch.c_str(), c.name.empty() ? "" : "  name: ", c.name.c_str());
  std::printf("shape:        %lld layers, n_embd %lld, n_ff %lld, heads %lld (kv %lld), head_dim %lld, vocab %lld, "
              "training context %lld\n",
              (long long)c.n_layers, (long long)c.n_embd, (long long)c.n_ff, (long long)c.n_heads,
              (long long)c.n_kv_heads, (long long)c.head_dim, (long long)c.n_vocab, (long long)c.n_ctx_train);
  std::printf("rope:         %s, base %g, scale %g, %lld dims; rms eps %g; %s embeddings%s\n",
              c.rope_mode == RopeMode::Neox ? "neox" : "normal", c.rope_freq_base, c.rope_freq_scale,
              (long long)c.n_rot, c.rms_eps, c.tied_embeddings ? "tied" : "separate output",
              c.has_qkv_bias ? ", qkv bias" : c.has_qk_norm ? ", q/k norms" : "");
  std::printf("tokenizer:    %s (pre: %s)", f->get_string("tokenizer.ggml.model").value_or("?").c_str(),
              f->get_string("tokenizer.ggml.pre").value_or("default").c_str());
  if (auto tmpl = f->get_string("tokenizer.chat_template")) {
    auto fmt = model::detect_chat_format(*tmpl);
    std::printf(", chat template: %s", fmt ? std::string(model::chat_format_name(*fmt)).c_str() : "unrecognised");
  }
  std::printf("\nparameters:   %.2f M, %.1f MiB (%.2f bits per weight)\n", n_params / 1e6, mib(weight_bytes),
              8.0 * weight_bytes / static_cast<double>(n_params));
  std::printf("tensor types:");
  for (const auto& [name, e] : by_type) std::printf("  %s: %d (%.1f MiB)", name.c_str(), e.first, mib(e.second));
  std::printf("\n");

  const uint64_t run_weights = model::stage_weight_bytes(*f, c, {0, c.n_layers, true, true});
  if (c.is_moe()) {
    // A token reads every shared weight and, per layer, the n_expert_used experts it was routed
    // to: that share of the expert tensors (all experts are equally large).
    uint64_t expert_bytes = 0;
    for (int64_t l = 0; l < c.n_layers; ++l)
      for (const char* t : {"ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight"})
        if (const auto* info = f->find_tensor(model::layer_tensor(l, t))) expert_bytes += info->n_bytes;
    const uint64_t active = run_weights - expert_bytes + expert_bytes / c.n_expert * c.n_expert_used;
    std::printf("experts:      %lld (%lld active per token), expert FFN %lld; weights read per token %.1f MiB of "
                "%.1f MiB (shared %.1f MiB + %lld of %lld experts per layer)\n",
                (long long)c.n_expert, (long long)c.n_expert_used, (long long)c.n_ff_exp, mib(active),
                mib(run_weights), mib(run_weights - expert_bytes), (long long)c.n_expert_used, (long long)c.n_expert);
  }

  if (n_ctx <= 0) n_ctx = default_context(c);
  const uint64_t kv = 2ull * sizeof(float) * c.n_layers * n_ctx * c.kv_dim();
  // Scratch: per batch token x, cur, q, k, v, attn, gate, up rows (q/k norms: normed q and k;
  // experts: router logits, a gathered row and n_expert_used outputs); plus one row of logits.
  const int64_t ff = std::max(c.n_ff, c.is_moe() ? c.n_ff_exp : 0);
  const int64_t per_token = 2 * c.n_embd + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * ff +
                            (c.has_qk_norm ? c.q_dim() + c.kv_dim() : 0) +
                            (c.is_moe() ? c.n_expert + (1 + c.n_expert_used) * c.n_embd : 0);
  const uint64_t scratch = 4ull * n_batch * static_cast<uint64_t>(per_token) + 4ull * c.n_vocab;
  std::printf("memory at context %lld: weights %.1f MiB + KV cache %.1f MiB (f32) + scratch %.1f MiB = %.1f MiB\n",
              (long long)n_ctx, mib(run_weights), mib(kv), mib(scratch), mib(run_weights + kv + scratch));
  return 0;
}

}  // namespace herd::cli
