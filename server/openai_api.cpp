#include "server/openai_api.h"

#include <cmath>
#include <limits>
#include <set>

namespace herd::server {
namespace {

constexpr size_t kMaxStops = 4;  // as OpenAI
constexpr size_t kMaxStopBytes = 512;

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "a number";
  }
}

ApiError wrong_type(const std::string& field, const char* want, const json& got) {
  return bad_request("'" + field + "' must be " + want + ", not " + type_name(got), field);
}

double number(const json& v, const std::string& field, double lo, double hi) {
  if (!v.is_number()) throw wrong_type(field, "a number", v);
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    throw bad_request("'" + field + "' = " + v.dump() + " is outside [" + json(lo).dump() + ", " + json(hi).dump() + "]",
                      field);
  return x;
}

int64_t integer(const json& v, const std::string& field, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) {
    // 3.0 is an integer too (JavaScript clients send them); 3.5 is not.
    if (v.is_number_float() && std::isfinite(v.get<double>()) && v.get<double>() == std::floor(v.get<double>()) &&
        std::fabs(v.get<double>()) < 9e15)
      return integer(json(static_cast<int64_t>(v.get<double>())), field, lo, hi);
    throw wrong_type(field, "an integer", v);
  }
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    throw bad_request("'" + field + "' = " + v.dump() + " is too large", field);
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    throw bad_request("'" + field + "' = " + std::to_string(x) + " is outside [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "]",
                      field);
  return x;
}

bool boolean(const json& v, const std::string& field) {
  if (!v.is_boolean()) throw wrong_type(field, "a boolean", v);
  return v.get<bool>();
}

std::string string(const json& v, const std::string& field) {
  if (!v.is_string()) throw wrong_type(field, "a string", v);
  return v.get<std::string>();
}

// A message's content: a string, or OpenAI's list of parts of which herd takes the text ones.
std::string content_text(const json& c, const std::string& field) {
  if (c.is_string()) return c.get<std::string>();
  if (c.is_null()) return "";
  if (!c.is_array()) throw wrong_type(field, "a string or an array of content parts", c);
  std::string out;
  for (size_t i = 0; i < c.size(); ++i) {
    const std::string f = field + "[" + std::to_string(i) + "]";
    const json& part = c[i];
    if (!part.is_object()) throw wrong_type(f, "an object", part);
    const auto t = part.find("type");
    if (t == part.end() || !t->is_string()) throw bad_request("'" + f + ".type' is missing", f + ".type");
    if (*t != "text")
      throw bad_request("content parts of type '" + t->get<std::string>() + "' are not supported (text only)",
                        f + ".type");
    for (const auto& [k, v] : part.items())
      if (k != "type" && k != "text") throw bad_request("unknown field '" + f + "." + k + "'", f + "." + k);
    const auto txt = part.find("text");
    if (txt == part.end()) throw bad_request("'" + f + ".text' is missing", f + ".text");
    out += string(*txt, f + ".text");
  }
  return out;
}

std::vector<model::ChatMessage> parse_messages(const json& m) {
  if (!m.is_array()) throw wrong_type("messages", "an array", m);
  if (m.empty()) throw bad_request("'messages' is empty", "messages");
  std::vector<model::ChatMessage> out;
  for (size_t i = 0; i < m.size(); ++i) {
    const std::string f = "messages[" + std::to_string(i) + "]";
    const json& msg = m[i];
    if (!msg.is_object()) throw wrong_type(f, "an object", msg);
    std::string role;
    bool has_content = false;
    model::ChatMessage cm;
    for (const auto& [k, v] : msg.items()) {
      if (k == "role") {
        role = string(v, f + ".role");
      } else if (k == "content") {
        cm.content = content_text(v, f + ".content");
        has_content = true;
      } else if (k == "name") {
        string(v, f + ".name");  // OpenAI's participant name: the templates have no place for it
      } else if ((k == "tool_calls" || k == "function_call" || k == "refusal") && v.is_null()) {
        // null is what some clients send for "none"
      } else if (k == "tool_calls" || k == "function_call" || k == "tool_call_id") {
        throw bad_request("tool calls are not supported", f + "." + k);
      } else {
        throw bad_request("unknown field '" + f + "." + k + "'", f + "." + k);
      }
    }
    if (role.empty()) throw bad_request("'" + f + ".role' is missing", f + ".role");
    if (role == "developer") role = "system";  // OpenAI's newer name for the system role
    if (role != "system" && role != "user" && role != "assistant")
      throw bad_request("role '" + role + "' is not supported (system, user, assistant)", f + ".role");
    if (!has_content) throw bad_request("'" + f + ".content' is missing", f + ".content");
    cm.role = role;
    out.push_back(std::move(cm));
  }
  return out;
}

void parse_prompt(const json& p, ApiRequest& r) {
  auto tokens = [&](const json& arr, const std::string& f) {
    std::vector<int32_t> out;
    for (size_t i = 0; i < arr.size(); ++i)
      out.push_back(static_cast<int32_t>(integer(arr[i], f + "[" + std::to_string(i) + "]", 0,
                                                 std::numeric_limits<int32_t>::max())));
    return out;
  };
  if (p.is_string()) {
    r.prompt_text = p.get<std::string>();
    return;
  }
  if (!p.is_array()) throw wrong_type("prompt", "a string, an array of token ids or an array of one string", p);
  if (p.empty()) throw bad_request("'prompt' is empty", "prompt");
  if (p[0].is_number()) {
    r.prompt_tokens = tokens(p, "prompt");
    r.prompt_is_tokens = true;
    return;
  }
  if (p.size() > 1) throw bad_request("several prompts in one request are not supported (send one per request)", "prompt");
  if (p[0].is_string()) {
    r.prompt_text = p[0].get<std::string>();
  } else if (p[0].is_array()) {
    r.prompt_tokens = tokens(p[0], "prompt[0]");
    r.prompt_is_tokens = true;
  } else {
    throw wrong_type("prompt[0]", "a string or an array of token ids", p[0]);
  }
}

std::vector<std::string> parse_stop(const json& v) {
  std::vector<std::string> out;
  if (v.is_string()) {
    out.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    if (v.size() > kMaxStops) throw bad_request("'stop' has more than " + std::to_string(kMaxStops) + " strings", "stop");
    for (size_t i = 0; i < v.size(); ++i) out.push_back(string(v[i], "stop[" + std::to_string(i) + "]"));
  } else {
    throw wrong_type("stop", "a string or an array of strings", v);
  }
  std::vector<std::string> kept;
  for (auto& s : out) {
    if (s.size() > kMaxStopBytes) throw bad_request("a stop string is longer than " + std::to_string(kMaxStopBytes) + " bytes", "stop");
    if (!s.empty()) kept.push_back(std::move(s));
  }
  return kept;
}

}  // namespace

ApiError bad_request(const std::string& message, const std::string& param) {
  return ApiError(400, "invalid_request_error", message, param);
}

json error_json(const ApiError& e) {
  json err = {{"message", e.what()}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return json{{"error", err}};
}

ApiRequest parse_request(Endpoint endpoint, const std::string& body, const SamplerParams& defaults) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    throw bad_request(std::string("the body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw bad_request(std::string("the body must be a JSON object, not ") + type_name(j));
  ApiRequest r;
  r.endpoint = endpoint;
  r.sampling = defaults;
  const bool chat = endpoint == Endpoint::Chat;
  bool have_input = false;
  for (const auto& [k, v] : j.items()) {
    if (v.is_null() && k != "messages" && k != "prompt") continue;  // null = not given (as clients send it)
    if (k == "model") {
      r.model = string(v, k);
    } else if (chat && k == "messages") {
      r.messages = parse_messages(v);
      have_input = true;
    } else if (!chat && k == "prompt") {
      parse_prompt(v, r);
      have_input = true;
    } else if (k == "max_tokens" || (chat && k == "max_completion_tokens")) {
      r.max_tokens = integer(v, k, 0, std::numeric_limits<int32_t>::max());
    } else if (k == "temperature") {
      r.sampling.temperature = static_cast<float>(number(v, k, 0.0, 100.0));
    } else if (k == "top_p") {
      r.sampling.top_p = static_cast<float>(number(v, k, 0.0, 1.0));
      if (r.sampling.top_p == 0.0f) r.sampling.top_p = std::numeric_limits<float>::min();  // OpenAI allows 0: keep the best
    } else if (k == "top_k") {
      r.sampling.top_k = static_cast<int>(integer(v, k, 0, std::numeric_limits<int32_t>::max()));
    } else if (k == "min_p") {
      r.sampling.min_p = static_cast<float>(number(v, k, 0.0, 1.0));
    } else if (k == "seed") {
      r.sampling.seed = static_cast<uint64_t>(integer(v, k, std::numeric_limits<int64_t>::min(),
                                                      std::numeric_limits<int64_t>::max()));
      r.seed_given = true;
    } else if (k == "stop") {
      r.stop = parse_stop(v);
    } else if (k == "presence_penalty") {
      r.sampling.presence_penalty = static_cast<float>(number(v, k, -2.0, 2.0));
    } else if (k == "frequency_penalty") {
      r.sampling.frequency_penalty = static_cast<float>(number(v, k, -2.0, 2.0));
    } else if (k == "repeat_penalty") {
      r.sampling.repeat_penalty = static_cast<float>(number(v, k, 1e-6, 100.0));
    } else if (k == "repeat_last_n") {
      r.sampling.repeat_last_n = static_cast<int>(integer(v, k, 0, 1 << 16));
    } else if (k == "stream") {
      r.stream = boolean(v, k);
    } else if (k == "stream_options") {
      if (!v.is_object()) throw wrong_type(k, "an object", v);
      for (const auto& [sk, sv] : v.items()) {
        if (sk == "include_usage") r.include_usage = sv.is_null() ? false : boolean(sv, "stream_options.include_usage");
        else throw bad_request("unknown field 'stream_options." + sk + "'", "stream_options." + sk);
      }
    } else if (k == "n" || k == "best_of") {
      if (integer(v, k, 1, std::numeric_limits<int32_t>::max()) != 1)
        throw bad_request("'" + k + "' > 1 is not supported (one choice per request)", k);
    } else if (k == "user") {
      string(v, k);  // the caller's end-user id, for their own abuse tracking: metadata only
    } else if (k == "logprobs") {
      if (v.is_boolean() ? v.get<bool>() : true)
        throw bad_request("'logprobs' is not supported", k);
    } else if (k == "echo") {
      if (boolean(v, k)) throw bad_request("'echo' is not supported", k);
    } else if (k == "logit_bias") {
      if (!v.is_object()) throw wrong_type(k, "an object", v);
      if (!v.empty()) throw bad_request("'logit_bias' is not supported", k);
    } else if (k == "response_format") {
      if (!v.is_object()) throw wrong_type(k, "an object", v);
      const auto t = v.find("type");
      if (t == v.end() || *t != "text" || v.size() != 1)
        throw bad_request("only response_format {\"type\": \"text\"} is supported (no JSON mode)", k);
    } else if (k == "tools" || k == "functions") {
      if (!v.is_array()) throw wrong_type(k, "an array", v);
      if (!v.empty()) throw bad_request("tools are not supported", k);
    } else if (k == "tool_choice" || k == "function_call") {
      if (!(v.is_string() && v.get<std::string>() == "none")) throw bad_request("tools are not supported", k);
    } else if (k == "parallel_tool_calls") {
      boolean(v, k);
    } else {
      throw bad_request("unknown field '" + k + "'", k);
    }
  }
  if (!have_input) {
    const std::string f = chat ? "messages" : "prompt";
    throw bad_request("'" + f + "' is required", f);
  }
  if (r.include_usage && !r.stream) throw bad_request("'stream_options' is only allowed with stream: true", "stream_options");
  return r;
}

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

namespace {
json finish_value(const std::string& reason) { return reason.empty() ? json(nullptr) : json(reason); }
}  // namespace

json full_response(Endpoint e, const std::string& id, int64_t created, const std::string& model,
                   const std::string& text, const std::string& finish_reason, const Usage& u) {
  json choice = {{"index", 0}, {"finish_reason", finish_value(finish_reason)}, {"logprobs", nullptr}};
  if (e == Endpoint::Chat) choice["message"] = {{"role", "assistant"}, {"content", text}};
  else choice["text"] = text;
  return {{"id", id},
          {"object", e == Endpoint::Chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model},
          {"system_fingerprint", "herd"},
          {"choices", json::array({choice})},
          {"usage", usage_json(u)}};
}

json stream_chunk(Endpoint e, const std::string& id, int64_t created, const std::string& model,
                  const std::string& text, const std::string& finish_reason, bool role_chunk) {
  json choice = {{"index", 0}, {"finish_reason", finish_value(finish_reason)}, {"logprobs", nullptr}};
  if (e == Endpoint::Chat) {
    json delta = json::object();
    if (role_chunk) delta = {{"role", "assistant"}, {"content", ""}};
    else if (finish_reason.empty()) delta = {{"content", text}};
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  return {{"id", id},
          {"object", e == Endpoint::Chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"system_fingerprint", "herd"},
          {"choices", json::array({choice})}};
}

json usage_chunk(Endpoint e, const std::string& id, int64_t created, const std::string& model, const Usage& u) {
  return {{"id", id},
          {"object", e == Endpoint::Chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"system_fingerprint", "herd"},
          {"choices", json::array()},
          {"usage", usage_json(u)}};
}

std::string sse(const json& j) {
  // Invalid UTF-8 in text (a model may emit a lone byte) is replaced, never an exception.
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

}  // namespace herd::server
