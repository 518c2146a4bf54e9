// WorkerServer's Assign handling: which model file, is it the coordinator's model, is the
// assignment sane, which kernels, are the shard's tensors the coordinator's (their digests), which
// shard (fetched when the worker has no copy), which next stage. Each step is a function of its own so that the order reads in on_assign; a failing step
// becomes an Error reply to the coordinator and leaves the worker unassigned (the previous model
// file, backend and Stage are kept where the next Assign can reuse them).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <thread>

#include "cluster/link_measure.h"
#include "engine/ring_comm.h"
#include "engine/tp_shard.h"
#include "engine/tp_sync.h"
#include "cluster/model_fingerprint.h"
#include "cluster/tensor_hashes.h"
#include "common/log.h"
#include "common/timer.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/weights.h"
#include "worker/worker_server.h"

namespace herd {

using namespace transport;
using namespace cluster;

namespace {

constexpr int kNextStageHelloTimeoutMs = 5000;
constexpr int kRingFormTimeoutMs = 10000;  // TpRing: every rank of the group dials its successor
constexpr int64_t kMaxContext = int64_t{1} << 24;

}  // namespace

void WorkerServer::on_assign(const std::string& peer, const Message& m) {
  const Assign a = unpack<Assign>(m);
  if (peers_[peer].role != Role::Coordinator) throw ProtocolError("Assign from a peer that is not a coordinator");
  coordinator_ = peer;
  drop_ring();  // a new assignment: a new ring (or none)
  const Timer timer;
  uint64_t received = 0;
  bool fetched = false;
  std::optional<LinkStats> next_link;
  try {
    ShardFetch fetch;
    open_model(resolve_model_file(peer, a, fetch), a);
    check_assignment(a);
    ensure_backend(a);
    build_stage(a, fetch);
    if (fetch.cache) {
      fetch.cache.reset();  // unlock
      fetched = true;
      received = fetch.stats.bytes_received;
    }
    assign_ = a;
    stage_->reset_cache();
    samplers_.assign(static_cast<size_t>(a.n_seq), std::nullopt);
    next_.reset();
    next_extra_.clear();
    next_hop_.reset();
    prev_hop_.reset();  // the previous stage offers a new one after its own Assign
    if (a.tp.size > 1) ring_listener_ = listen(ring_bind_address());
    if (!a.next_address.empty()) {
      next_link = dial_next_stage(a);
      offer_device_hop(a);
    }
  } catch (const ProtocolError&) {
    throw;
  } catch (const std::exception& e) {
    stage_.reset();
    next_.reset();
    next_extra_.clear();
    next_hop_.reset();
    prev_hop_.reset();
    ring_listener_.reset();
    assign_.tp = {};
    reply_error(peer, 0, e.what());
    return;
  }
  const std::string info = stage_name() + " of " + std::to_string(config_.n_layers) + ", " +
                           std::to_string(file_->mapped_bytes() >> 20) + " MiB mapped" +
                           (fetched ? ", " + std::to_string(received) + " bytes received (cache " +
                                          file_->path() + ")"
                                    : "");
  HERD_LOG_INFO("worker: assigned ", info);
  {
    // The one line per assignment a user sees by default (common/log.h note).
    const std::string model = !config_.name.empty() ? config_.name
                                                    : std::filesystem::path(file_->path()).filename().string();
    char tail[160];
    std::snprintf(tail, sizeof tail, " (%.0f MiB, kv %s, %lld slot%s) in %.1f s",
                  static_cast<double>(file_->mapped_bytes()) / 1048576.0, std::string(dtype_name(a.kv_type)).c_str(),
                  static_cast<long long>(a.n_seq), a.n_seq == 1 ? "" : "s", timer.seconds());
    const std::string layers = a.layers.end - a.layers.first == 1 ? "layer " + std::to_string(a.layers.first)
                                                                    : stage_name();
    std::string line = "herd worker: assigned " + layers + " of " + model + tail;
    if (fetched) {
      char got[64];
      std::snprintf(got, sizeof got, ", %.1f MiB fetched from the coordinator", static_cast<double>(received) / 1048576.0);
      line += got;
    }
    if (a.tp.size > 1 && a.tp.rank < tp_plan_.kv_heads.size()) {
      // Its share: what the coordinator cut from the ranks' measured rates (shard_plan.h).
      const size_t r = a.tp.rank;
      char share[160];
      std::snprintf(share, sizeof share, "; its share: KV heads %lld-%lld of %lld, FFN rows %lld-%lld of %lld",
                    static_cast<long long>(tp_plan_.kv_heads[r].begin), static_cast<long long>(tp_plan_.kv_heads[r].end - 1),
                    static_cast<long long>(config_.n_kv_heads), static_cast<long long>(tp_plan_.ffn_rows[r].begin),
                    static_cast<long long>(tp_plan_.ffn_rows[r].end - 1), static_cast<long long>(config_.n_ff));
      line += share;
    }
    note(line);
  }
  Ready ready{info};
  if (ring_listener_) ready.ring_address = ring_listener_->address();
  ready.device = backend_->description();
  ready.memory_bytes = std::min(kMaxStageBytes, model::stage_weight_bytes(*file_, config_, a.layers) + stage_->cache().bytes());
  if (next_link) {
    ready.has_next_link = true;
    ready.next_link = *next_link;
    HERD_LOG_INFO("worker: link to the next stage: ", next_link->latency_s * 1e6, " us, ", next_link->bandwidth_Bps / 1e9, " GB/s");
  }
  listener_->send(peer, pack(ready));
}

namespace {

// The coordinator's path, canonical, when it names a regular file inside models_dir; else "".
// Nothing outside models_dir is opened, stat'ed or named back to the peer.
std::string inside_models_dir(const std::string& models_dir, const std::string& path) {
  if (models_dir.empty() || path.empty()) return "";
  std::error_code ec;
  const auto root = std::filesystem::canonical(models_dir, ec);
  if (ec) return "";
  const auto p = std::filesystem::weakly_canonical(path, ec);  // symlinks resolved: no way out through one
  if (ec) return "";
  const std::string r = root.string(), c = p.string();
  if (c.size() <= r.size() || c.compare(0, r.size(), r) != 0 || (r != "/" && c[r.size()] != '/')) {
    HERD_LOG_WARN("worker: the coordinator's model path is outside --models-dir ", r, "; not opened");
    return "";
  }
  if (!std::filesystem::is_regular_file(p, ec)) return "";
  return c;
}

}  // namespace

std::string WorkerServer::resolve_model_file(const std::string& peer, const Assign& a, ShardFetch& fetch) {
  if (!opts_.model_path.empty()) return opts_.model_path;
  // The coordinator's path is only a hint, and only inside --models-dir (default: none, so the
  // coordinator sends the weights): a peer must not make this worker open files it names.
  const std::string here = inside_models_dir(opts_.models_dir, a.model_path);
  std::error_code ec;
  if (!here.empty() && a.header_bytes == 0) return here;  // a coordinator that cannot send weights
  if (!here.empty() && ((file_ && file_->path() == here && file_hash_ == a.model_hash) ||
                        (std::filesystem::file_size(here, ec) == a.file_size &&
                         model_fingerprint(here, a.header_bytes) == a.model_hash)))
    return here;
  if (a.header_bytes == 0)
    throw std::runtime_error("no model file: start the worker with -m FILE, or --models-dir DIR holding the "
                             "coordinator's model");
  if (file_ && file_hash_ != a.model_hash) {  // another model: unmapped now, so the cache may evict it
    stage_.reset();
    hashes_.reset();
    file_.reset();
  }
  fetch.cache = std::make_unique<WeightCache>(opts_.cache_dir.empty() ? default_cache_dir() : opts_.cache_dir,
                                              a.model_hash, opts_.cache_max);
  fetch.cache->set_chunk_timeout_ms(opts_.weight_timeout_ms);
  fetch.source = weight_source(peer, a.session);
  fetch.cache->ensure_header(a.file_size, a.header_bytes, *fetch.source, fetch.stats);
  return fetch.cache->model_path();
}

void WorkerServer::open_model(const std::string& path, const Assign& a) {
  if (!file_ || file_->path() != path) {
    stage_.reset();
    hashes_.reset();
    file_.reset();
    model::GgufOpenOptions o;
    o.map_all = false;
    auto f = model::GgufFile::open(path, o);
    file_hash_ = model_fingerprint(*f);
    config_ = model::load_config(*f);
    file_ = std::move(f);
  }
  if (a.model_hash != file_hash_)
    throw std::runtime_error("model mismatch: this worker's " + path + " has hash " + file_hash_.substr(0, 16) +
                             "…, the coordinator's model has " + a.model_hash.substr(0, 16) + "…");
}

void WorkerServer::check_assignment(const Assign& a) const {
  // The wire checked the range's shape (cluster::check_layer_range); here: inside this model.
  const int64_t L = config_.n_layers;
  if (a.layers.first < 0 || a.layers.end <= a.layers.first || a.layers.end > L)
    throw std::runtime_error("layer range " + std::to_string(a.layers.first) + ".." + std::to_string(a.layers.end) +
                             " is not inside the model's 0.." + std::to_string(L));
  if (a.layers.embedding != (a.layers.first == 0) || a.layers.output != (a.layers.end == L))
    throw std::runtime_error("is_first/is_last disagree with the layer range");
  if (a.n_ctx <= 0 || a.n_ctx > kMaxContext) throw std::runtime_error("context size " + std::to_string(a.n_ctx));
  // A tensor-parallel follower (rank > 0) sends nothing on: no next address.
  const bool sends_on = !a.layers.output && a.tp.rank == 0;
  if (sends_on == a.next_address.empty())
    throw std::runtime_error(a.layers.output ? "the last stage has a next address"
                             : a.tp.rank > 0 ? "a tensor-parallel follower has a next address"
                                             : "no next-stage address");
  if (!a.tp.next_addresses.empty() && (!sends_on || a.tp.next_addresses[0] != a.next_address))
    throw std::runtime_error("the next group's addresses do not start with the next-stage address");
  for (const auto& n : a.tp.next_addresses) check_address(n, /*listening=*/false);  // invalid_argument: named
  if (a.tp.size > 1) {
    if (config_.is_moe())
      throw std::runtime_error("tensor parallelism does not split mixture-of-experts models yet (" + config_.arch + ")");
    if (a.tp.sync == 2 && config_.n_embd % 32 != 0)
      throw std::runtime_error("--tp-sync q8 needs n_embd in whole blocks of 32; it is " + std::to_string(config_.n_embd));
  }
}

void WorkerServer::ensure_backend(const Assign& a) {
  if (opts_.device_backend) {  // a GPU: the same backend whatever the Assign's CPU options
    if (!backend_) backend_ = opts_.device_backend();
    return;
  }
  if (backend_ && a.backend_isa == assign_.backend_isa && a.exact == assign_.exact) return;
  stage_.reset();  // holds a reference to the backend
  backend_ = make_cpu_backend(CpuBackendOptions{a.exact, a.backend_isa});
  backend_->set_threads(opts_.threads > 0 ? opts_.threads
                                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

namespace {

// The Assign's digests by name; exactly the stage's tensors, else the reason (the coordinator and
// this worker disagree on what the stage holds: another build, or a forged Assign).
std::map<std::string, Digest> expected_digests(const Assign& a, const std::vector<std::string>& names) {
  std::map<std::string, Digest> want;
  for (const auto& d : a.tensor_digests)
    if (!want.emplace(d.name, d.blake2b).second)
      throw std::runtime_error("the Assign carries two digests for tensor " + d.name);
  for (const auto& n : names)
    if (!want.count(n))
      throw std::runtime_error("the Assign carries no digest for tensor " + n + " (" + std::to_string(want.size()) +
                               " digests for a stage of " + std::to_string(names.size()) + " tensors)");
  if (want.size() != names.size())
    throw std::runtime_error("the Assign carries " + std::to_string(want.size()) + " tensor digests for a stage of " +
                             std::to_string(names.size()) + " tensors");
  return want;
}

// The tensors of `have` whose digest is not the expected one, in order (pointers into `have`).
std::vector<const TensorDigest*> differing(const std::vector<TensorDigest>& have, const std::map<std::string, Digest>& want) {
  std::vector<const TensorDigest*> bad;
  for (const auto& d : have)
    if (want.at(d.name) != d.blake2b) bad.push_back(&d);
  return bad;
}

std::string and_more(size_t n) {
  return n > 1 ? " and " + std::to_string(n - 1) + " more tensor" + (n > 2 ? "s" : "") + " differ" : "";
}

}  // namespace

void WorkerServer::build_stage(const Assign& a, ShardFetch& fetch) {
  const auto names = model::stage_tensor_names(*file_, config_, a.layers);
  const auto want = expected_digests(a, names);
  if (!hashes_) {
    HashOptions ho;
    ho.who = "herd worker";
    hashes_ = std::make_unique<TensorHashes>(*file_, file_hash_, ho);
  }
  std::vector<std::string> refetch;
  if (!fetch.cache) {
    // This worker's own copy: every tensor of the stage must be the coordinator's.
    const auto have = hashes_->digests(names);
    if (const auto bad = differing(have, want); !bad.empty())
      throw std::runtime_error("tensor " + bad[0]->name + " differs from the coordinator's copy (blake2b " +
                               digest_short(bad[0]->blake2b) + " here, " + digest_short(want.at(bad[0]->name)) +
                               " there" + and_more(bad.size()) + "; " + file_->path() + ")");
  } else {
    // The weight cache: what it holds is checked before it is used; a tensor that differs (damaged
    // or tampered with on this disk) is forgotten and fetched again.
    const auto have = hashes_->digests(fetch.cache->cached(names));
    for (const TensorDigest* d : differing(have, want)) {
      note("herd worker: cached tensor " + d->name + " differs from the coordinator's (blake2b " +
           digest_short(d->blake2b) + " in " + file_->path() + ", " + digest_short(want.at(d->name)) +
           " expected); fetching it again");
      refetch.push_back(d->name);
    }
    fetch.cache->forget(refetch);
  }
  const bool same = stage_ && refetch.empty() && assign_.layers.first == a.layers.first &&
                    assign_.layers.end == a.layers.end && assign_.n_ctx == a.n_ctx && assign_.n_seq == a.n_seq &&
                    assign_.kv_type == a.kv_type && assign_.tp.size == a.tp.size && assign_.tp.rank == a.tp.rank &&
                    assign_.tp.weights == a.tp.weights;
  if (same) return;
  stage_.reset();
  if (fetch.cache) {
    // What arrives is checked before the cache commits it (a received tensor that differs from its
    // digest is never used, and is asked for again by the next Assign).
    auto verify = [&](const std::vector<std::string>& received) {
      hashes_->rewritten(received);
      const auto got = hashes_->digests(received);
      if (const auto bad = differing(got, want); !bad.empty())
        throw std::runtime_error("tensor " + bad[0]->name + " received from the coordinator differs from its digest (blake2b " +
                                 digest_short(bad[0]->blake2b) + " received, " + digest_short(want.at(bad[0]->name)) +
                                 " in the Assign" + and_more(bad.size()) + ")");
    };
    fetch.cache->ensure_tensors(*file_, names, *fetch.source, fetch.stats, opts_.chunk_bytes, verify);
  }
  file_->map_tensors(names);
  model::StageWeights w = model::load_stage_weights(*file_, config_, a.layers);
  const KvOptions kv{a.n_ctx, a.n_seq, a.kv_type};
  auto residency = stream_if_over_budget(a, w);  // worker/shard_budget.cpp
  if (a.tp.size <= 1) {
    stage_ = std::make_unique<Stage>(config_, std::move(w), *backend_, kv);
    stage_->set_residency(std::move(residency));
    return;
  }
  // A rank of a tensor-parallel group: the plan from the weights every rank was sent (the same
  // plan on every rank), this rank's slice of the stage's tensors (views of its rows and of its
  // columns: engine/tp_shard.h), a Stage of its heads and FFN rows. The ring (or the launcher's
  // group comm) joins it at TpRing.
  const int rank = static_cast<int>(a.tp.rank);
  try {
    tp_plan_ = plan_shards(shard_shape(config_, w), a.tp.weights);
    model::StageWeights shard = shard_weights(config_, w, tp_plan_, rank);
    stage_ = std::make_unique<Stage>(shard_config(config_, tp_plan_, rank), std::move(shard), *backend_, kv);
    tp_forwards_ = 0;
    tp_compute_s_ = tp_sync_s0_ = 0;
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(std::string("cannot be tensor-parallel rank ") + std::to_string(rank) + " of " +
                             std::to_string(a.tp.size) + ": " + e.what());
  }
  const size_t r = static_cast<size_t>(rank);
  HERD_LOG_INFO("worker: tp rank ", rank, " of ", a.tp.size, ": KV heads ", tp_plan_.kv_heads[r].begin, "..",
                tp_plan_.kv_heads[r].end - 1, ", FFN rows ", tp_plan_.ffn_rows[r].begin, "..", tp_plan_.ffn_rows[r].end - 1,
                ", vocabulary rows ", tp_plan_.vocab[r].begin, "..", tp_plan_.vocab[r].end - 1);
}

std::string WorkerServer::ring_bind_address() const {
  const std::string a = listener_->address();
  if (a.rfind("tcp://", 0) == 0) return a.substr(0, a.rfind(':')) + ":*";
  return a + "-ring-" + std::to_string(++const_cast<WorkerServer*>(this)->ring_counter_);
}

namespace {
constexpr TpSync kTpSyncs[] = {TpSync::F32, TpSync::F16, TpSync::Q8};  // cluster::TpAssign::sync
}  // namespace

void WorkerServer::drop_ring() {
  if (stage_) stage_->set_tensor_parallel({});
  device_comm_.reset();  // (made over the ring or the group: before them)
  group_comm_ = nullptr;
  if (comm_) comm_->abandon();
  comm_.reset();
  ring_listener_.reset();
}

void WorkerServer::on_tp_ring(const std::string& peer, const Message& m) {
  const TpRing t = unpack<TpRing>(m);
  std::string why;
  if (!stage_ || assign_.tp.size <= 1) why = "TpRing without a tensor-parallel assignment";
  else if (t.session != assign_.session) why = "TpRing for assignment " + std::to_string(t.session) + ", not " + std::to_string(assign_.session);
  else if (!ring_listener_) why = "TpRing twice for one assignment";
  else if (t.addresses.size() != assign_.tp.size)
    why = "TpRing with " + std::to_string(t.addresses.size()) + " addresses for " + std::to_string(assign_.tp.size) + " ranks";
  for (size_t i = 0; why.empty() && i < t.addresses.size(); ++i) {
    try {
      check_address(t.addresses[i], /*listening=*/false);
    } catch (const std::invalid_argument& e) {
      why = std::string("TpRing: ") + e.what();
    }
  }
  if (!why.empty()) {
    reply_error(peer, 0, why);
    return;
  }
  if (opts_.group_comm) {
    std::string why_not;
    if (Comm* g = opts_.group_comm(static_cast<int>(assign_.tp.rank), static_cast<int>(assign_.tp.size), &why_not)) {
      ring_listener_.reset();
      g->set_timeout_ms(assign_.tp.ring_timeout_ms);
      group_comm_ = g;
      if (std::string err = join_group(*g); !err.empty()) {
        reply_error(peer, 0, stage_name() + ": " + err);
        return;
      }
      const Comm& joined = device_comm_ ? *device_comm_ : *g;
      note("herd worker: tensor-parallel rank " + std::to_string(assign_.tp.rank) + " of " +
           std::to_string(assign_.tp.size) + ", all-reduces over " + joined.name());
      listener_->send(peer, pack(Ready{joined.name() + " group of " + std::to_string(assign_.tp.size) + " ranks"}));
      return;
    }
    HERD_LOG_WARN("worker: ", why_not, "; the group forms a ring over TCP instead");
  }
  std::string err;
  auto ring = make_ring_comm(t.addresses, static_cast<int>(assign_.tp.rank), &err,
                             std::min<int>(kRingFormTimeoutMs, assign_.tp.ring_timeout_ms), std::move(ring_listener_));
  if (!ring) {
    reply_error(peer, 0, stage_name() + ": cannot form the tensor-parallel ring: " + err);
    return;
  }
  ring->set_timeout_ms(assign_.tp.ring_timeout_ms);
  comm_ = std::move(ring);
  if (std::string why = join_group(*comm_); !why.empty()) {
    reply_error(peer, 0, stage_name() + ": " + why);
    return;
  }
  HERD_LOG_INFO("worker: tensor-parallel ring of ", assign_.tp.size, " formed (rank ", assign_.tp.rank, ", sync ",
                tp_sync_name(kTpSyncs[assign_.tp.sync]), device_comm_ ? ", joined over " + device_comm_->name() : "",
                ")");
  listener_->send(peer, pack(Ready{"ring of " + std::to_string(assign_.tp.size) + " ranks formed" +
                                   (device_comm_ ? ", " + device_comm_->name() + " group over it" : "")}));
}

std::string WorkerServer::join_group(Comm& over) {
  const TpSync sync = kTpSyncs[assign_.tp.sync];
  // What every rank is: its kind (0 a CPU, 1 a device with a device Comm, 2 a device without
  // one), its host (common/host_identity.h, in three 22-bit parts: floats carry integers below
  // 2^24 exactly) and whether it lets NCCL cross hosts.
  const bool here_on_device = backend_->device().kind != Device::Kind::Host;
  const uint64_t h = host();
  constexpr size_t kFields = 5;
  const float mine[kFields] = {here_on_device ? (opts_.device_comm ? 1.0f : 2.0f) : 0.0f,
                               static_cast<float>(h & 0x3FFFFF), static_cast<float>((h >> 22) & 0x3FFFFF),
                               static_cast<float>(h >> 44), opts_.nccl_across_hosts ? 1.0f : 0.0f};
  std::vector<float> fields(kFields * static_cast<size_t>(over.size()));
  if (std::string err = over.all_gather(mine, kFields, fields.data()); !err.empty())
    return "forming the tensor-parallel group: " + err;
  std::string on_devices, without_comm, refusing;
  bool any_cpu = false, hosts_differ = false;
  for (int r = 0; r < over.size(); ++r) {
    const float* f = fields.data() + static_cast<size_t>(r) * kFields;
    any_cpu |= f[0] == 0.0f;
    if (f[0] != 0.0f) on_devices += (on_devices.empty() ? "" : ", ") + std::to_string(r);
    if (f[0] == 2.0f) without_comm += (without_comm.empty() ? "" : ", ") + std::to_string(r);
    hosts_differ |= f[1] != mine[1] || f[2] != mine[2] || f[3] != mine[3];
    if (f[4] == 0.0f) refusing += (refusing.empty() ? "" : ", ") + std::to_string(r);
  }
  try {
    if (on_devices.empty()) {
      stage_->set_tensor_parallel({&over, sync, tp_plan_.vocab});
      return "";
    }
    if (any_cpu)
      return "a tensor-parallel group's ranks must all compute on GPUs (joined over NCCL) or all on CPUs; rank(s) " +
             on_devices + " of " + std::to_string(over.size()) + " are on GPUs";
    if (!without_comm.empty())
      return "rank(s) " + without_comm + " compute on a GPU but their herd cannot join GPUs (built without NCCL)";
    if (hosts_differ && !refusing.empty())
      return "the group's GPUs are on more than one host, and NCCL's network transport is neither authenticated "
             "nor encrypted: start its workers with --nccl-across-hosts to allow it (not given to rank(s) " +
             refusing + ")";
    std::string why;
    device_comm_ = opts_.device_comm(over, *backend_, &why);
    if (!device_comm_) return "cannot join the GPU group on " + backend_->device().name() + ": " + why;
    device_comm_->set_timeout_ms(assign_.tp.ring_timeout_ms);
    stage_->set_tensor_parallel({device_comm_.get(), sync, tp_plan_.vocab});
  } catch (const std::exception& e) {
    device_comm_.reset();
    return e.what();
  }
  return "";
}

LinkStats WorkerServer::dial_next_stage(const Assign& a) {
  // The next stage, and with a tensor-parallel next stage every other rank of its group too (all
  // say Hello first, then the answers; only the link to its rank 0 is measured).
  std::vector<std::string> targets = a.tp.next_addresses.empty() ? std::vector<std::string>{a.next_address}
                                                                  : a.tp.next_addresses;
  Hello h;
  h.role = Role::Upstream;
  h.name = opts_.name + " (" + stage_name() + ")";
  h.session = a.next_token;  // makes us the next stage's upstream (cluster/protocol.h "Roles")
  std::vector<std::unique_ptr<Link>> links;
  for (const auto& t : targets) {
    links.push_back(connect(t));
    if (auto err = links.back()->send(pack(h)); !err.empty()) throw std::runtime_error(t + ": " + err);
  }
  for (size_t i = 0; i < links.size(); ++i) {
    Received r = links[i]->recv(kNextStageHelloTimeoutMs);
    if (r.status != RecvStatus::ok) throw std::runtime_error("no Hello from the next stage " + targets[i] + ": " +
                                                            (r.error.empty() ? "timed out" : r.error));
    const Hello reply = unpack<Hello>(r.msg);
    if (reply.protocol_version != kProtocolVersion) throw std::runtime_error("next stage speaks another protocol");
  }
  next_ = std::move(links[0]);
  for (size_t i = 1; i < links.size(); ++i) next_extra_.push_back(std::move(links[i]));
  try {
    LinkMeasureOptions lo;
    lo.timeout_ms = kNextStageHelloTimeoutMs;
    return measure_link(*next_, lo);
  } catch (const std::exception& e) {
    throw std::runtime_error("measuring the link to the next stage " + a.next_address + ": " + e.what());
  }
}

}  // namespace herd
