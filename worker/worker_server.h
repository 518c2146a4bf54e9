// A pipeline worker: listens for a coordinator, takes an Assign (model, layer range, next stage),
// maps only its shard of the GGUF, and serves Forward messages. The first stage takes token ids
// from the coordinator; every other stage takes the hidden state straight from the previous stage;
// non-last stages send theirs straight to the next stage; the last returns logits to the
// coordinator, or samples them and returns the token id (Forward.sample). A worker without its own
// copy of the model (no -m, and no --models-dir holding the coordinator's path with the same file)
// is sent exactly its shard by the coordinator and caches it (worker/weight_cache.h). Nothing a peer sends can crash it: a malformed message drops that peer (logged) and
// the worker keeps serving others; a failing Forward becomes an Error message to the coordinator.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "cluster/protocol.h"
#include "engine/probe_profile.h"
#include "transport/link.h"
#include "engine/batch.h"
#include "engine/ring_comm.h"
#include "engine/shard_plan.h"
#include "engine/sampler.h"
#include "engine/stage.h"
#include "worker/bounds.h"
#include "worker/device_hop.h"
#include "worker/weight_cache.h"

namespace herd {

// Resident bytes of a stage's activations for `rows` batch rows (its scratch, the kernels' 8-bit
// activations, the hidden state or logits in and out), plus the attention's f32 copy of one slot's
// keys and values: an estimate from the shapes (worker/shard_budget.cpp says what it counts).
uint64_t stage_activation_bytes(const model::ModelConfig& c, const model::LayerRange& r, int64_t rows, int64_t n_ctx,
                                DType kv_type);

struct WorkerServerOptions {
  std::string model_path;  // -m: this worker's copy of the GGUF; empty = the path the coordinator sends
  int threads = 0;         // 0 = all cores
  std::string name;        // for logs and the Hello
  int debug_delay_ms = 0;  // test hook: sleep this long before each Forward (to kill a worker mid-run)
  int debug_freeze_after = 0;  // test hook: the Nth Forward never ends (a stuck main thread; heartbeats still answered)
  std::string cache_dir;   // where received shards are kept; "" = default_cache_dir()
  uint64_t cache_max = kDefaultCacheMax;           // --cache-max: quota of cache_dir (0 = none)
  int weight_timeout_ms = kDefaultChunkTimeoutMs;  // --weight-timeout: per answer of a weight transfer
  // --models-dir: the coordinator's model path is opened only when its canonical form is inside this
  // directory; "" = never (the coordinator sends the weights instead).
  std::string models_dir;
  uint64_t chunk_bytes = cluster::kMaxWeightChunk;  // weight transfer chunk size
  // The profile sent in every Hello (engine/host_probe.h; cluster/worker_profile.h on the wire). Unset: measured once when the server
  // is constructed (cached_startup_profile: quick figures, < ~1 s, shared by the process).
  std::optional<ProbeResult> profile;
  std::string profile_source;           // for the coordinator's log ("file PATH"); "" = "measured at startup"
  std::vector<uint32_t> profile_types;  // matvec types to measure (the model's); empty = the common ones
  uint64_t report_free_mem = 0;         // test hook: report this many bytes free instead of MemAvailable
  // --mem-budget: bytes this worker may keep resident (0 = auto: worker/mem_budget.h). A stage that
  // needs more streams its weights from disk (worker/streamed_weights.h), or with no_stream
  // (--no-stream) the Assign is refused naming the bytes needed and the budget.
  uint64_t mem_budget = 0;
  bool no_stream = false;
  // Tensor parallelism under a launcher that already joined this process to its group (herd mpi:
  // an MpiComm on a split communicator): asked at TpRing with this rank's (rank, size); a Comm it
  // keeps alive replaces the ring, null (and *why_not) falls back to the ring over TCP.
  std::function<Comm*(int rank, int size, std::string* why_not)> group_comm;
  // --device: the backend of this worker's stages when it is not the CPU (a CUDA GPU: the herd
  // binary makes it, launch/device_backend.h); null = the CPU backend of the Assign's ISA.
  std::function<std::unique_ptr<Backend>()> device_backend;
  // With device_backend: the device's free memory now, the Hello's free figure (the host's memory
  // budget means nothing for a GPU; the worker neither streams nor counts its host process there).
  std::function<uint64_t()> device_free_bytes;
  // With device_backend: the Comm of a tensor-parallel rank on this device (the herd binary's:
  // NCCL, launch/device_backend.h device_comm_factory), made over the group's host Comm (the ring,
  // or group_comm) when every rank of the group computes on a device. Null: this worker cannot
  // join a group of GPU ranks (the TpRing is answered with an error saying why).
  std::function<std::unique_ptr<Comm>(Comm& over, Backend& be, std::string* error)> device_comm;
  // With device_backend: how this worker makes stage hops between devices (worker/device_hop.h;
  // the herd binary's: NCCL, launch/device_hop.h). Empty: every hop uses the links.
  DeviceHopHooks device_hop;
  // How long joining a hop, and then each transfer on it, may wait for the other stage.
  int device_hop_timeout_ms = 30000;
  // --nccl-across-hosts (or --insecure): NCCL (stage hops, GPU tensor-parallel groups) may join
  // this worker with GPUs on other hosts. NCCL's network transport is neither authenticated nor
  // encrypted, so by default a hop to another host uses the link and a GPU group spanning hosts is
  // refused, saying so. Within one host NCCL uses P2P / shared memory, no network.
  bool nccl_across_hosts = false;
  // Test hook: this worker's host identity (0: common/host_identity.h's), so tests on one host can
  // stand for several.
  uint64_t host_identity = 0;
  // Test hook: sees every Forward message this worker receives, before it is checked.
  std::function<void(const transport::Message&)> forward_observer;
};

class WorkerServer {
 public:
  WorkerServer(std::unique_ptr<transport::Listener> listener, WorkerServerOptions opts);
  ~WorkerServer();
  std::string address() const { return listener_->address(); }

  // Serves until a Stop message, or until *stop becomes true (checked every 100 ms).
  void serve(const std::atomic<bool>* stop = nullptr);

 private:
  struct Peer {
    cluster::Role role = cluster::Role::Coordinator;
    std::string session;  // its Hello's session (coordinator) or link token (upstream)
  };
  // The coordinator that owns this worker (cluster/protocol.h "Roles"): the first whose Hello was
  // accepted, by its connections (peer ids: one, or more when the same session connects again) and
  // its session id, until every one of those connections is gone.
  struct Owner {
    std::set<std::string> peers;
    std::string session, name, since;  // name: its Hello's (printable); since: UTC time
  };
  // A coordinator's Hello: "" when it owns this worker now (first, the same session again, the old
  // owner gone, or --take-over: the old owner is told), else the "busy: ..." answer.
  std::string claim(const std::string& peer, const cluster::Hello& h);
  // Why `peer` may not send a message of this type ("" when it may): Assign/Reset/Stop only from
  // the owner, Forward only from the upstream stage (the first stage: from the owner).
  std::string refusal(const std::string& peer, cluster::MsgType type) const;
  // Returns false when serving should end (Stop).
  bool handle(transport::Received& r);
  void drop(const std::string& peer, const std::string& reason);
  void on_hello(const std::string& peer, const transport::Message& m);
  void on_assign(const std::string& peer, const transport::Message& m);
  // on_assign's steps, in order (worker/shard_loader.cpp). Each throws std::runtime_error with the
  // reason the coordinator is told (a ProtocolError drops the peer instead).
  struct ShardFetch {  // the weight transfer of one Assign, for a worker with no copy of the model
    std::unique_ptr<WeightCache> cache;  // null: the file is here already
    std::optional<WeightSource> source;
    FetchStats stats;
  };
  // Which file to map: -m, else the coordinator's path when it holds the same model here, else the
  // weight cache (its header fetched and checked here; `fetch` then holds the cache).
  std::string resolve_model_file(const std::string& peer, const cluster::Assign& a, ShardFetch& fetch);
  // Opens `path` (unless it is the open file) and fingerprints it; checks it is the Assign's model.
  void open_model(const std::string& path, const cluster::Assign& a);
  // The Assign's layers, context and next address against the model.
  void check_assignment(const cluster::Assign& a) const;
  // A CPU backend with the Assign's kernels (kept when they are the same).
  void ensure_backend(const cluster::Assign& a);
  // Checks the shard's tensors against the Assign's digests (cluster/tensor_hashes.h): this worker's
  // own copy (a differing tensor refuses the Assign, naming it), or the weight cache (a cached
  // tensor that differs is fetched again, a received one that differs refuses the Assign); fetches
  // the missing ones, maps them and builds the Stage (kept when the range and context are the same).
  void build_stage(const cluster::Assign& a, ShardFetch& fetch);
  // worker/shard_budget.cpp: null when the stage fits the memory budget; else its weights made
  // file-backed and streamed (the Stage's residency), or std::runtime_error (--no-stream, or a
  // budget below one layer and the rest).
  std::shared_ptr<WeightResidency> stream_if_over_budget(const cluster::Assign& a, model::StageWeights& w);
  // Dials the next stage, says Hello as its upstream and measures the link (cluster/link_measure.h).
  cluster::LinkStats dial_next_stage(const cluster::Assign& a);
  void on_forward(const std::string& peer, const transport::Message& m);
  // Stage hops between devices (worker/device_hop.cpp). Whether this worker can make one (a device
  // backend and the hooks); the upstream's offer to the next stage after dial_next_stage (never
  // throws: anything short of a joined hop leaves next_hop_ empty, logged); the downstream's answer.
  bool can_hop() const;
  void offer_device_hop(const cluster::Assign& a);
  void on_hop_offer(const std::string& peer, const transport::Message& m);
  // opts_.device_hop.join as rank `rank` on backend_ (what it throws becomes *error).
  std::unique_ptr<DeviceHop> join_hop(const NcclId& id, int rank, std::string* error);
  // Tensor parallelism: the group's ring addresses (cluster::TpRing); forms the ring over the
  // listener bound at the Assign and makes the Stage its rank. Ready | Error to the coordinator.
  void on_tp_ring(const std::string& peer, const transport::Message& m);
  // Where a tensor-parallel rank binds its ring listener: the main listener's interface, any port.
  std::string ring_bind_address() const;
  // Makes the Stage a rank of the group whose host Comm is `over` (the ring or group_comm): CPU
  // ranks join through `over`; when every rank computes on a device (one all-gather over `over`
  // tells each rank what the others are), through a Comm on the device made over it (opts_.
  // device_comm: NCCL). "" or why not (a group mixing GPU and CPU ranks, no device Comm).
  std::string join_group(Comm& over);
  uint64_t host() const;  // opts_.host_identity, else host_identity()
  // Drops the ring (before a new assignment; the Stage no longer points at it).
  void drop_ring();
  // Weight transfer from the coordinator `peer` during an Assign (worker/weight_cache.h).
  WeightSource weight_source(const std::string& peer, uint64_t session);
  // Samples one output row (logits [n_vocab]) of sequence `seq` with that slot's sampler (rebuilt
  // when the spec says reset) and accepts the token into the sampler's window.
  int32_t sample(int32_t seq, const cluster::SampleSpec& s, const float* logits);
  void reply_error(const std::string& peer, uint64_t request_id, const std::string& message);
  void silence(const std::string& peer, const std::string& reason);
  uint64_t forward_bytes_limit() const;
  void send_to_coordinator(transport::Message m);
  std::string stage_name() const;

  std::unique_ptr<transport::Listener> listener_;
  WorkerServerOptions opts_;
  uint64_t idle_rss_ = 0;  // resident bytes when constructed (the Hello's process_bytes)
  std::map<std::string, Peer> peers_;  // peers that completed a Hello
  std::deque<transport::Received> pending_;  // other peers' messages that arrived during a weight fetch
  std::string coordinator_;            // the peer whose Assign we serve
  std::set<std::string> silenced_;     // peers that stopped reading (bounded; see silence())
  DropLog drop_log_;                   // drop()'s log lines, rate-limited
  std::optional<Owner> owner_;
  // The upstream token of the assignment before the current one: a Forward from that stage (its
  // coordinator re-assigned us mid-generation) is refused and the coordinator told, since the
  // upstream stage never reads its link to us.
  std::string stale_upstream_token_;
  int64_t debug_forwards_ = 0;  // Forwards handled (for debug_freeze_after)
  // A tensor-parallel rank's Forwards since its stage was made or last reset: their compute
  // seconds, and the stage's seconds in collectives when the count started (log_tp_times).
  int64_t tp_forwards_ = 0;
  double tp_compute_s_ = 0, tp_sync_s0_ = 0;
  void log_tp_times();

  std::unique_ptr<model::GgufFile> file_;
  std::string file_hash_;
  std::unique_ptr<cluster::TensorHashes> hashes_;  // of file_ (its tensors' digests, cached on disk)
  model::ModelConfig config_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Stage> stage_;
  cluster::Assign assign_;
  std::unique_ptr<transport::Link> next_;  // to the next stage (non-last stages)
  // Tensor parallelism (cluster::TpAssign): the leader's links to the next group's other ranks;
  // the ring listener bound at the Assign (taken by TpRing), the group's ring, this rank's plan.
  std::vector<std::unique_ptr<transport::Link>> next_extra_;
  std::unique_ptr<transport::Listener> ring_listener_;
  std::unique_ptr<RingComm> comm_;
  Comm* group_comm_ = nullptr;  // opts_.group_comm's, instead of comm_ (not owned)
  std::unique_ptr<Comm> device_comm_;  // a group of device ranks: opts_.device_comm's, over comm_ or group_comm_
  ShardPlan tp_plan_;
  int ring_counter_ = 0;  // inproc ring listeners: a fresh name each
  Batch batch_;                            // the Forward being served
  std::vector<float> in_, out_;            // f16 hops only: hidden [n, n_embd] in / out as f32
  // Device hops (worker/device_hop.h): to the next stage (this worker is rank 0) and from the
  // previous one (rank 1), with the device buffers the hidden state goes out of and comes into.
  std::unique_ptr<DeviceHop> next_hop_, prev_hop_;
  Buffer next_hop_buf_, prev_hop_buf_;
  // Last stage: each sequence slot's sampler (parameters + repeat window), kept between steps.
  std::vector<std::optional<Sampler>> samplers_;
};

}  // namespace herd
