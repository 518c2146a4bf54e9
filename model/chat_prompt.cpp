#include "model/chat_prompt.h"

#include <stdexcept>

namespace herd::model {

ChatPrompt::ChatPrompt(const GgufFile& f, const Tokenizer& tok, const std::string& override_name,
                       const std::string& fallback)
    : tok_(tok) {
  const auto jinja = f.get_string("tokenizer.chat_template");
  auto named = [&](const std::string& name, const std::string& why) {
    tmpl_.format = parse_chat_format(name);
    if (jinja) tmpl_.default_system = default_system_message(*jinja);
    description_ = std::string(chat_format_name(tmpl_.format)) + " (" + why + ")";
  };
  if (!override_name.empty()) {
    named(override_name, "--chat-template");
  } else if (!jinja) {
    if (fallback.empty())
      throw std::runtime_error("the model has no chat template (tokenizer.chat_template); pass --chat-template NAME");
    named(fallback, "fallback: the model has no chat template");
  } else if (auto t = ChatTemplate::from_jinja(*jinja)) {
    tmpl_ = *t;
    description_ = std::string(chat_format_name(tmpl_.format)) + " (the model's own)";
  } else {
    if (fallback.empty())
      throw std::runtime_error("the model's chat template is not one herd recognises; pass --chat-template NAME "
                               "(chatml, llama2, llama3, mistral, zephyr, gemma)");
    named(fallback, "fallback: the model's template is not one herd recognises");
  }
  bos_text_ = tok.bos_id() >= 0 ? tok.token_text(tok.bos_id()) : "";
  eos_text_ = tok.eos_id() >= 0 ? tok.token_text(tok.eos_id()) : "";
}

std::string ChatPrompt::text(const std::vector<ChatMessage>& messages) const {
  return tmpl_.apply(messages, /*add_generation_prompt=*/true, bos_text_, eos_text_);
}

std::vector<int32_t> ChatPrompt::tokens(const std::vector<ChatMessage>& messages) const {
  const std::string t = text(messages);
  // Templates that write BOS themselves (Llama 2/3, Gemma) must not get a second one.
  const bool has_bos = !bos_text_.empty() && t.rfind(bos_text_, 0) == 0;
  return tok_.encode(t, /*add_special=*/!has_bos, /*parse_special=*/true);
}

}  // namespace herd::model
