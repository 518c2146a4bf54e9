// herd serve: an OpenAI-compatible HTTP server over a local model or a cluster, with continuous
// batching (coordinator/scheduler.h) and a status page (server/).
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "coordinator/scheduler.h"
#include "coordinator/trace_writer.h"
#include "launch/options.h"
#include "model/chat_prompt.h"
#include "server/http_server.h"

namespace herd::cli {

int cmd_serve(const Args& args) {
  ModelOptions mo;
  SamplingOptions so;
  server::ServeOptions sv;
  std::string template_name, trace_path;
  int64_t parallel = 4, queue = 32, n_batch = 256, max_body = 1 << 20;
  int micro_batches = 0;
  ArgParser p("herd serve [-m MODEL] [--host H] [--port P] [--parallel N] [options]",
              "Serves the model over HTTP with OpenAI's API (POST /v1/chat/completions, /v1/completions, "
              "GET /v1/models), /health, /metrics (Prometheus) and a chat and cluster page at /. Up to --parallel "
              "requests generate together in each step (continuous batching); more wait in a queue of --queue, "
              "beyond which requests get 503. With --workers the stages run on `herd worker` processes.");
  add_model_options(p, mo);
  add_trace_option(p, &trace_path);
  p.add("--host", "ADDR", "address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)", &sv.host);
  p.add("--port", "P", "port to listen on (0 = any free port; the chosen one is printed)", &sv.port, 0, 65535);
  p.add("--parallel", "N", "sequence slots: requests that generate together (each has its own -c context)", &parallel, 1, 256);
  p.add("--queue", "N", "requests that may wait for a slot; more are answered 503", &queue, 0, 100000);
  p.add("--api-key", "KEY", "require 'Authorization: Bearer KEY' (default: $HERD_API_KEY; none when unset)",
        &sv.api_key);
  p.add("-n,--n-predict", "N", "max_tokens when a request gives none", &sv.default_max_tokens, 0, kMaxCtx);
  p.add("-b,--batch-size", "N", "rows per step: decode rows plus prompt chunks (long prompts are evaluated a "
        "chunk per step, so running streams keep going)", &n_batch, 1, 65536);
  p.add("--micro-batches", "M", "batches in flight (0 = one per pipeline stage, so every stage stays busy)",
        &micro_batches, 0, 4096);
  p.add("--max-body", "BYTES", "largest request body; larger ones get 413", &max_body, 1024, int64_t{1} << 32);
  p.add("--chat-template", "NAME", "override the model's chat template: chatml, llama2, llama3, mistral, zephyr, "
        "gemma (a model without one gets chatml)", &template_name);
  add_sampling_options(p, so);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  apply_security_options(mo.security);
  if (sv.api_key.empty())
    if (const char* k = std::getenv("HERD_API_KEY"); k && *k) sv.api_key = k;
  sv.sampling = finish_sampling(so);
  sv.fixed_seed = so.seed >= 0;
  sv.max_body = static_cast<size_t>(max_body);
  // Every streaming request holds a thread: the slots and the queue, plus room for /health,
  // /metrics and the page (at most 1024 threads; beyond, connections wait for one).
  sv.http_threads = static_cast<int>(std::min<int64_t>(parallel + queue + 32, 1024));
  mo.session.n_seq = parallel;
  validate(sv.sampling);

  // Signals are taken by one thread with sigwait; every other thread blocks them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  server::HttpServer http(sv);
  const int port = http.bind();
  std::fprintf(stderr, "herd serve: listening on http://%s:%d%s\n", sv.host.c_str(), port,
               sv.api_key.empty() ? "" : " (API key required)");
  std::fflush(stderr);
  std::thread http_thread([&] { http.run(); });
  std::atomic<Scheduler*> live{nullptr};
  std::atomic<bool> quitting{false}, woke{false};
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    woke.store(true);
    if (!quitting.load())
      std::fprintf(stderr, "herd serve: %s, stopping\n", sig == SIGINT ? "interrupted" : "terminated");
    // Running and queued requests end now (an error event / 503), so no stream holds the exit.
    if (Scheduler* s = live.load()) s->shutdown();
    http.stop();
  });
  auto shutdown = [&] {
    quitting.store(true);
    http.stop();
    if (http_thread.joinable()) http_thread.join();
    if (!woke.load()) pthread_kill(signal_thread.native_handle(), SIGTERM);  // wakes sigwait if no signal came
    signal_thread.join();
  };

  const std::string path = resolve_model(mo);
  std::unique_ptr<ModelSession> s;
  std::unique_ptr<model::ChatPrompt> chat;
  std::unique_ptr<TraceWriter> trace;  // after the session: closed before the pipeline goes
  std::unique_ptr<Scheduler> sched;
  try {
    std::fprintf(stderr, "herd serve: loading %s ...\n", path.c_str());
    s = std::make_unique<ModelSession>(ModelSession::open(path, session_for(mo)));
    if (!trace_path.empty()) trace = std::make_unique<TraceWriter>(trace_path, *s->pipeline);
    chat = std::make_unique<model::ChatPrompt>(*s->file, *s->tokenizer, template_name, "chatml");
    sched = std::make_unique<Scheduler>(*s->pipeline, *s->tokenizer,
                                        SchedulerOptions{n_batch, queue, micro_batches});
  } catch (...) {
    shutdown();
    throw;
  }
  server::ServedModel m;
  m.id = std::filesystem::path(path).stem().string();
  m.scheduler = sched.get();
  m.tokenizer = s->tokenizer.get();
  m.chat = chat.get();
  m.n_ctx = s->pipeline->n_ctx();
  m.parallel = parallel;
  live.store(sched.get());
  http.set_model(m);
  std::fprintf(stderr, "herd serve: ready: %s, %lld slots x %lld context, %zu stage(s), chat template %s\n",
               m.id.c_str(), static_cast<long long>(parallel), static_cast<long long>(m.n_ctx),
               static_cast<size_t>(s->pipeline->n_stages()), chat->description().c_str());
  std::fflush(stderr);
  http_thread.join();
  shutdown();
  sched.reset();  // before the pipeline it drives
  trace.reset();
  return 0;
}

}  // namespace herd::cli
