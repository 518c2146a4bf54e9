// herd run: complete a prompt, streaming text to stdout and speed to stderr.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/log.h"
#include "coordinator/generator.h"
#include "coordinator/run_report.h"
#include "coordinator/trace_writer.h"
#include "launch/options.h"

namespace herd::cli {

void print_speed(const GenerationStats& st) {
  auto rate = [](int64_t n, double s) { return s > 0 ? static_cast<double>(n) / s : 0.0; };
  std::fprintf(stderr, "\nprompt: %lld tokens in %.1f ms (%.2f tok/s) | generation: %lld tokens in %.1f ms (%.2f tok/s)"
               " | stop: %s\n",
               static_cast<long long>(st.n_prompt), st.prompt_seconds * 1e3, rate(st.n_prompt, st.prompt_seconds),
               static_cast<long long>(st.n_generated), st.gen_seconds * 1e3, rate(st.n_generated, st.gen_seconds),
               st.stop_reason.c_str());
}

int cmd_run(const Args& args) {
  ModelOptions mo;
  SamplingOptions so;
  std::string prompt, prompt_file, trace_path;
  int64_t n_predict = 256;
  bool no_echo = false;
  ArgParser p("herd run [-m MODEL] -p PROMPT [options]",
              "Generates a continuation of PROMPT (no chat template; see `herd chat`). Text goes to stdout, "
              "prompt and generation speed to stderr.");
  add_model_options(p, mo);
  add_trace_option(p, &trace_path);
  p.add("-p,--prompt", "TEXT", "the prompt", &prompt);
  p.add("-f,--file", "FILE", "read the prompt from FILE", &prompt_file);
  p.add("-n,--n-predict", "N", "tokens to generate (-1 = until end of text or a full context)", &n_predict, -1, kMaxCtx);
  p.add("--no-echo", "", "do not print the prompt before the generated text", &no_echo);
  add_sampling_options(p, so);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  apply_security_options(mo.security);
  if (!prompt_file.empty()) {
    std::ifstream in(prompt_file, std::ios::binary);
    if (!in) throw UsageError("cannot read prompt file " + prompt_file);
    std::stringstream ss;
    ss << in.rdbuf();
    prompt = ss.str();
  }
  if (prompt.empty()) throw UsageError("no prompt: give -p TEXT or -f FILE");
  const SamplerParams sp = finish_sampling(so);

  ModelSession s = ModelSession::open(resolve_model(mo), session_for(mo));
  std::unique_ptr<TraceWriter> trace;
  if (!trace_path.empty()) trace = std::make_unique<TraceWriter>(trace_path, *s.pipeline);
  RunReport report(*s.pipeline);
  HERD_LOG_INFO("model ", s.config.arch, " ", s.config.n_layers, " layers, seed ", sp.seed);
  const auto tokens = s.tokenizer->encode(prompt, /*add_special=*/true, /*parse_special=*/true);
  Sampler sampler(sp, static_cast<int32_t>(s.config.n_vocab));
  Generator gen(*s.pipeline, *s.tokenizer);
  if (!no_echo) {
    std::fputs(prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  const GenerationStats st = gen.generate(tokens, n_predict, sampler, [](const std::string& text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::fputc('\n', stdout);
  print_speed(st);
  std::fputs(report.format().c_str(), stderr);
  return 0;
}

}  // namespace herd::cli
