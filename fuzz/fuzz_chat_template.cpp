// Chat templates on arbitrary text: recognising a GGUF tokenizer.chat_template (detect, the
// default system message with its Jinja escapes) and rendering conversations of arbitrary roles and
// contents in every format. Only std::invalid_argument (a conversation a format rejects) may come out.
#include <stdexcept>

#include "fuzz/fuzz_util.h"
#include "model/chat_template.h"

using namespace herd::model;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  herd::fuzz::Input in{data, size};
  const uint8_t flags = in.byte();
  const std::string jinja = in.take(in.u16());
  (void)detect_chat_format(jinja);
  (void)default_system_message(jinja);
  auto tmpl = ChatTemplate::from_jinja(jinja);
  try {
    (void)parse_chat_format(in.take(in.byte() % 16));
  } catch (const std::invalid_argument&) {
  }
  static const char* kRoles[] = {"system", "user", "assistant", "tool"};
  std::vector<ChatMessage> msgs;
  while (!in.empty() && msgs.size() < 12) {
    const uint8_t r = in.byte();
    msgs.push_back({(r & 0x80) ? in.take(r & 7) : kRoles[r % 4], in.take(in.byte())});
  }
  const std::string bos = (flags & 2) ? "<s>" : "", eos = (flags & 4) ? "</s>" : "";
  for (ChatFormat f : {ChatFormat::ChatML, ChatFormat::Llama2, ChatFormat::Llama3, ChatFormat::Mistral,
                       ChatFormat::Zephyr, ChatFormat::Gemma}) {
    try {
      (void)apply_chat_template(f, msgs, flags & 1, bos, eos);
    } catch (const std::invalid_argument&) {
    }
  }
  if (tmpl) {
    try {
      (void)tmpl->apply(msgs, flags & 1, bos, eos);
    } catch (const std::invalid_argument&) {
    }
  }
  return 0;
}
