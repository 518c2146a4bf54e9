#include "server/http_server.h"

#include <httplib.h>
#include <sodium.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>

#include "common/log.h"
#include "server/openai_api.h"
#include "server/page.h"

namespace herd::server {
namespace {

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string random_hex(size_t bytes) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < bytes; ++i) {
    const auto b = static_cast<unsigned>(rng() & 0xff);
    s += digits[b >> 4];
    s += digits[b & 15];
  }
  return s;
}

void send_json(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  if (e.status == 503) res.set_header("Retry-After", "1");
  send_json(res, e.status, error_json(e));
}

// The label an endpoint is counted under (arbitrary paths would make the metric unbounded).
std::string endpoint_label(const std::string& path) {
  for (const char* known : {"/", "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions",
                            "/v1/cluster"})
    if (path == known) return path;
  return "other";
}

std::string prom_escape(const std::string& s) {
  std::string o;
  for (const char c : s) {
    if (c == '\\' || c == '"') o += '\\';
    if (c == '\n') {
      o += "\\n";
      continue;
    }
    o += c;
  }
  return o;
}

// Bearer KEY, compared in constant time.
bool key_ok(const httplib::Request& req, const std::string& key) {
  const std::string h = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  if (h.size() != prefix.size() + key.size() || h.compare(0, prefix.size(), prefix) != 0) return false;
  return sodium_memcmp(h.data() + prefix.size(), key.data(), key.size()) == 0;
}

// The socket of this request's connection: the one whose peer is remote_addr:remote_port and whose
// local port is local_port (httplib does not hand it to handlers). -1 when not found. The
// connection stays open while its handler runs, so the descriptor cannot be reused meanwhile.
int connection_socket(const httplib::Request& req) {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  int found = -1;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    sockaddr_storage peer{}, self{};
    socklen_t pl = sizeof peer, sl = sizeof self;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&self), &sl) != 0) continue;
    char host[INET6_ADDRSTRLEN] = {};
    int pport = -1, sport = -1;
    if (peer.ss_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(&peer);
      inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
      pport = ntohs(a->sin_port);
      sport = ntohs(reinterpret_cast<const sockaddr_in*>(&self)->sin_port);
    } else if (peer.ss_family == AF_INET6) {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(&peer);
      inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
      pport = ntohs(a->sin6_port);
      sport = ntohs(reinterpret_cast<const sockaddr_in6*>(&self)->sin6_port);
    } else {
      continue;
    }
    if (pport == req.remote_port && sport == req.local_port && req.remote_addr == host) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(d);
  return found;
}

// True once the client closed its side: POLLRDHUP (Linux) reports the peer's FIN even with unread
// bytes still queued (HTTP clients do not half-close while they wait for an answer).
bool client_gone(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

}  // namespace

HttpServer::HttpServer(ServeOptions opts) : opts_(std::move(opts)), http_(std::make_unique<httplib::Server>()) {
  started_ = unix_now();
  const auto threads = static_cast<size_t>(opts_.http_threads > 0 ? opts_.http_threads : 64);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_->set_payload_max_length(opts_.max_body);
  // Debian's prebuilt cpp-httplib listens with a backlog of 5: a burst of clients would see
  // connection attempts dropped and retried a second later. Keep the listening socket (the
  // options hook sees it before bind) to raise the backlog after bind.
  http_->set_socket_options([this](int sock) {
    httplib::default_socket_options(sock);
    listen_fd_ = sock;
  });
  // Idle keep-alive connections close after 2 s (and stop() waits for them); up to 100 requests
  // per connection, so clients rarely race a close.
  http_->set_keep_alive_timeout(2);
  http_->set_keep_alive_max_count(100);
  http_->set_read_timeout(30);
  http_->set_write_timeout(10);
  routes();
}

HttpServer::~HttpServer() { stop(); }

int HttpServer::bind() {
  if (opts_.port < 0 || opts_.port > 65535)
    throw std::runtime_error("--port " + std::to_string(opts_.port) + " is not a port (0..65535)");
  if (opts_.port == 0) {
    const int p = http_->bind_to_any_port(opts_.host);
    if (p <= 0) throw std::runtime_error("cannot listen on " + opts_.host + " (is it an address of this machine?)");
    raise_backlog();
    return p;
  }
  if (!http_->bind_to_port(opts_.host, opts_.port))
    throw std::runtime_error("cannot listen on " + opts_.host + ":" + std::to_string(opts_.port) +
                             " (in use, or not an address of this machine)");
  raise_backlog();
  return opts_.port;
}

void HttpServer::raise_backlog() {
  // listen() again on a listening socket only changes its backlog (Linux, BSD).
  if (listen_fd_ >= 0 && ::listen(listen_fd_, SOMAXCONN) != 0)
    HERD_LOG_WARN("serve: could not raise the listen backlog: ", std::strerror(errno));
}

void HttpServer::run() { http_->listen_after_bind(); }

void HttpServer::stop() {
  if (http_) http_->stop();
}

void HttpServer::set_model(const ServedModel& m) {
  std::lock_guard lk(mu_);
  model_ = std::make_shared<const ServedModel>(m);
}

void HttpServer::count(const std::string& endpoint, int status) {
  std::lock_guard lk(mu_);
  ++requests_[{endpoint, status}];
}

void HttpServer::routes() {
  auto& s = *http_;
  auto loaded = [this]() {
    std::lock_guard lk(mu_);
    return model_;
  };
  const ApiError loading(503, "unavailable_error", "the model is still loading");

  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    res.set_header("Access-Control-Allow-Origin", "*");
    if (req.method == "OPTIONS") {  // CORS preflight: browsers ask before sending the key
      res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
      res.status = 204;
      return httplib::Server::HandlerResponse::Handled;
    }
    // The body has not been read yet: a Content-Length that is not a number, or over --max-body, is
    // answered now instead of after waiting for bytes that will never come.
    if (req.has_header("Content-Length")) {
      const std::string v = req.get_header_value("Content-Length");
      const bool digits = !v.empty() && v.size() <= 19 && v.find_first_not_of("0123456789") == std::string::npos;
      if (!digits || std::stoull(v) > opts_.max_body) {
        res.set_header("Connection", "close");
        send_error(res, digits ? ApiError(413, "invalid_request_error", "the request body is too large")
                               : bad_request("Content-Length '" + v + "' is not a size"));
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (opts_.api_key.empty() || req.path == "/" || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    if (!key_ok(req, opts_.api_key)) {
      send_error(res, ApiError(401, "authentication_error",
                               req.has_header("Authorization") ? "invalid API key"
                                                               : "missing API key (send 'Authorization: Bearer KEY')",
                               "", "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  s.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    count(endpoint_label(req.path), res.status);
  });
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404) send_error(res, ApiError(404, "not_found_error", "no such endpoint: " + req.method + " " + req.path));
    else if (res.status == 413) send_error(res, ApiError(413, "invalid_request_error", "the request body is too large"));
    else if (res.status == 405) send_error(res, ApiError(405, "invalid_request_error", "method not allowed"));
    else if (res.status >= 400) send_error(res, ApiError(res.status, "invalid_request_error", "bad request"));
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, "server_error", what));
  });

  s.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(page_html(), "text/html; charset=utf-8"); });

  s.Get("/health", [loaded, loading](const httplib::Request&, httplib::Response& res) {
    if (!loaded()) return send_error(res, loading);
    send_json(res, 200, {{"status", "ok"}});
  });

  s.Get("/v1/models", [this, loaded, loading](const httplib::Request&, httplib::Response& res) {
    const auto m = loaded();
    if (!m) return send_error(res, loading);
    send_json(res, 200,
              {{"object", "list"},
               {"data", json::array({{{"id", m->id},
                                      {"object", "model"},
                                      {"created", started_},
                                      {"owned_by", "herd"},
                                      {"meta", {{"n_ctx", m->n_ctx}, {"parallel", m->parallel}}}}})}});
  });

  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
  });
  s.Get("/v1/cluster", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(cluster_json(), "application/json");
  });

  auto completion = [this, loaded, loading](Endpoint ep) {
    return [this, loaded, loading, ep](const httplib::Request& req, httplib::Response& res) {
      const auto m = loaded();
      if (!m) return send_error(res, loading);
      // Requests in this handler (parsing, queued, generating, streaming), for herd_requests_running.
      auto running = std::shared_ptr<void>(nullptr, [this](void*) { --running_; });
      ++running_;
      std::shared_ptr<RequestStream> stream;
      ApiRequest r;
      try {
        r = parse_request(ep, req.body, opts_.sampling);
        if (!r.seed_given && !opts_.fixed_seed) r.sampling.seed = std::random_device{}();
        GenerationRequest g;
        if (ep == Endpoint::Chat) g.prompt = m->chat->tokens(r.messages);
        else if (r.prompt_is_tokens) g.prompt = r.prompt_tokens;
        else g.prompt = m->tokenizer->encode(r.prompt_text, /*add_special=*/true, /*parse_special=*/true);
        g.max_tokens = r.max_tokens.value_or(opts_.default_max_tokens);
        g.sampling = r.sampling;
        g.stop = r.stop;
        stream = m->scheduler->submit(std::move(g));
      } catch (const ApiError& e) {
        return send_error(res, e);
      } catch (const std::length_error& e) {
        return send_error(res, ApiError(400, "invalid_request_error", e.what(), ep == Endpoint::Chat ? "messages" : "prompt",
                                        "context_length_exceeded"));
      } catch (const std::invalid_argument& e) {
        return send_error(res, bad_request(e.what()));
      }
      if (!stream)
        return send_error(res, ApiError(503, "unavailable_error",
                                        "the server is busy: every slot is generating and the queue is full; retry later"));

      const std::string id = (ep == Endpoint::Chat ? "chatcmpl-" : "cmpl-") + random_hex(12);
      const int64_t created = unix_now();
      const std::string model_id = m->id;
      if (!r.stream) {
        // A client that gives up while the answer is generated frees its slot (checked every 0.5 s).
        const int fd = connection_socket(req);
        HERD_LOG_DEBUG("serve: ", req.remote_addr, ":", req.remote_port, " -> local port ", req.local_port,
                       ": connection socket ", fd);
        std::string text;
        auto checked = std::chrono::steady_clock::now();
        while (true) {
          std::optional<StreamEvent> e = stream->next(500);
          if (std::chrono::steady_clock::now() - checked >= std::chrono::milliseconds(500)) {
            checked = std::chrono::steady_clock::now();
            if (client_gone(fd)) stream->cancel();
          }
          if (!e) continue;
          text += e->text;
          if (!e->done) continue;
          if (!e->error.empty()) return send_error(res, ApiError(500, "server_error", "generation failed: " + e->error));
          return send_json(res, 200, full_response(ep, id, created, model_id, text, e->finish_reason,
                                                   {e->prompt_tokens, e->completion_tokens}));
        }
      }
      struct State {
        bool opened = false, finished = false;
      };
      auto st = std::make_shared<State>();
      const bool usage = r.include_usage;
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Accel-Buffering", "no");
      res.set_chunked_content_provider(
          "text/event-stream",
          [stream, st, ep, id, created, model_id, usage](size_t, httplib::DataSink& sink) {
            auto put = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
            if (st->finished) {
              sink.done();
              return true;
            }
            if (!st->opened) {
              st->opened = true;
              if (ep == Endpoint::Chat) return put(sse(stream_chunk(ep, id, created, model_id, "", "", true)));
            }
            std::optional<StreamEvent> e = stream->next(1000);
            // Nothing new for a second (queued, or a long prompt): an SSE comment, which clients
            // ignore, finds out whether the client is still there.
            if (!e) return put(": waiting\n\n");
            if (!e->text.empty() && !put(sse(stream_chunk(ep, id, created, model_id, e->text, "")))) return false;
            if (!e->done) return true;
            st->finished = true;
            bool ok = true;
            if (!e->error.empty()) {
              ok = put(sse(error_json(ApiError(500, "server_error", "generation failed: " + e->error))));
            } else {
              ok = put(sse(stream_chunk(ep, id, created, model_id, "", e->finish_reason)));
              if (ok && usage) ok = put(sse(usage_chunk(ep, id, created, model_id, {e->prompt_tokens, e->completion_tokens})));
            }
            if (ok) ok = put("data: [DONE]\n\n");
            if (ok) sink.done();
            return ok;
          },
          // Harmless after the end; frees the slot when the client left. Holds `running` until
          // the stream is over (the handler itself has returned by then).
          [stream, running](bool) { stream->cancel(); });
    };
  };
  s.Post("/v1/chat/completions", completion(Endpoint::Chat));
  s.Post("/v1/completions", completion(Endpoint::Completion));
  s.Post("/chat/completions", completion(Endpoint::Chat));  // clients configured without the /v1 prefix
  s.Post("/completions", completion(Endpoint::Completion));
}

std::string HttpServer::metrics_text() {
  std::shared_ptr<const ServedModel> m;
  std::map<std::pair<std::string, int>, uint64_t> reqs;
  {
    std::lock_guard lk(mu_);
    m = model_;
    reqs = requests_;
  }
  std::string o;
  char buf[256];
  auto metric = [&](const char* name, const char* type, const char* help) {
    o += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  auto value = [&](const std::string& name_labels, double v) {
    std::snprintf(buf, sizeof buf, " %.17g\n", v);
    o += name_labels + buf;
  };
  metric("herd_ready", "gauge", "1 once the model is loaded and requests are served.");
  value("herd_ready", m ? 1 : 0);
  metric("herd_requests_running", "gauge", "Completion requests being answered now (queued, generating or streaming).");
  value("herd_requests_running", static_cast<double>(running_.load()));
  metric("herd_requests_total", "counter", "HTTP requests answered, by endpoint and status.");
  for (const auto& [k, n] : reqs)
    value("herd_requests_total{endpoint=\"" + prom_escape(k.first) + "\",status=\"" + std::to_string(k.second) + "\"}",
          static_cast<double>(n));
  if (!m) return o;
  const SchedulerStats st = m->scheduler->stats();
  metric("herd_generations_total", "counter", "Generations ended, by result.");
  value("herd_generations_total{result=\"ok\"}", static_cast<double>(st.requests_finished));
  value("herd_generations_total{result=\"failed\"}", static_cast<double>(st.requests_failed));
  value("herd_generations_total{result=\"cancelled\"}", static_cast<double>(st.requests_cancelled));
  metric("herd_prompt_tokens_total", "counter", "Prompt tokens of the requests taken.");
  value("herd_prompt_tokens_total", static_cast<double>(st.prompt_tokens_total));
  metric("herd_prompt_tokens_evaluated_total", "counter",
         "Prompt tokens evaluated: the prompt tokens less the prefixes found in a slot's cache.");
  value("herd_prompt_tokens_evaluated_total", static_cast<double>(st.prompt_tokens_evaluated));
  metric("herd_generated_tokens_total", "counter", "Tokens generated.");
  value("herd_generated_tokens_total", static_cast<double>(st.generated_tokens_total));
  metric("herd_steps_total", "counter", "Batches evaluated (continuous batching steps).");
  value("herd_steps_total", static_cast<double>(st.steps_total));
  double sum = 0;
  for (size_t i = 0; i + 1 < st.tokens_per_second.size(); ++i) sum += st.tokens_per_second[i];
  metric("herd_tokens_per_second", "gauge", "Generated tokens per second over the last minute (whole seconds).");
  value("herd_tokens_per_second", st.tokens_per_second.size() > 1 ? sum / static_cast<double>(st.tokens_per_second.size() - 1) : 0);
  metric("herd_queue_length", "gauge", "Requests waiting for a free slot.");
  value("herd_queue_length", static_cast<double>(st.queue_length));
  metric("herd_slots_busy", "gauge", "Sequence slots generating now.");
  value("herd_slots_busy", static_cast<double>(st.slots_busy));
  metric("herd_slots_total", "gauge", "Sequence slots (--parallel).");
  value("herd_slots_total", static_cast<double>(st.slots_total));
  metric("herd_kv_used_cells", "gauge", "Positions held in the KV cache, over all slots (kept prefixes included).");
  value("herd_kv_used_cells", static_cast<double>(st.kv_cells_used));
  metric("herd_kv_cells_total", "gauge", "Positions the KV cache holds in all (slots x context).");
  value("herd_kv_cells_total", static_cast<double>(st.kv_cells_total));
  metric("herd_batch_ms", "gauge", "Mean time of a batch from submit to output.");
  value("herd_batch_ms", st.pipeline.batch_ms);
  metric("herd_stage_compute_ms", "gauge", "Mean compute time per batch on each pipeline stage.");
  for (size_t i = 0; i < st.pipeline.stages.size(); ++i)
    value("herd_stage_compute_ms{stage=\"" + std::to_string(i) + "\",name=\"" + prom_escape(st.pipeline.stages[i].name) +
              "\"}",
          st.pipeline.stages[i].compute_ms);
  metric("herd_stage_overhead_ms", "gauge", "Mean time per batch a worker spends around the compute (unpack, checks, conversion).");
  for (size_t i = 0; i < st.pipeline.stages.size(); ++i)
    value("herd_stage_overhead_ms{stage=\"" + std::to_string(i) + "\",name=\"" + prom_escape(st.pipeline.stages[i].name) +
              "\"}",
          st.pipeline.stages[i].overhead_ms);
  metric("herd_hop_ms", "gauge", "Mean time per batch on each link (coordinator->stage 0, stage i->i+1, last->coordinator): the round trip less the stages' times, split by the links' measured speeds.");
  for (size_t i = 0; i < st.pipeline.hop_ms.size(); ++i)
    value("herd_hop_ms{hop=\"" + std::to_string(i) + "\"}", st.pipeline.hop_ms[i]);
  return o;
}

std::string HttpServer::cluster_json() {
  std::shared_ptr<const ServedModel> m;
  {
    std::lock_guard lk(mu_);
    m = model_;
  }
  json j = {{"ready", m != nullptr}};
  if (!m) return j.dump();
  const SchedulerStats st = m->scheduler->stats();
  json stages = json::array();
  for (const StageStatus& s : st.pipeline.stages)
    stages.push_back({{"name", s.name},
                      {"device", s.device},
                      {"first_layer", s.first_layer},
                      {"end_layer", s.end_layer},
                      {"memory_bytes", s.memory_bytes},
                      {"compute_ms", s.compute_ms},
                      {"overhead_ms", s.overhead_ms}});
  j["model"] = m->id;
  j["n_ctx"] = m->n_ctx;
  j["parallel"] = m->parallel;
  j["slots_busy"] = st.slots_busy;
  j["queue"] = st.queue_length;
  j["stages"] = stages;
  j["hops_ms"] = st.pipeline.hop_ms;
  j["batch_ms"] = st.pipeline.batch_ms;
  j["tokens_per_second"] = st.tokens_per_second;
  j["kv_used_cells"] = st.kv_cells_used;
  j["kv_cells_total"] = st.kv_cells_total;
  j["requests_total"] = st.requests_finished + st.requests_failed + st.requests_cancelled;
  j["generated_tokens_total"] = st.generated_tokens_total;
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace herd::server
