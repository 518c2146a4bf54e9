// OpenAI's API shapes: requests parsed strictly (a field herd does not support is an error, never
// silently ignored), responses and stream chunks built. Pure functions, no sockets: the HTTP layer
// (http_server.cpp) moves bytes, this file decides what they mean.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/sampler.h"
#include "model/chat_template.h"

namespace herd::server {

using json = nlohmann::json;

// An error the client gets as OpenAI's error JSON with this HTTP status.
struct ApiError : std::runtime_error {
  int status;
  std::string type;   // invalid_request_error, authentication_error, not_found_error, server_error, ...
  std::string param;  // the offending field ("" = none)
  std::string code;   // e.g. context_length_exceeded ("" = none)
  ApiError(int status_, std::string type_, const std::string& message, std::string param_ = "", std::string code_ = "")
      : std::runtime_error(message), status(status_), type(std::move(type_)), param(std::move(param_)),
        code(std::move(code_)) {}
};
ApiError bad_request(const std::string& message, const std::string& param = "");
json error_json(const ApiError& e);

enum class Endpoint { Chat, Completion };

// What the server takes from a request's body.
struct ApiRequest {
  Endpoint endpoint = Endpoint::Chat;
  std::string model;                          // as asked (any string; the answer names the model served)
  std::vector<model::ChatMessage> messages;   // chat
  std::string prompt_text;                    // completion, text
  std::vector<int32_t> prompt_tokens;         // completion, token ids (when prompt_is_tokens)
  bool prompt_is_tokens = false;
  std::optional<int64_t> max_tokens;          // absent: the server's default
  SamplerParams sampling;                     // the server's defaults, overridden by the request
  bool seed_given = false;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;                 // stream_options.include_usage
};

// Throws ApiError (400) naming the field: malformed JSON, a wrong type, a value out of range, a
// field herd does not know or does not support (tools, n > 1, logprobs, images, ...).
ApiRequest parse_request(Endpoint endpoint, const std::string& body, const SamplerParams& defaults);

// Responses. `id` is the request's id ("chatcmpl-..." / "cmpl-..."), `created` Unix seconds.
struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};
json usage_json(const Usage& u);
json full_response(Endpoint e, const std::string& id, int64_t created, const std::string& model,
                   const std::string& text, const std::string& finish_reason, const Usage& u);
// One stream chunk: text (role_chunk: the chat's opening {"role":"assistant"} delta), or the final
// one with finish_reason set.
json stream_chunk(Endpoint e, const std::string& id, int64_t created, const std::string& model,
                  const std::string& text, const std::string& finish_reason, bool role_chunk = false);
// The usage chunk of stream_options.include_usage: no choices, usage set.
json usage_chunk(Endpoint e, const std::string& id, int64_t created, const std::string& model, const Usage& u);

// "data: <json>\n\n"
std::string sse(const json& j);

}  // namespace herd::server
