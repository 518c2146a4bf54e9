// herd chat: a conversation with an instruct model through its chat template. Turns come from
// -p (one turn, then exit) or from stdin, one line per turn, until EOF or "/exit".
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "coordinator/generator.h"
#include "launch/options.h"
#include "model/chat_prompt.h"

namespace herd::cli {

int cmd_chat(const Args& args) {
  ModelOptions mo;
  SamplingOptions so;
  std::string prompt, system, template_name;
  int64_t n_predict = -1;
  bool show_speed = false;
  ArgParser p("herd chat [-m MODEL] [-p MESSAGE] [options]",
              "Chats with an instruct model using its chat template (from tokenizer.chat_template, or "
              "--chat-template). With -p: answers one message and exits. Otherwise reads one message per line "
              "from stdin until EOF or /exit; the KV cache is reused across turns.");
  add_model_options(p, mo);
  p.add("-p,--prompt", "TEXT", "answer this one message and exit", &prompt);
  p.add("--system", "TEXT", "system message (default: the template's own default, if any)", &system);
  p.add("--chat-template", "NAME", "override the template: chatml, llama2, llama3, mistral, zephyr, gemma",
        &template_name);
  p.add("-n,--n-predict", "N", "max tokens per answer (-1 = until end of turn or a full context)", &n_predict);
  p.add("--speed", "", "print prompt/generation speed after each answer", &show_speed);
  add_sampling_options(p, so);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  const SamplerParams sp = finish_sampling(so);
  ModelSession s = ModelSession::open(resolve_model(mo), mo.session);
  const model::ChatPrompt chat_prompt(*s.file, *s.tokenizer, template_name);

  std::vector<model::ChatMessage> messages;
  if (!system.empty()) messages.push_back({"system", system});
  Generator gen(*s.pipeline, *s.tokenizer);
  const bool interactive = prompt.empty() && isatty(STDIN_FILENO);

  auto answer = [&](const std::string& user) {
    messages.push_back({"user", user});
    const auto tokens = chat_prompt.tokens(messages);
    Sampler sampler(sp, static_cast<int32_t>(s.config.n_vocab));
    std::string reply;
    const GenerationStats st = gen.generate(tokens, n_predict, sampler, [&](const std::string& piece) {
      reply += piece;
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::fputc('\n', stdout);
    std::fflush(stdout);
    messages.push_back({"assistant", reply});
    if (show_speed) print_speed(st);
  };

  if (!prompt.empty()) {
    answer(prompt);
    return 0;
  }
  std::string line;
  while (true) {
    if (interactive) std::fputs("> ", stderr);
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line.empty()) continue;
    answer(line);
  }
  return 0;
}

}  // namespace herd::cli
