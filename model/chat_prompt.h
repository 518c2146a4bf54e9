// A model's conversation -> prompt tokens: the chat template chosen for a GGUF file (its own
// tokenizer.chat_template, or a named override) plus the BOS/EOS handling around it. `herd chat`
// and `herd serve` both build prompts here, so a conversation tokenizes the same in both.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/chat_template.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

namespace herd::model {

class ChatPrompt {
 public:
  // override_name: "" = the file's template; else chatml, llama2, ... (parse_chat_format).
  // fallback: the template to use when the file has none, or one herd does not recognise ("" =
  // throw std::runtime_error telling the user to pass --chat-template NAME).
  ChatPrompt(const GgufFile& f, const Tokenizer& tok, const std::string& override_name,
             const std::string& fallback = "");

  // The prompt text with the assistant's turn opened (add_generation_prompt), tokenized with the
  // special tokens parsed and exactly one BOS where the model wants one. Throws
  // std::invalid_argument for a conversation the template rejects (e.g. roles not alternating).
  std::vector<int32_t> tokens(const std::vector<ChatMessage>& messages) const;
  std::string text(const std::vector<ChatMessage>& messages) const;

  const ChatTemplate& chat_template() const { return tmpl_; }
  // "chatml (the model's own)", "llama3 (--chat-template)", "chatml (fallback: the model has none)".
  const std::string& description() const { return description_; }

 private:
  const Tokenizer& tok_;
  ChatTemplate tmpl_;
  std::string bos_text_, eos_text_, description_;
};

}  // namespace herd::model
