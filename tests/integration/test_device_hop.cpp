// Stage hops between devices (worker/device_hop.h), on the CPU: real WorkerServers over inproc
// links whose stages run on tests/engine/guarded_device.h's stand-in device, and a stand-in for
// NCCL below (a rendezvous by the offered id, then each hop's bytes out of the sender's device with
// its copy_out and into the receiver's with copy_in, through a queue). What is proved here is the
// workers' side: the offer, the answers, a Forward that carries only its header, the hidden state
// read from and written to device memory, and the fallbacks to the link. The NCCL end (launch/
// device_hop.cpp) has never run on a GPU.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "cluster/model_fingerprint.h"
#include "cluster/tensor_hashes.h"
#include "coordinator/remote_pipeline.h"
#include "engine/host_probe.h"
#include "engine/pipeline.h"
#include "kernels/cpu/reference_backend.h"
#include "tests/engine/guarded_device.h"
#include "tests/integration/cluster_util.h"
#include "tests/integration/inproc_server.h"
#include "tests/test_paths.h"
#include "worker/device_hop.h"

namespace herd::test {
namespace {

// The stand-in for NCCL's 2-rank groups: one channel per id, joined when both ranks came.
class StandinHops {
 public:
  std::atomic<int> sends{0}, recvs{0}, joined{0};
  std::atomic<bool> fail_rank0{false};  // the upstream's join fails (a GPU NCCL cannot use)
  std::atomic<bool> break_sends{false};  // sends fail (a peer GPU gone, an NCCL error)
  std::atomic<bool> throw_rank1{false};  // the downstream's join throws (a CUDA error as an exception)

  DeviceHopHooks hooks() {
    DeviceHopHooks h;
    h.new_id = [this](NcclId* id) {
      std::lock_guard<std::mutex> l(mu_);
      *id = NcclId{};
      const uint64_t n = ++ids_;
      for (int i = 0; i < 8; ++i) (*id)[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
      return std::string();
    };
    h.join = [this](const NcclId& id, int rank, Backend& be, int timeout_ms,
                    std::string* error) -> std::unique_ptr<DeviceHop> {
      if (rank == 0 && fail_rank0) {
        *error = "stand-in: this device cannot join";
        return nullptr;
      }
      if (rank == 1 && throw_rank1) throw std::runtime_error("stand-in: a device error");
      std::shared_ptr<Channel> c;
      {
        std::lock_guard<std::mutex> l(mu_);
        auto& slot = channels_[id];
        if (!slot) slot = std::make_shared<Channel>();
        c = slot;
      }
      std::unique_lock<std::mutex> l(c->mu);
      c->ranks |= 1 << rank;
      c->cv.notify_all();
      if (!c->cv.wait_for(l, std::chrono::milliseconds(timeout_ms), [&] { return c->ranks == 3; })) {
        *error = "stand-in: rank " + std::to_string(1 - rank) + " did not join within " + std::to_string(timeout_ms) +
                 " ms";
        return nullptr;
      }
      ++joined;
      return std::make_unique<Hop>(*this, c, be, timeout_ms);
    };
    return h;
  }

 private:
  struct Channel {
    std::mutex mu;
    std::condition_variable cv;
    int ranks = 0;
    std::deque<std::vector<float>> queue;
  };
  class Hop : public DeviceHop {
   public:
    Hop(StandinHops& hops, std::shared_ptr<Channel> c, Backend& be, int timeout_ms)
        : hops_(hops), c_(std::move(c)), be_(be), timeout_ms_(timeout_ms) {}
    std::string send(const float* dev, size_t n) override {
      if (hops_.break_sends) return "stand-in: the hop broke";
      std::vector<float> host(n);
      be_.copy_out(host.data(), dev, n * sizeof(float));  // device memory: only the device's own copy reads it
      std::lock_guard<std::mutex> l(c_->mu);
      c_->queue.push_back(std::move(host));
      c_->cv.notify_all();
      ++hops_.sends;
      return "";
    }
    std::string recv(float* dev, size_t n) override {
      std::unique_lock<std::mutex> l(c_->mu);
      if (!c_->cv.wait_for(l, std::chrono::milliseconds(timeout_ms_), [&] { return !c_->queue.empty(); }))
        return "stand-in: nothing arrived within " + std::to_string(timeout_ms_) + " ms";
      std::vector<float> host = std::move(c_->queue.front());
      c_->queue.pop_front();
      l.unlock();
      if (host.size() != n) return "stand-in: " + std::to_string(host.size()) + " floats for " + std::to_string(n);
      be_.copy_in(dev, host.data(), n * sizeof(float));
      ++hops_.recvs;
      return "";
    }
    std::string name() const override { return "stand-in"; }

   private:
    StandinHops& hops_;
    std::shared_ptr<Channel> c_;
    Backend& be_;
    int timeout_ms_;
  };

  std::mutex mu_;
  uint64_t ids_ = 0;
  std::map<NcclId, std::shared_ptr<Channel>> channels_;
};

// What the Forwards a worker received carried: how many, how many marked for the device hop, and
// their tensor bytes.
struct ForwardLog {
  std::atomic<int> forwards{0}, on_hop{0};
  std::atomic<uint64_t> tensor_bytes{0};
};

enum class Kind { Cpu, Device, DeviceWithoutHops };

WorkerServerOptions worker_options(const std::string& name, Kind kind, StandinHops* hops, ForwardLog* log) {
  WorkerServerOptions o;
  o.threads = 1;
  o.name = name;
  o.models_dir = "/";
  o.device_hop_timeout_ms = 1500;  // the failing cases wait this long for a peer that never joins
  if (kind != Kind::Cpu) {
    o.device_backend = [] { return std::make_unique<GuardedDevice>(); };
    o.device_free_bytes = [] { return uint64_t{777} << 20; };
    GuardedDevice probe_dev;
    HostProbeOptions po;
    po.startup = true;
    o.profile = probe_device(probe_dev, po, size_t(1) << 20);
    o.profile->mem_total_bytes = 1ull << 30;
    o.profile->mem_available_bytes = 777ull << 20;
    o.profile->read_bw_Bps = 1e9;
    if (kind == Kind::Device) o.device_hop = hops->hooks();
  }
  if (log)
    o.forward_observer = [log](const transport::Message& m) {
      ++log->forwards;
      try {
        if (cluster::unpack<cluster::Forward>(m).device_hop) ++log->on_hop;
      } catch (const transport::ProtocolError&) {
      }
      for (const auto& t : m.tensors) log->tensor_bytes += t.data.size();
    };
  return o;
}

struct Worker : InprocServer {
  Worker(const std::string& name, Kind kind, StandinHops* hops = nullptr, ForwardLog* log = nullptr)
      : InprocServer(worker_options(name, kind, hops, log)) {}
};

struct Model {
  std::unique_ptr<model::GgufFile> file = model::GgufFile::open(model_path("stories260K.gguf"));
  model::ModelConfig config = model::load_config(*file);
  std::unique_ptr<Backend> ref = make_reference_backend();
  LocalPipeline local{*file, config, *ref, 256};
};

// The workers as a pipeline with this split; the logits of the reference replay must be the
// local reference's bit for bit.
void expect_reference_bits(Model& m, const std::vector<std::string>& workers, const std::string& split,
                           const std::string& what) {
  RemotePipelineOptions o;
  o.workers = workers;
  o.split = split;
  o.isa = "scalar";  // CPU workers on the reference kernels, which the stand-in device computes with
  o.exact = true;
  o.n_ctx = 256;
  o.model_path = model_path("stories260K.gguf");
  o.connect_timeout_ms = 2000;
  RemotePipeline remote(*m.file, m.config, o);
  expect_same_logits(m.local, remote, what);
}

TEST(DeviceHop, TwoDeviceWorkersHandTheHiddenStateOverTheHopAndGiveTheReferenceBits) {
  Model m;
  StandinHops hops;
  ForwardLog into_second;
  const int violations_before = GuardedDevice::violations_seen;
  {
    Worker a("hop-a", Kind::Device, &hops), b("hop-b", Kind::Device, &hops, &into_second);
    expect_reference_bits(m, {a.address(), b.address()}, "0-1,2-4", "device -> device");
  }
  EXPECT_EQ(hops.joined, 2) << "one hop, both ends joined";
  EXPECT_GT(into_second.forwards, 0);
  // Every batch crossed on the hop: a Forward header with no tensor, the hidden state on the hop.
  EXPECT_EQ(into_second.on_hop.load(), into_second.forwards.load());
  EXPECT_EQ(into_second.tensor_bytes, 0u) << "a Forward between the device workers carried hidden-state bytes";
  EXPECT_EQ(hops.sends.load(), into_second.forwards.load());
  EXPECT_EQ(hops.recvs.load(), into_second.forwards.load());
  EXPECT_EQ(GuardedDevice::violations_seen, violations_before);
}

TEST(DeviceHop, AMiddleStageTakesAndGivesItsHiddenStateOnTheDevice) {
  Model m;
  StandinHops hops;
  ForwardLog into_mid, into_last;
  const int violations_before = GuardedDevice::violations_seen;
  {
    Worker a("hop3-a", Kind::Device, &hops), b("hop3-b", Kind::Device, &hops, &into_mid),
        c("hop3-c", Kind::Device, &hops, &into_last);
    expect_reference_bits(m, {a.address(), b.address(), c.address()}, "0-1,2-2,3-4", "device -> device -> device");
  }
  EXPECT_EQ(hops.joined, 4) << "two hops, both ends of each joined";
  EXPECT_GT(into_mid.forwards, 0);
  EXPECT_EQ(into_mid.on_hop.load(), into_mid.forwards.load());
  EXPECT_EQ(into_last.on_hop.load(), into_last.forwards.load());
  EXPECT_EQ(into_mid.tensor_bytes + into_last.tensor_bytes, 0u);
  EXPECT_EQ(hops.sends.load(), into_mid.forwards + into_last.forwards);
  EXPECT_EQ(hops.recvs.load(), hops.sends.load());
  EXPECT_EQ(GuardedDevice::violations_seen, violations_before);
}

// A hop with a CPU stage at either end uses the link: the device worker does not offer to a CPU
// worker's stage, or the CPU worker declines.
TEST(DeviceHop, AHopWithACpuStageUsesTheLink) {
  Model m;
  StandinHops hops;
  ForwardLog into_device, into_cpu;
  const int violations_before = GuardedDevice::violations_seen;
  {
    Worker cpu("hopcpu-cpu", Kind::Cpu, nullptr, &into_cpu), gpu("hopcpu-gpu", Kind::Device, &hops, &into_device);
    expect_reference_bits(m, {cpu.address(), gpu.address()}, "0-1,2-4", "cpu -> device");
    const int cpu_forwards = into_cpu.forwards;
    expect_reference_bits(m, {gpu.address(), cpu.address()}, "0-1,2-4", "device -> cpu");
    EXPECT_GT(into_cpu.forwards, cpu_forwards);
  }
  EXPECT_EQ(hops.joined, 0);
  EXPECT_EQ(hops.sends + hops.recvs, 0);
  EXPECT_EQ(into_device.on_hop + into_cpu.on_hop, 0);
  EXPECT_GT(into_device.tensor_bytes, 0u);  // the hidden state came over the link
  EXPECT_GT(into_cpu.tensor_bytes, 0u);
  EXPECT_EQ(GuardedDevice::violations_seen, violations_before);
}

// Two device workers on different hosts: NCCL would join them over its network transport, which
// is neither authenticated nor encrypted, so the hop is made only when both workers allow it
// (--nccl-across-hosts, or --insecure); otherwise the downstream declines, naming why, and the
// hidden state takes herd's link. Host identities stand in for two hosts (WorkerServerOptions::
// host_identity); the same identity is one host, where NCCL needs no network.
TEST(DeviceHop, AHopToAnotherHostNeedsBothWorkersToAllowNcclAcrossHosts) {
  Model m;
  const int violations_before = GuardedDevice::violations_seen;
  struct Case {
    uint64_t host_a, host_b;
    bool allow_a, allow_b, hop;
  };
  for (const Case& c : {Case{1, 2, false, false, false}, Case{1, 2, true, false, false}, Case{1, 2, false, true, false},
                        Case{1, 2, true, true, true}, Case{7, 7, false, false, true}}) {
    StandinHops hops;
    ForwardLog into_b;
    auto opts = [&](const std::string& name, uint64_t host, bool allow, ForwardLog* log) {
      WorkerServerOptions o = worker_options(name, Kind::Device, &hops, log);
      o.host_identity = host;
      o.nccl_across_hosts = allow;
      return o;
    };
    const std::string what = "hosts " + std::to_string(c.host_a) + "/" + std::to_string(c.host_b) + ", allowed " +
                             std::to_string(c.allow_a) + "/" + std::to_string(c.allow_b);
    {
      InprocServer a(opts("hosts-a", c.host_a, c.allow_a, nullptr)), b(opts("hosts-b", c.host_b, c.allow_b, &into_b));
      expect_reference_bits(m, {a.address(), b.address()}, "0-1,2-4", what);
    }
    EXPECT_EQ(hops.joined, c.hop ? 2 : 0) << what;
    EXPECT_EQ(into_b.on_hop.load(), c.hop ? into_b.forwards.load() : 0) << what;
    EXPECT_EQ(into_b.tensor_bytes == 0u, c.hop) << what;
  }
  EXPECT_EQ(GuardedDevice::violations_seen, violations_before);
}

// Two device workers that cannot make the hop fall back to the link, within the hop timeout:
// the upstream's join fails (the downstream's then times out), the downstream's join throws (the
// upstream's times out; the downstream's loop goes on), or the downstream has no hooks (its build
// has no NCCL) and declines.
TEST(DeviceHop, AHopThatCannotBeJoinedOrIsDeclinedFallsBackToTheLink) {
  Model m;
  const int violations_before = GuardedDevice::violations_seen;
  {
    StandinHops hops;
    hops.fail_rank0 = true;
    ForwardLog into_second;
    Worker a("hopfail-a", Kind::Device, &hops), b("hopfail-b", Kind::Device, &hops, &into_second);
    const auto t0 = std::chrono::steady_clock::now();
    expect_reference_bits(m, {a.address(), b.address()}, "0-1,2-4", "join fails");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(60));
    EXPECT_EQ(hops.joined, 0);
    EXPECT_EQ(hops.sends + hops.recvs, 0);
    EXPECT_GT(into_second.forwards, 0);
    EXPECT_EQ(into_second.on_hop, 0);
    EXPECT_GT(into_second.tensor_bytes, 0u);
  }
  {
    StandinHops hops;
    hops.throw_rank1 = true;
    ForwardLog into_second;
    Worker a("hopthrow-a", Kind::Device, &hops), b("hopthrow-b", Kind::Device, &hops, &into_second);
    expect_reference_bits(m, {a.address(), b.address()}, "0-1,2-4", "join throws");
    EXPECT_EQ(hops.joined, 0);
    EXPECT_EQ(hops.sends + hops.recvs, 0);
    EXPECT_GT(into_second.forwards, 0);
    EXPECT_EQ(into_second.on_hop, 0);
    EXPECT_GT(into_second.tensor_bytes, 0u);
  }
  {
    StandinHops hops;
    ForwardLog into_second;
    Worker a("hopdecl-a", Kind::Device, &hops), b("hopdecl-b", Kind::DeviceWithoutHops, nullptr, &into_second);
    expect_reference_bits(m, {a.address(), b.address()}, "0-1,2-4", "declined");
    EXPECT_EQ(hops.joined, 0);
    EXPECT_EQ(hops.sends + hops.recvs, 0);
    EXPECT_EQ(into_second.on_hop, 0);
    EXPECT_GT(into_second.tensor_bytes, 0u);
  }
  EXPECT_EQ(GuardedDevice::violations_seen, violations_before);
}

// A hop that breaks mid-run is an error to the coordinator naming the hop (the next stage, waiting
// for the hidden state, gives up after the hop timeout); the next request sets the pipeline up
// again, with a new hop, and goes on with the reference's bits.
TEST(DeviceHop, AHopThatBreaksIsAnErrorNamingItAndTheNextRequestRecovers) {
  Model m;
  StandinHops hops;
  const int violations_before = GuardedDevice::violations_seen;
  {
    Worker a("hopbreak-a", Kind::Device, &hops), b("hopbreak-b", Kind::Device, &hops);
    RemotePipelineOptions o;
    o.workers = {a.address(), b.address()};
    o.split = "0-1,2-4";
    o.isa = "scalar";
    o.exact = true;
    o.n_ctx = 256;
    o.model_path = model_path("stories260K.gguf");
    o.connect_timeout_ms = 2000;
    RemotePipeline remote(*m.file, m.config, o);
    const std::vector<int32_t> prompt = {1, 7, 42, 99};
    const int32_t next = 17;
    std::vector<float> want, got;
    m.local.eval(prompt.data(), 4, 0, false, want);
    remote.eval(prompt.data(), 4, 0, false, got);
    ASSERT_EQ(got, want);
    m.local.eval(&next, 1, 4, false, want);
    EXPECT_EQ(hops.joined, 2);
    hops.break_sends = true;
    try {
      remote.eval(&next, 1, 4, false, got);
      ADD_FAILURE() << "a broken hop went unnoticed";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("the device hop to the next stage"), std::string::npos) << e.what();
    }
    hops.break_sends = false;
    remote.eval(&next, 1, 4, false, got);
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * sizeof(float)));
    EXPECT_EQ(hops.joined, 4) << "the recovery joined a new hop";
  }
  EXPECT_EQ(GuardedDevice::violations_seen, violations_before);
}

// What a peer may not do with the hop messages, by hand over raw links: a Forward marked for a
// device hop at a stage that joined none is a protocol error (the sender is dropped, the
// coordinator told), not a crash; a HopOffer from a peer that is not the stage's upstream is
// refused; one whose id is for another hop is declined. The worker serves on.
TEST(DeviceHop, HopMessagesFromTheWrongPeerOrWithoutAHopAreRefused) {
  Model m;
  StandinHops hops;
  Worker w("hoprules", Kind::Device, &hops);
  const int64_t L = m.config.n_layers;
  auto expect = [](transport::Link& l, cluster::MsgType type, const std::string& what) {
    for (int i = 0; i < 20; ++i) {
      transport::Received r = l.recv(5000);
      if (r.status != transport::RecvStatus::ok) break;
      if (r.msg.type == static_cast<uint16_t>(type)) return r.msg;
    }
    ADD_FAILURE() << "no " << cluster::msg_type_name(static_cast<uint16_t>(type)) << ": " << what;
    return transport::Message{};
  };
  auto error_text = [](const transport::Message& msg) {
    return msg.type == static_cast<uint16_t>(cluster::MsgType::Error) ? cluster::unpack<cluster::ErrorMsg>(msg).message
                                                                     : std::string();
  };
  auto coordinator = transport::connect(w.address());
  cluster::Hello hello;
  hello.session = "hop-rules-coordinator";
  ASSERT_EQ(coordinator->send(cluster::pack(hello)), "");
  expect(*coordinator, cluster::MsgType::Hello, "the worker's Hello");
  cluster::Assign a;  // the last stage, layers 2.., fed by the upstream whose Hello says "tok"
  a.session = 3;
  a.model_hash = cluster::model_fingerprint(*m.file);
  a.model_path = model_path("stories260K.gguf");
  a.layers = {2, L, false, true};
  a.n_ctx = 64;
  a.upstream_token = "tok";
  cluster::HashOptions quiet;
  quiet.show = false;
  a.tensor_digests = cluster::TensorHashes(*m.file, a.model_hash, quiet)
                         .digests(model::stage_tensor_names(*m.file, m.config, a.layers));
  ASSERT_EQ(coordinator->send(cluster::pack(a)), "");
  expect(*coordinator, cluster::MsgType::Ready, "the Assign");

  // The coordinator is not the stage's upstream: its HopOffer is refused.
  NcclIdMessage id;
  id.group_tag = device_hop_tag("tok");
  id.nranks = 2;
  ASSERT_EQ(coordinator->send(cluster::pack(cluster::HopOffer{encode_nccl_id(id)})), "");
  const std::string refused = error_text(expect(*coordinator, cluster::MsgType::Error, "the coordinator's HopOffer"));
  EXPECT_NE(refused.find("HopOffer from a peer that is not this stage's upstream stage"), std::string::npos) << refused;

  auto upstream = transport::connect(w.address());
  cluster::Hello up;
  up.role = cluster::Role::Upstream;
  up.session = "tok";
  ASSERT_EQ(upstream->send(cluster::pack(up)), "");
  expect(*upstream, cluster::MsgType::Hello, "the upstream's Hello");
  // An id for another hop (another link token): declined, without joining anything.
  NcclIdMessage other = id;
  other.group_tag = device_hop_tag("another");
  ASSERT_EQ(upstream->send(cluster::pack(cluster::HopOffer{encode_nccl_id(other)})), "");
  const auto answer = cluster::unpack<cluster::HopAnswer>(expect(*upstream, cluster::MsgType::HopAnswer, "the offer"));
  EXPECT_EQ(answer.state, cluster::HopState::Declined);
  EXPECT_NE(answer.reason.find("the offer's id"), std::string::npos) << answer.reason;
  EXPECT_EQ(hops.joined, 0);

  // A Forward marked for the device hop this stage never joined: the upstream is dropped and the
  // coordinator hears why.
  cluster::Forward f{9, 0, 2, false};
  f.device_hop = true;
  ASSERT_EQ(upstream->send(cluster::pack(f)), "");
  const std::string dropped = error_text(expect(*upstream, cluster::MsgType::Error, "the marked Forward"));
  EXPECT_NE(dropped.find("Forward on a device hop, but this stage has no device hop from its sender"), std::string::npos)
      << dropped;
  const std::string told = error_text(expect(*coordinator, cluster::MsgType::Error, "the coordinator's report"));
  EXPECT_NE(told.find("dropped the previous stage's connection"), std::string::npos) << told;

  // Still serving: the coordinator's Reset is answered.
  ASSERT_EQ(coordinator->send(cluster::pack(cluster::Reset{})), "");
  expect(*coordinator, cluster::MsgType::Ready, "a Reset after all that");
}

}  // namespace
}  // namespace herd::test
