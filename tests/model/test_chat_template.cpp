// Chat templates: exact rendered text per format (what the models' reference Jinja templates
// render for the same conversation), detection on real tokenizer.chat_template strings, and the
// default system message extraction.
#include "model/chat_template.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace herd::model {
namespace {

const std::vector<ChatMessage> kConversation = {
    {"system", "You are terse."},
    {"user", "Hi there"},
    {"assistant", "Hello! How can I help?"},
    {"user", "What is 2+2?"},
};

// tokenizer.chat_template of SmolLM2-135M-Instruct, copied from the GGUF file (real newlines).
const std::string kSmolLM2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% "
    "endif %}";

// Plain ChatML, no default system message.
const std::string kChatML =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% "
    "endif %}";

// meta-llama/Meta-Llama-3-8B-Instruct
const std::string kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content "
    "}}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' "
    "}}{% endif %}";

// meta-llama/Llama-2-7b-chat-hf (its '\\n' are Jinja escapes in the template source)
const std::string kLlama2 =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message "
    "= messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false "
    "%}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 "
    "== 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') "
    "}}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + "
    "system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
    "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
    "content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + "
    "' ' + eos_token }}{% endif %}{% endfor %}";

// mistralai/Mistral-7B-Instruct-v0.2
const std::string kMistral =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == "
    "0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% "
    "endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif "
    "message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ "
    "raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

// HuggingFaceH4/zephyr-7b-beta
const std::string kZephyr =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  "
    "+ message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ "
    "'<|assistant|>' }}\n{% endif %}\n{% endfor %}";

// google/gemma-7b-it
const std::string kGemma =
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
    "supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set "
    "role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + "
    "'\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt "
    "%}{{'<start_of_turn>model\n'}}{% endif %}";

// microsoft/Phi-3-mini-4k-instruct: <|user|> like Zephyr, but a different format.
const std::string kPhi3 =
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + "
    "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + "
    "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + "
    "message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";

// Qwen2.5-Instruct style (excerpt): the default system message sits beside a branch that
// builds the system turn from a variable.
const std::string kQwenExcerpt =
    "{%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n";

TEST(ChatTemplate, ChatMLExact) {
  EXPECT_EQ(apply_chat_template(ChatFormat::ChatML, kConversation, true, "<s>"),
            "<|im_start|>system\nYou are terse.<|im_end|>\n"
            "<|im_start|>user\nHi there<|im_end|>\n"
            "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(apply_chat_template(ChatFormat::ChatML, {{"user", " x "}}, false, ""),
            "<|im_start|>user\n x <|im_end|>\n");  // content untouched
}

TEST(ChatTemplate, Llama3Exact) {
  EXPECT_EQ(apply_chat_template(ChatFormat::Llama3, kConversation, true, "<|begin_of_text|>"),
            "<|begin_of_text|>"
            "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello! How can I help?<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // content | trim; BOS belongs to the first message, so none without messages.
  EXPECT_EQ(apply_chat_template(ChatFormat::Llama3, {{"user", "  hi \n"}}, false, "<|begin_of_text|>"),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>");
  EXPECT_EQ(apply_chat_template(ChatFormat::Llama3, {}, true, "<|begin_of_text|>"),
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, Llama2Exact) {
  EXPECT_EQ(apply_chat_template(ChatFormat::Llama2, kConversation, true, "<s>"),
            "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there [/INST]"
            " Hello! How can I help? </s>"
            "<s>[INST] What is 2+2? [/INST]");
  // Without a system message; contents are strip()ed.
  EXPECT_EQ(apply_chat_template(ChatFormat::Llama2, {{"user", " a "}, {"assistant", "b\n"}}, false, "<s>"),
            "<s>[INST] a [/INST] b </s>");
}

TEST(ChatTemplate, MistralExact) {
  const std::vector<ChatMessage> no_system(kConversation.begin() + 1, kConversation.end());
  EXPECT_EQ(apply_chat_template(ChatFormat::Mistral, no_system, true, "<s>"),
            "<s>[INST] Hi there [/INST]Hello! How can I help?</s>[INST] What is 2+2? [/INST]");
  // Our extension: the system message is prepended to the first user turn.
  EXPECT_EQ(apply_chat_template(ChatFormat::Mistral, kConversation, true, "<s>"),
            "<s>[INST] You are terse.\n\nHi there [/INST]Hello! How can I help?</s>[INST] What is 2+2? [/INST]");
}

TEST(ChatTemplate, ZephyrExact) {
  EXPECT_EQ(apply_chat_template(ChatFormat::Zephyr, kConversation, true, "<s>"),
            "<|system|>\nYou are terse.</s>\n"
            "<|user|>\nHi there</s>\n"
            "<|assistant|>\nHello! How can I help?</s>\n"
            "<|user|>\nWhat is 2+2?</s>\n"
            "<|assistant|>\n");
  EXPECT_EQ(apply_chat_template(ChatFormat::Zephyr, {{"user", "q"}}, false, "", "<|endoftext|>"),
            "<|user|>\nq<|endoftext|>\n");
}

TEST(ChatTemplate, GemmaExact) {
  const std::vector<ChatMessage> no_system(kConversation.begin() + 1, kConversation.end());
  EXPECT_EQ(apply_chat_template(ChatFormat::Gemma, no_system, true, "<bos>"),
            "<bos><start_of_turn>user\nHi there<end_of_turn>\n"
            "<start_of_turn>model\nHello! How can I help?<end_of_turn>\n"
            "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
            "<start_of_turn>model\n");
  // System folded into the first user turn, as Gemma 3's template does.
  EXPECT_EQ(apply_chat_template(ChatFormat::Gemma, kConversation, false, "<bos>"),
            "<bos><start_of_turn>user\nYou are terse.\n\nHi there<end_of_turn>\n"
            "<start_of_turn>model\nHello! How can I help?<end_of_turn>\n"
            "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n");
}

TEST(ChatTemplate, AlternationIsEnforcedWhereTheReferenceRaises) {
  const std::vector<ChatMessage> two_users = {{"user", "a"}, {"user", "b"}};
  const std::vector<ChatMessage> assistant_first = {{"assistant", "a"}};
  for (ChatFormat f : {ChatFormat::Llama2, ChatFormat::Mistral, ChatFormat::Gemma}) {
    EXPECT_THROW(apply_chat_template(f, two_users, true, "<s>"), std::invalid_argument) << chat_format_name(f);
    EXPECT_THROW(apply_chat_template(f, assistant_first, true, "<s>"), std::invalid_argument)
        << chat_format_name(f);
  }
  EXPECT_NO_THROW(apply_chat_template(ChatFormat::ChatML, two_users, true, ""));
}

TEST(ChatTemplate, DetectsRealTemplates) {
  EXPECT_EQ(detect_chat_format(kSmolLM2), ChatFormat::ChatML);
  EXPECT_EQ(detect_chat_format(kChatML), ChatFormat::ChatML);
  EXPECT_EQ(detect_chat_format(kQwenExcerpt), ChatFormat::ChatML);
  EXPECT_EQ(detect_chat_format(kLlama3), ChatFormat::Llama3);
  EXPECT_EQ(detect_chat_format(kLlama2), ChatFormat::Llama2);
  EXPECT_EQ(detect_chat_format(kMistral), ChatFormat::Mistral);
  EXPECT_EQ(detect_chat_format(kZephyr), ChatFormat::Zephyr);
  EXPECT_EQ(detect_chat_format(kGemma), ChatFormat::Gemma);
  EXPECT_EQ(detect_chat_format(kPhi3), std::nullopt);
  EXPECT_EQ(detect_chat_format(""), std::nullopt);
  EXPECT_EQ(detect_chat_format("{{ messages[0]['content'] }}"), std::nullopt);
}

TEST(ChatTemplate, ParseFormatNames) {
  for (ChatFormat f : {ChatFormat::ChatML, ChatFormat::Llama2, ChatFormat::Llama3, ChatFormat::Mistral,
                       ChatFormat::Zephyr, ChatFormat::Gemma})
    EXPECT_EQ(parse_chat_format(chat_format_name(f)), f);
  EXPECT_EQ(parse_chat_format("chatml"), ChatFormat::ChatML);
  EXPECT_EQ(parse_chat_format("LLaMA3"), ChatFormat::Llama3);
  try {
    parse_chat_format("vicuna");
    FAIL() << "no throw";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("vicuna"), std::string::npos) << msg;
    for (const char* name : {"chatml", "llama2", "llama3", "mistral", "zephyr", "gemma"})
      EXPECT_NE(msg.find(name), std::string::npos) << msg;
  }
}

TEST(ChatTemplate, DefaultSystemMessageExtraction) {
  EXPECT_EQ(default_system_message(kSmolLM2), "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  EXPECT_EQ(default_system_message(kQwenExcerpt),
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  EXPECT_EQ(default_system_message(kChatML), std::nullopt);
  EXPECT_EQ(default_system_message(kLlama3), std::nullopt);
  // Escapes inside either kind of quote are decoded.
  EXPECT_EQ(default_system_message("{{ \"<|im_start|>system\\nYou're \\\"Bob\\\".<|im_end|>\\n\" }}"),
            "You're \"Bob\".");
  EXPECT_EQ(default_system_message("{{ '<|im_start|>system\\nIt\\'s me.<|im_end|>' }}"), "It's me.");
  // Literal template text between tags counts; comments do not.
  EXPECT_EQ(default_system_message("{% if x %}<|im_start|>system\nRaw text.<|im_end|>\n{% endif %}"), "Raw text.");
  EXPECT_EQ(default_system_message("{# '<|im_start|>system\nNope<|im_end|>' #}{{ 'x' }}"), std::nullopt);
  // Truncated or malformed templates do not crash.
  EXPECT_EQ(default_system_message("{{ '<|im_start|>system\nunterminated"), std::nullopt);
  EXPECT_EQ(default_system_message("{{"), std::nullopt);
  EXPECT_EQ(default_system_message("{% '"), std::nullopt);
}

TEST(ChatTemplate, TemplateAppliesDefaultSystemLikeSmolLM2) {
  const auto t = ChatTemplate::from_jinja(kSmolLM2);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->format, ChatFormat::ChatML);
  EXPECT_EQ(t->apply({{"user", "Hi"}}, true, ""),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  // An explicit system message replaces the default; no messages -> only the prompt.
  EXPECT_EQ(t->apply({{"system", "S"}, {"user", "Hi"}}, false, ""),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
  EXPECT_EQ(t->apply({}, true, ""), "<|im_start|>assistant\n");

  const auto plain = ChatTemplate::from_jinja(kChatML);
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ(plain->default_system, std::nullopt);
  EXPECT_EQ(plain->apply({{"user", "Hi"}}, false, ""), "<|im_start|>user\nHi<|im_end|>\n");
  EXPECT_EQ(ChatTemplate::from_jinja(kPhi3), std::nullopt);
}

}  // namespace
}  // namespace herd::model
