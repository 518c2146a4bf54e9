// `herd serve`'s HTTP side: OpenAI's endpoints, /health, /metrics, /v1/cluster and the page, over
// cpp-httplib. It listens before the model is loaded (/health answers 503 "loading" meanwhile);
// set_model() makes it ready. Generation goes through a Scheduler (continuous batching); each
// request's handler thread only reads its RequestStream and writes bytes.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "coordinator/scheduler.h"
#include "engine/sampler.h"
#include "model/chat_prompt.h"
#include "model/tokenizer.h"

namespace httplib {
class Server;
}

namespace herd::server {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                 // 0 = any free port
  std::string api_key;             // "" = no key
  size_t max_body = 1 << 20;       // bytes; larger bodies get 413
  int64_t default_max_tokens = 1024;
  SamplerParams sampling;          // defaults for what a request does not say
  bool fixed_seed = false;         // --seed given: requests without a seed use it (else a random seed each)
  int http_threads = 0;            // 0 = slots + queue + 32 (every streaming request holds a thread)
};

// What the server serves once loaded; everything it points to outlives the server.
struct ServedModel {
  std::string id;                  // the name /v1/models lists
  Scheduler* scheduler = nullptr;
  const model::Tokenizer* tokenizer = nullptr;
  const model::ChatPrompt* chat = nullptr;
  int64_t n_ctx = 0;
  int64_t parallel = 0;
};

class HttpServer {
 public:
  explicit HttpServer(ServeOptions opts);
  ~HttpServer();

  // Binds the socket (throws std::runtime_error naming the address when it cannot); returns the port.
  int bind();
  // Serves until stop(); call from a thread of its own.
  void run();
  void stop();
  void set_model(const ServedModel& m);

 private:
  void routes();
  void raise_backlog();
  void count(const std::string& endpoint, int status);
  std::string metrics_text();
  std::string cluster_json();

  ServeOptions opts_;
  std::unique_ptr<httplib::Server> http_;
  mutable std::mutex mu_;
  std::shared_ptr<const ServedModel> model_;  // null while loading
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (endpoint, status) -> count
  int64_t started_ = 0;
  int listen_fd_ = -1;
  std::atomic<int64_t> running_{0};
};

}  // namespace herd::server
