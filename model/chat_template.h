// Chat templates: a conversation -> the prompt text the model was fine-tuned on.
//
// GGUF files carry the Hugging Face Jinja template in tokenizer.chat_template. We do not run
// Jinja; we recognise the template family by its markers and render that family in C++,
// matching the reference template's output byte for byte (whitespace included):
//
//   ChatML   <|im_start|>role\ncontent<|im_end|>\n ... <|im_start|>assistant\n
//            (SmolLM2, Qwen2, ...). No BOS text.
//   Llama3   BOS <|start_header_id|>role<|end_header_id|>\n\n trim(content) <|eot_id|> ...
//            <|start_header_id|>assistant<|end_header_id|>\n\n   (Meta-Llama-3-*-Instruct)
//   Llama2   BOS [INST] <<SYS>>\nsys\n<</SYS>>\n\n user [/INST] assistant EOS BOS [INST] ...
//            (Llama-2-*-chat: contents strip()ed; the text already ends in " [/INST]")
//   Mistral  BOS [INST] user [/INST]assistant EOS [INST] user [/INST]   (Mistral-7B-Instruct-v0.2,
//            Mixtral-8x7B-Instruct-v0.1)
//   Zephyr   <|system|>\nsys EOS \n<|user|>\ncontent EOS \n ... <|assistant|>\n  (zephyr-7b-beta,
//            TinyLlama-chat)
//   Gemma    BOS <start_of_turn>user\n trim(content) <end_of_turn>\n ... <start_of_turn>model\n
//            (assistant is "model")
//
// Deliberate differences from the references, where they would raise an exception:
//   - Mistral and Gemma have no system role: a leading system message is prepended to the
//     first user turn as "system\n\nuser" (what Gemma 3's own template does).
//   - Llama2, Mistral and Gemma require user/assistant alternation (after an optional leading
//     system message) and throw std::invalid_argument otherwise, as their references do.
//
// BOS: pass the tokenizer's BOS text (e.g. "<s>", "<|begin_of_text|>", "<bos>") as bos_text to
// get exactly what the reference renders; then tokenize with add_special = false (or pass an
// empty bos_text and let the tokenizer add BOS), or the prompt starts with two BOS tokens.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace herd::model {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

enum class ChatFormat { ChatML, Llama2, Llama3, Mistral, Zephyr, Gemma };

// Canonical lower-case name, as accepted by parse_chat_format: "chatml", "llama2", ...
std::string_view chat_format_name(ChatFormat format);

// For a `--chat-template NAME` override; case-insensitive. Unknown names throw
// std::invalid_argument listing the supported names.
ChatFormat parse_chat_format(std::string_view name);

// Recognises a GGUF tokenizer.chat_template by its markers; nullopt when unknown (e.g. Phi-3,
// which shares Zephyr's <|user|> but ends turns with <|end|>).
std::optional<ChatFormat> detect_chat_format(std::string_view jinja_template);

// The system message a template inserts when the conversation has none, e.g. SmolLM2's
// "You are a helpful AI assistant named SmolLM, trained by Hugging Face". Looks for a string
// literal (or literal template text) holding "<|im_start|>system\n" + text + "<|im_end|>";
// Jinja escapes in literals (\n, \', \\, ...) are decoded. nullopt when there is none.
std::optional<std::string> default_system_message(std::string_view jinja_template);

// eos_text: empty -> the format's usual EOS ("</s>" for Llama2, Mistral and Zephyr; the other
// formats do not use it). Throws std::invalid_argument for conversations the format rejects.
std::string apply_chat_template(ChatFormat format, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt, std::string_view bos_text,
                                std::string_view eos_text = {});

// A recognised template: its format and the default system message it inserts, if any.
struct ChatTemplate {
  ChatFormat format = ChatFormat::ChatML;
  std::optional<std::string> default_system;

  // nullopt when detect_chat_format does not recognise the template.
  static std::optional<ChatTemplate> from_jinja(std::string_view jinja_template);

  // As apply_chat_template, but a non-empty conversation that does not start with a system
  // message gets default_system first (as SmolLM2's template does on its first message).
  std::string apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                    std::string_view bos_text, std::string_view eos_text = {}) const;
};

}  // namespace herd::model
