#include "model/chat_template.h"

#include <array>
#include <cctype>
#include <stdexcept>
#include <string>
#include <utility>

namespace herd::model {

namespace {

constexpr std::array<std::pair<ChatFormat, std::string_view>, 6> kFormatNames = {{
    {ChatFormat::ChatML, "chatml"},
    {ChatFormat::Llama2, "llama2"},
    {ChatFormat::Llama3, "llama3"},
    {ChatFormat::Mistral, "mistral"},
    {ChatFormat::Zephyr, "zephyr"},
    {ChatFormat::Gemma, "gemma"},
}};

std::string supported_names() {
  std::string s;
  for (const auto& [f, name] : kFormatNames) {
    if (!s.empty()) s += ", ";
    s += name;
  }
  return s;
}

bool contains(std::string_view hay, std::string_view needle) { return hay.find(needle) != std::string_view::npos; }

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Jinja's `trim` filter and Python's str.strip(): leading and trailing whitespace.
std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

[[noreturn]] void reject(ChatFormat f, const std::string& why) {
  throw std::invalid_argument("chat template " + std::string(chat_format_name(f)) + ": " + why);
}

// Splits off a leading system message and checks that the rest alternates user/assistant,
// starting with user (the check the Llama-2, Mistral and Gemma references make).
struct SplitConversation {
  const ChatMessage* system = nullptr;
  std::vector<const ChatMessage*> turns;
};

SplitConversation split_alternating(ChatFormat f, const std::vector<ChatMessage>& messages) {
  SplitConversation out;
  size_t i = 0;
  if (!messages.empty() && messages[0].role == "system") out.system = &messages[i++];
  for (; i < messages.size(); ++i) {
    const bool want_user = out.turns.size() % 2 == 0;
    const std::string& role = messages[i].role;
    if (role != (want_user ? "user" : "assistant"))
      reject(f, "conversation roles must alternate user/assistant/user/... (message " + std::to_string(i) +
                    " has role '" + role + "', expected '" + (want_user ? "user" : "assistant") + "')");
    out.turns.push_back(&messages[i]);
  }
  return out;
}

std::string render_chatml(const std::vector<ChatMessage>& messages, bool gen) {
  std::string s;
  for (const ChatMessage& m : messages) s += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  if (gen) s += "<|im_start|>assistant\n";
  return s;
}

std::string render_llama3(const std::vector<ChatMessage>& messages, bool gen, std::string_view bos) {
  std::string s;
  if (!messages.empty()) s += bos;  // the reference attaches BOS to the first message only
  for (const ChatMessage& m : messages) {
    s += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n";
    s += trim(m.content);
    s += "<|eot_id|>";
  }
  if (gen) s += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return s;
}

// The reference has no generation prompt: a conversation ending on a user turn already ends
// in " [/INST]", where the model answers.
std::string render_llama2(const std::vector<ChatMessage>& messages, std::string_view bos, std::string_view eos) {
  const SplitConversation c = split_alternating(ChatFormat::Llama2, messages);
  std::string s;
  for (size_t i = 0; i < c.turns.size(); ++i) {
    const ChatMessage& m = *c.turns[i];
    std::string content = m.content;
    // strip() applies to the whole "<<SYS>>...<</SYS>>\n\n" + content string.
    if (i == 0 && c.system) content = "<<SYS>>\n" + c.system->content + "\n<</SYS>>\n\n" + content;
    if (m.role == "user") {
      s += bos;
      s += "[INST] ";
      s += trim(content);
      s += " [/INST]";
    } else {
      s += " ";
      s += trim(content);
      s += " ";
      s += eos;
    }
  }
  return s;
}

std::string render_mistral(const std::vector<ChatMessage>& messages, std::string_view bos, std::string_view eos) {
  const SplitConversation c = split_alternating(ChatFormat::Mistral, messages);
  std::string s(bos);
  for (size_t i = 0; i < c.turns.size(); ++i) {
    const ChatMessage& m = *c.turns[i];
    if (m.role == "user") {
      s += "[INST] ";
      if (i == 0 && c.system) s += c.system->content + "\n\n";
      s += m.content + " [/INST]";
    } else {
      s += m.content;
      s += eos;
    }
  }
  return s;
}

std::string render_zephyr(const std::vector<ChatMessage>& messages, bool gen, std::string_view eos) {
  std::string s;
  for (const ChatMessage& m : messages) {
    // The reference renders only these three roles and silently skips any other.
    if (m.role != "system" && m.role != "user" && m.role != "assistant") continue;
    s += "<|" + m.role + "|>\n" + m.content;
    s += eos;
    s += "\n";
  }
  if (gen && !messages.empty()) s += "<|assistant|>\n";  // emitted inside the loop, on loop.last
  return s;
}

std::string render_gemma(const std::vector<ChatMessage>& messages, bool gen, std::string_view bos) {
  const SplitConversation c = split_alternating(ChatFormat::Gemma, messages);
  std::string s(bos);
  for (size_t i = 0; i < c.turns.size(); ++i) {
    const ChatMessage& m = *c.turns[i];
    s += "<start_of_turn>";
    s += m.role == "assistant" ? "model" : "user";
    s += "\n";
    if (i == 0 && c.system) s += c.system->content + "\n\n";
    s += trim(m.content);
    s += "<end_of_turn>\n";
  }
  if (gen) s += "<start_of_turn>model\n";
  return s;
}

// ---- default system message -------------------------------------------------------------

// Decodes the Python/Jinja escapes that occur in chat templates; unknown escapes stay as-is.
char unescape(char c) {
  switch (c) {
    case 'n': return '\n';
    case 't': return '\t';
    case 'r': return '\r';
    default: return c;  // \\ \' \" and anything else: the character itself
  }
}

// The strings a template can emit literally: quoted literals inside {{ }} and {% %} tags,
// and the raw text between tags. {# comments #} are skipped.
std::vector<std::string> literal_strings(std::string_view t) {
  std::vector<std::string> out;
  std::string text;  // raw template text since the last tag
  auto flush_text = [&] {
    if (!text.empty()) out.push_back(std::move(text));
    text.clear();
  };
  size_t i = 0;
  while (i < t.size()) {
    const bool tag = t[i] == '{' && i + 1 < t.size() && (t[i + 1] == '{' || t[i + 1] == '%' || t[i + 1] == '#');
    if (!tag) {
      text += t[i++];
      continue;
    }
    flush_text();
    const char kind = t[i + 1];
    if (kind == '#') {
      const size_t close = t.find("#}", i + 2);
      i = close == std::string_view::npos ? t.size() : close + 2;
      continue;
    }
    const char closer = kind == '{' ? '}' : '%';
    size_t j = i + 2;
    while (j < t.size()) {
      const char c = t[j];
      if (c == '\'' || c == '"') {
        std::string lit;
        ++j;
        while (j < t.size() && t[j] != c) {
          if (t[j] == '\\' && j + 1 < t.size()) {
            lit += unescape(t[j + 1]);
            j += 2;
          } else {
            lit += t[j++];
          }
        }
        ++j;  // closing quote (or past the end of an unterminated literal)
        out.push_back(std::move(lit));
      } else if (c == closer && j + 1 < t.size() && t[j + 1] == '}') {
        j += 2;
        break;
      } else {
        ++j;
      }
    }
    i = j;
  }
  flush_text();
  return out;
}

}  // namespace

std::string_view chat_format_name(ChatFormat format) {
  for (const auto& [f, name] : kFormatNames)
    if (f == format) return name;
  return "unknown";
}

ChatFormat parse_chat_format(std::string_view name) {
  std::string lower;
  for (char c : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& [f, n] : kFormatNames)
    if (lower == n) return f;
  throw std::invalid_argument("unknown chat template '" + std::string(name) + "' (supported: " + supported_names() + ")");
}

std::optional<ChatFormat> detect_chat_format(std::string_view t) {
  if (contains(t, "<|start_header_id|>")) return ChatFormat::Llama3;
  if (contains(t, "<|im_start|>")) return ChatFormat::ChatML;
  if (contains(t, "<start_of_turn>")) return ChatFormat::Gemma;
  if (contains(t, "[INST]")) return contains(t, "<<SYS>>") ? ChatFormat::Llama2 : ChatFormat::Mistral;
  // Phi-3 uses <|user|> too, but closes turns with <|end|> rather than EOS: not Zephyr.
  if (contains(t, "<|user|>") && contains(t, "<|assistant|>") && !contains(t, "<|end|>")) return ChatFormat::Zephyr;
  return std::nullopt;
}

std::optional<std::string> default_system_message(std::string_view jinja_template) {
  constexpr std::string_view kStart = "<|im_start|>system\n";
  constexpr std::string_view kEnd = "<|im_end|>";
  for (const std::string& lit : literal_strings(jinja_template)) {
    const size_t a = lit.find(kStart);
    if (a == std::string::npos) continue;
    const size_t begin = a + kStart.size();
    const size_t end = lit.find(kEnd, begin);
    if (end == std::string::npos || end == begin) continue;  // system text comes from a variable
    return lit.substr(begin, end - begin);
  }
  return std::nullopt;
}

std::string apply_chat_template(ChatFormat format, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt, std::string_view bos_text, std::string_view eos_text) {
  const std::string_view eos = eos_text.empty() ? std::string_view("</s>") : eos_text;
  switch (format) {
    case ChatFormat::ChatML: return render_chatml(messages, add_generation_prompt);
    case ChatFormat::Llama3: return render_llama3(messages, add_generation_prompt, bos_text);
    case ChatFormat::Llama2: return render_llama2(messages, bos_text, eos);
    case ChatFormat::Mistral: return render_mistral(messages, bos_text, eos);
    case ChatFormat::Zephyr: return render_zephyr(messages, add_generation_prompt, eos);
    case ChatFormat::Gemma: return render_gemma(messages, add_generation_prompt, bos_text);
  }
  throw std::invalid_argument("chat template: invalid ChatFormat value " + std::to_string(static_cast<int>(format)));
}

std::optional<ChatTemplate> ChatTemplate::from_jinja(std::string_view jinja_template) {
  const auto format = detect_chat_format(jinja_template);
  if (!format) return std::nullopt;
  ChatTemplate t;
  t.format = *format;
  if (*format == ChatFormat::ChatML) t.default_system = default_system_message(jinja_template);
  return t;
}

std::string ChatTemplate::apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                std::string_view bos_text, std::string_view eos_text) const {
  if (!default_system || messages.empty() || messages.front().role == "system")
    return apply_chat_template(format, messages, add_generation_prompt, bos_text, eos_text);
  std::vector<ChatMessage> with_system;
  with_system.reserve(messages.size() + 1);
  with_system.push_back({"system", *default_system});
  with_system.insert(with_system.end(), messages.begin(), messages.end());
  return apply_chat_template(format, with_system, add_generation_prompt, bos_text, eos_text);
}

}  // namespace herd::model
