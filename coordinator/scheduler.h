// Continuous batching over a Pipeline: many generation requests share each step.
//
// One scheduler thread owns the pipeline. Requests wait in a bounded queue, take a free sequence
// slot (the one whose cached tokens share the longest prefix with the prompt, so a chat's next turn
// evaluates only what is new), and leave the step they finish in; nobody waits for anybody else's
// generation. Each step is a Batch of one decode row per generating sequence plus prompt chunks
// of the sequences still prefilling, at most `n_batch` rows: a long prompt is evaluated a chunk per
// step, so the streams already decoding keep going. With several pipeline stages the decoding
// sequences are dealt into micro-batches (`micro_batches`, default one per stage) that stay in
// flight together, so every stage computes while the others do.
//
// A request's text does not depend on what else runs: its rows attend only to its own slot, its
// sampler (seed, RNG, penalty window) is its own, and the RNG is drawn once per step of its own.
//
// Streams: the thread that submitted a request reads its text from the RequestStream (pieces are
// whole UTF-8 characters; stop strings are cut out before anything is emitted). cancel() frees the
// slot at the next step boundary (a client that went away). A pipeline failure ends the requests
// in flight with an error naming it; the next step lets the pipeline recover (RemotePipeline
// reconnects and replays), and later requests are served again.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/pipeline.h"
#include "engine/sampler.h"
#include "model/tokenizer.h"

namespace herd {

struct GenerationRequest {
  std::vector<int32_t> prompt;    // from position 0 (BOS and template applied)
  int64_t max_tokens = 1024;      // tokens to generate at most (>= 0; 0 = evaluate the prompt only)
  SamplerParams sampling;
  std::vector<std::string> stop;  // stop strings: the text ends before the first one found
};

// What the generating side tells the reading side.
struct StreamEvent {
  std::string text;             // new text (may be empty on the final event)
  bool done = false;
  std::string finish_reason;    // with done: "stop" (end of generation or a stop string), "length", "cancelled"
  std::string error;            // with done: non-empty when the request failed (the pipeline's message)
  int64_t prompt_tokens = 0;    // with done
  int64_t completion_tokens = 0;
  int64_t reused_tokens = 0;    // prompt tokens found in the slot's cache
};

class RequestStream {
 public:
  // Waits up to timeout_ms for the next event; nullopt on timeout. After the done event, nullopt.
  std::optional<StreamEvent> next(int timeout_ms);
  // The reader gives up (client disconnected): the request ends at the next step boundary.
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

  // Generating side.
  void push_text(std::string text);
  void finish(StreamEvent last);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_;
  std::optional<StreamEvent> final_;
  bool delivered_final_ = false;
  std::atomic<bool> cancelled_{false};
};

struct SchedulerOptions {
  int64_t n_batch = 256;   // rows per step at most (decode rows + prompt chunks)
  int64_t max_queue = 32;  // requests waiting for a slot; submit() refuses beyond it
  int micro_batches = 0;   // batches in flight; 0 = one per pipeline stage
};

// A snapshot for /metrics and the status page.
struct SchedulerStats {
  int64_t slots_total = 0, slots_busy = 0, queue_length = 0;
  int64_t kv_cells_used = 0, kv_cells_total = 0;  // positions held in the KV cache, over all slots
  uint64_t requests_finished = 0, requests_failed = 0, requests_cancelled = 0;
  uint64_t prompt_tokens_total = 0;      // prompt tokens of the requests admitted
  uint64_t prompt_tokens_evaluated = 0;  // of those, evaluated (not found in the slot's cache)
  uint64_t generated_tokens_total = 0, steps_total = 0;
  std::vector<double> tokens_per_second;  // generated tokens in each of the last 60 whole seconds, oldest first
  PipelineStatus pipeline;                // refreshed about once a second
};

class Scheduler {
 public:
  Scheduler(Pipeline& pipeline, const model::Tokenizer& tokenizer, SchedulerOptions opts = {});
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request. nullptr when the queue is full or after shutdown() (the caller answers 503). Throws
  // std::invalid_argument (empty prompt, a token outside the vocabulary, bad sampling parameters)
  // and std::length_error (the prompt leaves no room to generate in the context).
  std::shared_ptr<RequestStream> submit(GenerationRequest req);

  // Stops taking requests and ends every queued or running one with an error ("the server is
  // shutting down"), so their readers return at once; submit() returns null afterwards. Idempotent.
  void shutdown();

  SchedulerStats stats() const;
  const Pipeline& pipeline() const { return pipe_; }

 private:
  struct Slot;
  struct Queued {
    GenerationRequest req;
    std::shared_ptr<RequestStream> stream;
  };
  struct Flight {
    std::vector<int32_t> seqs;    // slots with rows in this batch
    std::vector<int32_t> output;  // per output row: its slot
  };

  void loop();
  void admit();
  bool build_and_submit();
  void handle(const BatchOutput& out, const Flight& f);
  void accept_token(Slot& s, int32_t token);
  void finish(Slot& s, const std::string& reason, const std::string& error = "");
  void fail_in_flight(const std::string& error);
  void count_tokens(int64_t n);
  void refresh_stats();

  Pipeline& pipe_;
  const model::Tokenizer& tok_;
  SchedulerOptions opts_;
  int micro_batches_ = 1;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::deque<Flight> flights_;  // in submission order, as poll() returns them

  mutable std::mutex mu_;  // guards queue_, stats_, stop_
  std::condition_variable cv_;
  std::deque<Queued> queue_;
  SchedulerStats stats_;
  int64_t busy_ = 0;       // slots in use (scheduler thread writes, under mu_)
  bool stop_ = false;
  int64_t second_ = -1;    // the whole second tokens_per_second's last entry counts
  std::thread thread_;
};

// Holds back text that could be the start of a stop string; reports the cut when one appears.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Returns the text that can be emitted now; sets `stopped` when a stop string was found (the
  // text up to it is returned, the rest dropped).
  std::string push(const std::string& text, bool& stopped);
  std::string flush();  // what is held back, at the end

 private:
  std::vector<std::string> stops_;
  std::string held_;
};

}  // namespace herd
