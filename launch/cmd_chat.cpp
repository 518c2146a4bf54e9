// herd chat: a conversation with an instruct model through its chat template. Turns come from
// -p (one turn, then exit) or from stdin, one line per turn, until EOF or "/exit".
//
// Ctrl-C stops the answer being generated and keeps the conversation: the partial answer stays in
// the history, and the KV cache holds exactly the tokens that were evaluated (Generator stops
// before evaluating the token it did not print; the next turn reuses whatever prefix of the cache
// still matches its prompt). Ctrl-C at the prompt leaves, like EOF. With -p, Ctrl-C stops the
// answer and chat exits with status 130.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <stdexcept>

#include "coordinator/generator.h"
#include "launch/interrupt.h"
#include "coordinator/trace_writer.h"
#include "launch/options.h"
#include "model/chat_prompt.h"

namespace herd::cli {
namespace {

constexpr const char* kCommandHelp =
    "commands:\n"
    "  /help   this list\n"
    "  /reset  forget the conversation (its messages and the KV cache); the system message stays\n"
    "  /exit   leave (so do EOF and Ctrl-C at the prompt)\n"
    "Ctrl-C while an answer is being written stops it; the conversation goes on.\n";

}  // namespace

int cmd_chat(const Args& args) {
  ModelOptions mo;
  SamplingOptions so;
  std::string prompt, system, template_name, trace_path;
  int64_t n_predict = 1024;
  bool show_speed = false;
  ArgParser p("herd chat [-m MODEL] [-p MESSAGE] [options]",
              "Chats with an instruct model using its chat template (from tokenizer.chat_template, or "
              "--chat-template). With -p: answers one message and exits. Otherwise reads one message per line "
              "from stdin until EOF or /exit; the KV cache is reused across turns. /help lists the commands "
              "(/reset forgets the conversation); Ctrl-C stops an answer, and at the prompt leaves.");
  add_model_options(p, mo);
  add_trace_option(p, &trace_path);
  p.add("-p,--prompt", "TEXT", "answer this one message and exit", &prompt);
  p.add("--system", "TEXT", "system message (default: the template's own default, if any)", &system);
  p.add("--chat-template", "NAME", "override the template: chatml, llama2, llama3, mistral, zephyr, gemma",
        &template_name);
  p.add("-n,--n-predict", "N", "max tokens per answer (-1 = no cap: until end of turn or a full context)",
        &n_predict, -1, kMaxCtx);
  p.add("--speed", "", "print prompt/generation speed after each answer", &show_speed);
  add_sampling_options(p, so);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  apply_security_options(mo.security);
  const SamplerParams sp = finish_sampling(so);
  // Until the conversation starts, Ctrl-C ends the process — even where SIGINT came in ignored
  // (herd-cluster's background coordinator), so that it can stop a long load or weight transfer.
  std::signal(SIGINT, SIG_DFL);
  ModelSession s = ModelSession::open(resolve_model(mo), session_for(mo));
  std::unique_ptr<TraceWriter> trace;
  if (!trace_path.empty()) trace = std::make_unique<TraceWriter>(trace_path, *s.pipeline);
  const model::ChatPrompt chat_prompt(*s.file, *s.tokenizer, template_name);

  std::vector<model::ChatMessage> messages;
  if (!system.empty()) messages.push_back({"system", system});
  Generator gen(*s.pipeline, *s.tokenizer);
  const bool interactive = prompt.empty() && isatty(STDIN_FILENO);

  Interrupt intr;
  // One turn; Ctrl-C (intr) stops the answer. keep_going: more turns follow (stdin), so a message
  // that no longer fits the context is refused (and not kept; returns false) rather than fatal.
  auto answer = [&](const std::string& user, bool keep_going) {
    messages.push_back({"user", user});
    const auto tokens = chat_prompt.tokens(messages);
    Sampler sampler(sp, static_cast<int32_t>(s.config.n_vocab));
    std::string reply;
    GenerationStats st;
    try {
      st = gen.generate(tokens, n_predict, sampler, [&](const std::string& piece) {
        if (intr.requested()) return false;  // this piece's token was not evaluated: drop it too
        reply += piece;
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
        return true;
      });
    } catch (const std::length_error& e) {  // the conversation no longer fits the context
      if (!keep_going) throw;
      messages.pop_back();
      std::fprintf(stderr, "herd chat: %s; /reset starts a new conversation\n", e.what());
      return false;
    }
    std::fputc('\n', stdout);
    std::fflush(stdout);
    messages.push_back({"assistant", reply});
    if (show_speed) print_speed(st);
    if (st.stop_reason == "callback")
      std::fputs(keep_going ? "herd chat: stopped (the partial answer stays in the conversation; Ctrl-C at the "
                              "prompt leaves)\n"
                            : "herd chat: stopped\n",
                 stderr);
    else if (st.stop_reason == "length")
      std::fprintf(stderr, "herd chat: the answer reached -n %lld tokens and was cut there\n",
                   static_cast<long long>(n_predict));
    else if (st.stop_reason == "context")
      std::fputs("herd chat: the context is full; /reset starts a new conversation (or raise -c)\n", stderr);
    return true;
  };

  if (!prompt.empty()) {
    answer(prompt, false);
    return intr.requested() ? 130 : 0;
  }
  LineReader in(STDIN_FILENO);
  std::string line;
  while (true) {
    if (interactive) std::fputs("> ", stderr);
    const LineReader::Got got = in.next(line, intr);
    if (got == LineReader::Got::interrupted) {
      if (interactive) std::fputc('\n', stderr);
      break;
    }
    if (got == LineReader::Got::eof || line == "/exit") break;
    if (line.empty()) continue;
    if (line == "/help") {
      std::fputs(kCommandHelp, stderr);
      continue;
    }
    if (line == "/reset") {
      messages.clear();
      if (!system.empty()) messages.push_back({"system", system});
      gen.reset();
      std::fputs("herd chat: conversation reset (messages and KV cache forgotten)\n", stderr);
      continue;
    }
    answer(line, true);
    intr.clear();  // a Ctrl-C during the answer stopped only the answer
  }
  return 0;
}

}  // namespace herd::cli
