// The OpenAI request parser: what it takes, and that every unsupported or malformed field is a
// 400 naming the field (never silently ignored).
#include "server/openai_api.h"

#include <gtest/gtest.h>

#include <string>

namespace herd::server {
namespace {

ApiRequest chat(const std::string& body) { return parse_request(Endpoint::Chat, body, SamplerParams{}); }
ApiRequest completion(const std::string& body) { return parse_request(Endpoint::Completion, body, SamplerParams{}); }

// The error a body gets: its status and the field it names.
std::pair<int, std::string> refusal(Endpoint e, const std::string& body) {
  try {
    parse_request(e, body, SamplerParams{});
  } catch (const ApiError& err) {
    return {err.status, err.param};
  }
  return {200, ""};
}

TEST(OpenAiApi, ChatRequestWithEverythingSupported) {
  const ApiRequest r = chat(R"({"model":"x","messages":[{"role":"system","content":"be brief"},
    {"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],
    "max_tokens":12,"temperature":0.5,"top_p":0.9,"top_k":7,"min_p":0.1,"seed":42,"stop":["\n","END"],
    "presence_penalty":0.5,"frequency_penalty":-0.5,"repeat_penalty":1.1,"stream":true,
    "stream_options":{"include_usage":true},"n":1,"user":"u1","logprobs":false,"tools":null})");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1].content, "hi there");
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(*r.max_tokens, 12);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.sampling.top_k, 7);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.1f);
  EXPECT_EQ(r.sampling.seed, 42u);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_FLOAT_EQ(r.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(r.sampling.repeat_penalty, 1.1f);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(OpenAiApi, DefaultsComeFromTheServer) {
  SamplerParams d;
  d.temperature = 0.0f;
  d.top_k = 3;
  const ApiRequest r = parse_request(Endpoint::Chat, R"({"messages":[{"role":"user","content":"x"}]})", d);
  EXPECT_EQ(r.sampling.temperature, 0.0f);
  EXPECT_EQ(r.sampling.top_k, 3);
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_FALSE(r.seed_given);
  EXPECT_FALSE(r.stream);
}

TEST(OpenAiApi, CompletionPromptForms) {
  EXPECT_EQ(completion(R"({"prompt":"abc"})").prompt_text, "abc");
  EXPECT_EQ(completion(R"({"prompt":["abc"]})").prompt_text, "abc");
  const ApiRequest t = completion(R"({"prompt":[1,2,3]})");
  EXPECT_TRUE(t.prompt_is_tokens);
  EXPECT_EQ(t.prompt_tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(completion(R"({"prompt":[[4,5]]})").prompt_tokens, (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(completion(R"({"prompt":"x","stop":"y"})").stop, (std::vector<std::string>{"y"}));
}

TEST(OpenAiApi, MalformedAndUnsupportedAreRefusedNamingTheField) {
  const Endpoint C = Endpoint::Chat, P = Endpoint::Completion;
  const std::string m = R"("messages":[{"role":"user","content":"x"}])";
  const std::vector<std::tuple<Endpoint, std::string, std::string>> cases = {
      {C, "{", ""},                                       // not JSON
      {C, "[1,2]", ""},                                   // not an object
      {C, "{}", "messages"},                              // required
      {C, R"({"messages":"hi"})", "messages"},
      {C, R"({"messages":[]})", "messages"},
      {C, R"({"messages":[{"role":"user"}]})", "messages[0].content"},
      {C, R"({"messages":[{"content":"x"}]})", "messages[0].role"},
      {C, R"({"messages":[{"role":"tool","content":"x"}]})", "messages[0].role"},
      {C, R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]})", "messages[0].content[0].type"},
      {C, R"({"messages":[{"role":"user","content":"x","extra":1}]})", "messages[0].extra"},
      {C, "{" + m + R"(,"max_tokens":"x"})", "max_tokens"},
      {C, "{" + m + R"(,"max_tokens":-1})", "max_tokens"},
      {C, "{" + m + R"(,"max_tokens":1.5})", "max_tokens"},
      {C, "{" + m + R"(,"temperature":"hot"})", "temperature"},
      {C, "{" + m + R"(,"temperature":-1})", "temperature"},
      {C, "{" + m + R"(,"top_p":1.5})", "top_p"},
      {C, "{" + m + R"(,"top_k":-2})", "top_k"},
      {C, "{" + m + R"(,"presence_penalty":3})", "presence_penalty"},
      {C, "{" + m + R"(,"seed":"abc"})", "seed"},
      {C, "{" + m + R"(,"stop":5})", "stop"},
      {C, "{" + m + R"(,"stop":["a",1]})", "stop[1]"},
      {C, "{" + m + R"(,"stream":"yes"})", "stream"},
      {C, "{" + m + R"(,"stream_options":{"include_usage":true}})", "stream_options"},  // without stream
      {C, "{" + m + R"(,"n":2})", "n"},
      {C, "{" + m + R"(,"logprobs":true})", "logprobs"},
      {C, "{" + m + R"(,"tools":[{"type":"function"}]})", "tools"},
      {C, "{" + m + R"(,"tool_choice":"auto"})", "tool_choice"},
      {C, "{" + m + R"(,"response_format":{"type":"json_object"}})", "response_format"},
      {C, "{" + m + R"(,"logit_bias":{"1":5}})", "logit_bias"},
      {C, "{" + m + R"(,"frobnicate":true})", "frobnicate"},
      {C, "{" + m + R"(,"prompt":"x"})", "prompt"},  // a completion field on the chat endpoint
      {P, R"({"prompt":5})", "prompt"},
      {P, R"({"prompt":["a","b"]})", "prompt"},
      {P, R"({"prompt":[1,-2]})", "prompt[1]"},
      {P, R"({"prompt":"x","echo":true})", "echo"},
      {P, R"({"prompt":"x","best_of":3})", "best_of"},
      {P, R"({"messages":[]})", "messages"},
  };
  for (const auto& [e, body, field] : cases) {
    const auto [status, param] = refusal(e, body);
    EXPECT_EQ(status, 400) << body;
    EXPECT_EQ(param, field) << body;
  }
}

TEST(OpenAiApi, ErrorJsonHasOpenAisShape) {
  const json j = error_json(ApiError(400, "invalid_request_error", "bad", "max_tokens", "c"));
  EXPECT_EQ(j["error"]["message"], "bad");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "max_tokens");
  EXPECT_EQ(j["error"]["code"], "c");
  EXPECT_TRUE(error_json(bad_request("x"))["error"]["param"].is_null());
}

TEST(OpenAiApi, ResponsesAndChunks) {
  const json full = full_response(Endpoint::Chat, "id1", 5, "m", "hello", "stop", {3, 2});
  EXPECT_EQ(full["object"], "chat.completion");
  EXPECT_EQ(full["choices"][0]["message"]["content"], "hello");
  EXPECT_EQ(full["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(full["usage"]["total_tokens"], 5);
  const json c = stream_chunk(Endpoint::Chat, "id1", 5, "m", "he", "");
  EXPECT_EQ(c["choices"][0]["delta"]["content"], "he");
  EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());
  const json last = stream_chunk(Endpoint::Chat, "id1", 5, "m", "", "length");
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  const json t = stream_chunk(Endpoint::Completion, "id1", 5, "m", "x", "");
  EXPECT_EQ(t["object"], "text_completion");
  EXPECT_EQ(t["choices"][0]["text"], "x");
  EXPECT_TRUE(usage_chunk(Endpoint::Chat, "i", 1, "m", {1, 1})["choices"].empty());
  // A lone invalid byte in model text is replaced, not thrown.
  EXPECT_NE(sse(stream_chunk(Endpoint::Completion, "i", 1, "m", std::string("\xff"), "")).find("data: {"),
            std::string::npos);
}

}  // namespace
}  // namespace herd::server
