// A pipeline worker: listens for a coordinator, takes an Assign (model, layer range, next stage),
// maps only its shard of the GGUF, and serves Forward messages. The first stage takes token ids
// from the coordinator; every other stage takes the hidden state straight from the previous stage;
// non-last stages send theirs straight to the next stage; the last returns logits to the
// coordinator, or samples them and returns the token id (Forward.sample). A worker without its own
// copy of the model (no -m, and the coordinator's path does not exist here or holds another file)
// is sent exactly its shard by the coordinator and caches it (worker/weight_cache.h). Nothing a peer sends can crash it: a malformed message drops that peer (logged) and
// the worker keeps serving others; a failing Forward becomes an Error message to the coordinator.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "engine/probe_profile.h"
#include "transport/link.h"
#include "transport/protocol.h"
#include "engine/stage.h"
#include "worker/weight_cache.h"

namespace herd {

struct WorkerServerOptions {
  std::string model_path;  // -m: this worker's copy of the GGUF; empty = the path the coordinator sends
  int threads = 0;         // 0 = all cores
  std::string name;        // for logs and the Hello
  int debug_delay_ms = 0;  // test hook: sleep this long before each Forward (to kill a worker mid-run)
  std::string cache_dir;   // where received shards are kept; "" = default_cache_dir()
  uint64_t chunk_bytes = transport::kMaxWeightChunk;  // weight transfer chunk size
  // The profile sent in every Hello (partition/host_probe.h). Unset: measured once when the server
  // is constructed (cached_startup_profile: quick figures, < ~1 s, shared by the process).
  std::optional<ProbeResult> profile;
  std::string profile_source;           // for the coordinator's log ("file PATH"); "" = "measured at startup"
  std::vector<uint32_t> profile_types;  // matvec types to measure (the model's); empty = the common ones
  uint64_t report_free_mem = 0;         // test hook: report this many bytes free instead of MemAvailable
};

// The Hello profile of a worker: `p`'s rates, `free_bytes` free (clamped to the total).
transport::WorkerProfile worker_profile(const ProbeResult& p, int threads, uint64_t free_bytes);

class WorkerServer {
 public:
  WorkerServer(std::unique_ptr<transport::Listener> listener, WorkerServerOptions opts);
  ~WorkerServer();
  std::string address() const { return listener_->address(); }

  // Serves until a Stop message, or until *stop becomes true (checked every 100 ms).
  void serve(const std::atomic<bool>* stop = nullptr);

 private:
  struct Peer {
    transport::Role role = transport::Role::Coordinator;
  };
  // Returns false when serving should end (Stop).
  bool handle(transport::Received& r);
  void drop(const std::string& peer, const std::string& reason);
  void on_hello(const std::string& peer, const transport::Message& m);
  void on_assign(const std::string& peer, const transport::Message& m);
  void on_forward(const std::string& peer, const transport::Message& m);
  // Weight transfer from the coordinator `peer` during an Assign (worker/weight_cache.h).
  WeightSource weight_source(const std::string& peer, uint64_t session);
  int32_t sample(const transport::SampleSpec& s, const float* logits);
  void reply_error(const std::string& peer, uint64_t request_id, const std::string& message);
  void send_to_coordinator(const transport::Message& m);
  std::string stage_name() const;

  std::unique_ptr<transport::Listener> listener_;
  WorkerServerOptions opts_;
  std::map<std::string, Peer> peers_;  // peers that completed a Hello
  std::deque<transport::Received> pending_;  // other peers' messages that arrived during a weight fetch
  std::string coordinator_;            // the peer whose Assign we serve

  std::unique_ptr<model::GgufFile> file_;
  std::string file_hash_;
  model::ModelConfig config_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Stage> stage_;
  transport::Assign assign_;
  std::unique_ptr<transport::Link> next_;  // to the next stage (non-last stages)
  int64_t n_past_ = 0;                     // positions held in the KV cache
  std::vector<float> in_, out_;            // hidden [n, n_embd] in; hidden or logits out
};

// Bytes of memory this host can still give (MemAvailable), for the Hello profile; 0 if unknown.
uint64_t available_memory_bytes();

// Activation frames: f32 -> wire dtype and back (f16 rounds to nearest even).
transport::Tensor make_activation(const std::vector<float>& x, int64_t rows, int64_t cols, transport::WireDType dt);
void read_activation(const transport::Tensor& t, std::vector<float>& out);

}  // namespace herd
