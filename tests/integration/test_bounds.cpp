// Issue [trust] item 4, "bounds before allocation", against real `herd worker` processes on
// 127.0.0.1, each attack made by a peer that *holds the cluster key* (authentication is not the
// defence here): a 1 GiB frame (ZeroMQ and data lane) allocates nothing; Pings never read keep the
// worker's memory bounded; a WeightRequest never answered fails that Assign within --weight-timeout
// and the worker serves the real coordinator next; an Assign with n_ctx 2^24 is refused with the
// memory it needs; Forwards past the context or of 200k rows are refused; the weight cache holds
// --cache-max by evicting the least recently used model; a coordinator-named path is opened only
// inside --models-dir, and errors about bad files carry none of their bytes.
#include <sys/inotify.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>
#include <zmq.hpp>

#include "cluster/model_fingerprint.h"
#include "cluster/protocol.h"
#include "cluster/tensor_hashes.h"
#include "coordinator/remote_pipeline.h"
#include "model/weights.h"
#include "tests/integration/cluster_util.h"
#include "transport/codec.h"
#include "transport/security.h"
#include "transport/zmq_link.h"
#include "worker/bounds.h"
#include "worker/weight_cache.h"

namespace herd::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

class Bounds : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/herd-boundstest-XXXXXX";
    dir_ = mkdtemp(tmpl);
    ::setenv("HERD_KEY", (dir_ + "/cluster.key").c_str(), 1);
    ::setenv("HERD_CACHE_DIR", (dir_ + "/default-cache").c_str(), 1);  // never the user's cache
    transport::configure_security({false, ""});
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string dir_;
};
std::string Bounds::dir_;

const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378};

// /proc/PID/status field in bytes (VmRSS, VmHWM = the peak resident size).
uint64_t proc_bytes(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return std::stoull(line.substr(key.size() + 1)) * 1024;
  return 0;
}

// A member of the cluster speaking the protocol by hand: a DEALER with the cluster key.
struct KeyHolder {
  zmq::socket_t s{transport::zmq_context(), zmq::socket_type::dealer};
  explicit KeyHolder(const std::string& address, int rcvhwm = 1000) {
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvhwm, rcvhwm);
    if (rcvhwm < 1000) s.set(zmq::sockopt::rcvbuf, 65536);
    transport::secure_client_socket(s, address);
    s.connect(address);
  }
  bool send(const transport::Message& m) {
    auto frames = transport::encode_frames(m);
    for (size_t i = 0; i < frames.size(); ++i)
      if (!s.send(zmq::buffer(frames[i]), i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none))
        return false;
    return true;
  }
  // The next message, or nullopt after timeout_ms.
  std::optional<transport::Message> recv(int timeout_ms) {
    zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms)) != 1) return std::nullopt;
    std::vector<std::string> frames;
    while (true) {
      zmq::message_t part;
      if (!s.recv(part, zmq::recv_flags::dontwait)) break;
      frames.emplace_back(static_cast<const char*>(part.data()), part.size());
      if (!part.more()) break;
    }
    return transport::decode_frames(std::move(frames));
  }
  // Waits for a message of `type` (skipping others) for up to timeout_ms.
  std::optional<transport::Message> expect(cluster::MsgType type, int timeout_ms) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < deadline) {
      const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      auto m = recv(std::max(1, left));
      if (m && m->type == static_cast<uint16_t>(type)) return m;
    }
    return std::nullopt;
  }
  // `session`: a coordinator session id; successive KeyHolders that give the same one are one
  // coordinator to the worker (else the second could be "busy" until the worker notices that the
  // first one's connection closed).
  void hello(const std::string& session = "") {
    cluster::Hello h;
    h.name = "key holder";
    h.session = session;
    ASSERT_TRUE(send(cluster::pack(h)));
    ASSERT_TRUE(expect(cluster::MsgType::Hello, 5000)) << "no Hello back";
  }
};

std::string error_text(const std::optional<transport::Message>& m) {
  return m ? cluster::unpack<cluster::ErrorMsg>(*m).message : std::string("(no Error)");
}

// The real coordinator still gets the right tokens from this worker.
void expect_served(WorkerProcess& w, const std::string& what) {
  LocalReference m("stories260K.gguf");
  RemotePipelineOptions o;
  o.workers = {w.address()};
  o.n_ctx = 256;
  o.connect_timeout_ms = 10000;  // this process's ZeroMQ I/O thread may still be busy with an attack
  RemotePipeline r(*m.file, m.config, o);
  EXPECT_EQ(greedy(r, kPrompt, 8), greedy(*m.local, kPrompt, 8)) << what;
}

cluster::Assign assign_for(const model::GgufFile& f, int64_t n_ctx, int64_t n_layers) {
  cluster::Assign a;
  a.session = 7;
  a.model_hash = cluster::model_fingerprint(f);
  a.model_path = fs::absolute(f.path()).string();
  a.layers = {0, n_layers, true, true};
  a.n_ctx = n_ctx;
  a.file_size = f.file_size();
  a.header_bytes = f.data_offset();
  cluster::HashOptions quiet;  // the stage's tensor digests, as a coordinator sends them (protocol 9)
  quiet.show = false;
  a.tensor_digests = cluster::TensorHashes(f, a.model_hash, quiet)
                         .digests(model::stage_tensor_names(f, model::load_config(f), a.layers));
  return a;
}

// One 1 GiB frame over ZeroMQ: refused by ZMQ_MAXMSGSIZE from its length header, so the worker's
// peak resident size does not move (before the bound: 2 GiB of RSS, ZeroMQ's limit was 8 GiB).
TEST_F(Bounds, OneGiBFrameOverZeroMQAllocatesNothing) {
  WorkerProcess w;
  uint64_t peak0 = 0, peak1 = 0;
  {
    KeyHolder k(w.address());
    k.hello();
    peak0 = proc_bytes(w.child().pid(), "VmHWM");
    ASSERT_GT(peak0, 0u);
    transport::Tensor t;
    t.dtype = transport::WireDType::U8;
    t.shape = {int64_t{1} << 30};
    t.data.assign(size_t{1} << 30, '\0');
    std::vector<transport::Tensor> ts;
    ts.push_back(std::move(t));
    k.send(cluster::pack(cluster::Forward{1, 0, 1, false}, std::move(ts)));
    // This process's ZeroMQ I/O thread seals the GiB with CURVE (seconds on a loaded machine)
    // before its first bytes leave; the worker drops the connection at the frame's length header.
    std::this_thread::sleep_for(std::chrono::seconds(5));
    peak1 = proc_bytes(w.child().pid(), "VmHWM");
  }  // the attacker's socket closes
  std::printf("zeromq: peak RSS %.1f -> %.1f MiB\n", peak0 / 1048576.0, peak1 / 1048576.0);
  // A few MiB: the worker's own allocator noise and ZeroMQ's 8 KiB batches, nothing of the frame.
  EXPECT_LT(peak1, peak0 + (uint64_t{8} << 20)) << "peak RSS " << (peak0 >> 20) << " -> " << (peak1 >> 20) << " MiB";
  EXPECT_TRUE(w.child().running());
  expect_served(w, "after a 1 GiB frame");
}

// The same over the data lane (a ZmqLink moves to the lane after its first round trip): the
// sealed record's length header is checked before its buffer grows, and the refusal is named.
TEST_F(Bounds, OneGiBFrameOnTheDataLaneIsRefusedByItsHeader) {
  WorkerProcess w;
  auto link = transport::connect(w.address());
  auto* z = dynamic_cast<transport::ZmqLink*>(link.get());
  ASSERT_NE(z, nullptr);
  cluster::Hello h;
  h.name = "lane key holder";
  ASSERT_TRUE(link->send(cluster::pack(h)).empty());
  ASSERT_EQ(link->recv(5000).status, transport::RecvStatus::ok);
  for (int i = 0; i < 50 && !z->lane_sending(); ++i) {
    link->send(cluster::pack(cluster::Ping{static_cast<uint64_t>(i), 0}));
    link->recv(100);
  }
  ASSERT_TRUE(z->lane_sending()) << "no data lane";
  const uint64_t peak0 = proc_bytes(w.child().pid(), "VmHWM");
  transport::Tensor t;
  t.dtype = transport::WireDType::U8;
  t.shape = {int64_t{1} << 30};
  t.data.assign(size_t{1} << 30, '\0');
  std::vector<transport::Tensor> ts;
  ts.push_back(std::move(t));
  link->send(cluster::pack(cluster::Forward{1, 0, 1, false}, std::move(ts)));
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline && w.child().err().find("more than 268435456") == std::string::npos)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_NE(w.child().err().find("more than 268435456"), std::string::npos) << w.child().err();
  const uint64_t peak1 = proc_bytes(w.child().pid(), "VmHWM");
  std::printf("lane: peak RSS %.1f -> %.1f MiB\n", peak0 / 1048576.0, peak1 / 1048576.0);
  EXPECT_LT(peak1, peak0 + (uint64_t{8} << 20)) << "peak RSS " << (peak0 >> 20) << " -> " << (peak1 >> 20) << " MiB";
  expect_served(w, "after a 1 GiB lane frame");
}

// A peer that sends 4 MiB Pings and never reads the Pongs: the worker's queue to it holds
// kListenerHwm messages, the next send times out, and that peer is dropped with a logged reason
// and ignored from then on (before: 1.2 GB pinned).
TEST_F(Bounds, PingsNeverReadKeepTheWorkersMemoryBounded) {
  WorkerProcess w;
  KeyHolder k(w.address(), /*rcvhwm=*/1);
  k.hello();
  const uint64_t rss0 = proc_bytes(w.child().pid(), "VmRSS");
  constexpr int kPings = 200;  // 800 MiB of Pongs that nobody reads
  for (int i = 0; i < kPings; ++i) {
    transport::Tensor t;
    t.dtype = transport::WireDType::U8;
    t.shape = {static_cast<int64_t>(cluster::kMaxPingBytes)};
    t.data.assign(cluster::kMaxPingBytes, static_cast<char>(i));
    std::vector<transport::Tensor> ts;
    ts.push_back(std::move(t));
    ASSERT_TRUE(k.send(cluster::pack(cluster::Ping{static_cast<uint64_t>(i), cluster::kMaxPingBytes}, std::move(ts))));
  }
  uint64_t peak = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < deadline && w.child().err().find("does not read its Pongs") == std::string::npos) {
    peak = std::max(peak, proc_bytes(w.child().pid(), "VmRSS"));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(w.child().err().find("does not read its Pongs"), std::string::npos) << w.child().err();
  std::this_thread::sleep_for(std::chrono::seconds(2));  // the rest arrive and are ignored
  peak = std::max(peak, proc_bytes(w.child().pid(), "VmRSS"));
  // Bound: 16 queued Pongs out + 16 Pings in (kListenerHwm each way) of 4 MiB = 128 MiB, plus
  // socket buffers; the unread total is 800 MiB.
  std::printf("unread Pings: RSS %.1f -> peak %.1f MiB\n", rss0 / 1048576.0, peak / 1048576.0);
  EXPECT_LT(peak, rss0 + (uint64_t{192} << 20)) << "RSS " << (rss0 >> 20) << " -> peak " << (peak >> 20) << " MiB";
  expect_served(w, "after unread Pings");
}

// A fake coordinator that starts a weight transfer and never answers: the Assign fails after
// --weight-timeout with the reason, and the real coordinator is served next.
TEST_F(Bounds, UnansweredWeightRequestFailsTheAssignWithinItsTimeout) {
  WorkerProcess w("*", {"--weight-timeout", "2", "--cache-dir", dir_ + "/cache-unanswered"}, /*any_model_path=*/false);
  auto f = model::GgufFile::open(model_path("stories260K.gguf"));
  const auto config = model::load_config(*f);
  {
    KeyHolder k(w.address());
    k.hello();
    const auto t0 = Clock::now();
    ASSERT_TRUE(k.send(cluster::pack(assign_for(*f, 64, config.n_layers))));
    ASSERT_TRUE(k.expect(cluster::MsgType::WeightRequest, 5000)) << "the worker did not ask for weights";
    const auto err = k.expect(cluster::MsgType::Error, 10000);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    EXPECT_NE(error_text(err).find("no weight chunk from the coordinator within 2"), std::string::npos) << error_text(err);
    EXPECT_LT(s, 6.0) << "the worker was wedged for " << s << " s (timeout 2 s)";
  }  // the stalled coordinator owned the worker (roles): it goes, and the next one is served
  expect_served(w, "after an unanswered WeightRequest");
}

// Assign n_ctx 2^24 x 64 slots: the KV cache's size is checked against this host's memory before
// anything is allocated; a Forward past the assigned context, or of more rows than any batch (70000 > kMaxBatchRows), is refused with the
// reason; the worker keeps serving.
TEST_F(Bounds, HugeContextAndOversizedForwardsAreRefusedWithTheReason) {
  WorkerProcess w("*", {"-m", model_path("stories260K.gguf")});
  auto f = model::GgufFile::open(model_path("stories260K.gguf"));
  const auto config = model::load_config(*f);
  KeyHolder k(w.address());
  k.hello();
  cluster::Assign huge = assign_for(*f, int64_t{1} << 24, config.n_layers);
  huge.n_seq = 64;
  const auto t0 = Clock::now();
  ASSERT_TRUE(k.send(cluster::pack(huge)));
  const std::string e = error_text(k.expect(cluster::MsgType::Error, 10000));
  std::printf("refused: %s\n", e.c_str());
  EXPECT_NE(e.find("needs"), std::string::npos) << e;
  EXPECT_NE(e.find("GiB"), std::string::npos) << e;
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 5.0);

  ASSERT_TRUE(k.send(cluster::pack(assign_for(*f, 64, config.n_layers))));
  ASSERT_TRUE(k.expect(cluster::MsgType::Ready, 10000)) << "a sane Assign was not taken";
  auto tokens = [](int64_t n) {
    transport::Tensor t;
    t.dtype = transport::WireDType::I32;
    t.shape = {n};
    t.data.assign(static_cast<size_t>(n) * 4, '\0');
    std::vector<transport::Tensor> ts;
    ts.push_back(std::move(t));
    return ts;
  };
  // 100 rows into a 64-token context: more tensor bytes than the assignment allows (checked first).
  ASSERT_TRUE(k.send(cluster::pack(cluster::Forward{2, 0, 100, false}, tokens(100))));
  const std::string wide = error_text(k.expect(cluster::MsgType::Error, 5000));
  EXPECT_NE(wide.find("Forward carries 400 tensor bytes (at most 256"), std::string::npos) << wide;
  k.hello();  // dropped for that: say Hello again
  // 60 rows from position 10: within the bytes, past the context.
  ASSERT_TRUE(k.send(cluster::pack(cluster::Forward{4, 10, 60, false}, tokens(60))));
  const std::string past = error_text(k.expect(cluster::MsgType::Error, 5000));
  EXPECT_NE(past.find("exceeds the context size 64"), std::string::npos) << past;
  k.hello();  // dropped for that: say Hello again
  ASSERT_TRUE(k.send(cluster::pack(cluster::Forward{3, 0, 70000, false}, tokens(70000))));
  const std::string big = error_text(k.expect(cluster::MsgType::Error, 5000));
  EXPECT_NE(big.find("dropped"), std::string::npos) << big;
  EXPECT_TRUE(w.child().running());
  expect_served(w, "after refused Assign and Forwards");
}

// The Forward scratch check behind on_forward (its memory figure injected): a batch whose scratch
// exceeds what is available is refused with both sizes; a decode step never reads /proc/meminfo.
TEST(BoundsUnit, ForwardScratchIsCheckedAgainstAvailableMemoryOnlyForLargeBatches) {
  auto f = model::GgufFile::open(model_path("stories260K.gguf"));
  const auto c = model::load_config(*f);
  int asked = 0;
  auto one_mib = [&] {
    ++asked;
    return uint64_t{1} << 20;
  };
  EXPECT_EQ(check_forward_scratch(c, true, 1, 1, one_mib), "");
  EXPECT_EQ(asked, 0) << "a one-row Forward read MemAvailable";
  const std::string e = check_forward_scratch(c, true, 65536, 65536, one_mib);
  EXPECT_EQ(asked, 1);
  EXPECT_NE(e.find("Forward of 65536 rows needs"), std::string::npos) << e;
  EXPECT_NE(e.find("this worker has 0.0 GiB available"), std::string::npos) << e;
  EXPECT_EQ(check_forward_scratch(c, true, 65536, 65536, [] { return uint64_t{64} << 30; }), "");
}

// Dropped peers are logged with the reason (an oversized message: its type, size and the bound),
// but a peer cannot flood the log: one line per peer per 10 s, 30 a minute overall, and the next
// line written says how many were held back.
TEST(BoundsUnit, DropLogIsRateLimitedPerPeerAndOverall) {
  DropLog log;
  const auto t0 = DropLog::Clock::now();
  uint64_t held = 99;
  EXPECT_TRUE(log.allow("a", t0, &held));
  EXPECT_EQ(held, 0u);
  for (int i = 1; i <= 100; ++i) EXPECT_FALSE(log.allow("a", t0 + std::chrono::milliseconds(i * 10), &held));
  EXPECT_TRUE(log.allow("b", t0 + std::chrono::seconds(1), &held));  // another peer is heard at once
  EXPECT_EQ(held, 100u);                                               // ... and says what was held back
  EXPECT_TRUE(log.allow("a", t0 + std::chrono::seconds(10), &held));  // 10 s later, "a" again
  EXPECT_EQ(held, 0u);
  // Many peers (each new connection is a new routing id): 30 lines a minute in all.
  int written = 3;
  for (int i = 0; i < 1000; ++i) written += log.allow("p" + std::to_string(i), t0 + std::chrono::seconds(11), &held);
  EXPECT_EQ(written, 30);
  EXPECT_TRUE(log.allow("late", t0 + std::chrono::seconds(61), &held));  // the first lines left the window
  EXPECT_EQ(held, 1000u - 27u);
}

// The same in a real worker: a key holder sending 40 Pings of 5 MiB (the bound is 4 MiB) is
// dropped with the size in one log line, not 40.
TEST_F(Bounds, OversizedMessagesAreLoggedOncePerPeerWithTheirSize) {
  WorkerProcess w;
  {
    KeyHolder k(w.address());
    k.hello();
    for (int i = 0; i < 40; ++i) {
      transport::Tensor t;
      t.dtype = transport::WireDType::U8;
      t.shape = {5 << 20};
      t.data.assign(size_t{5} << 20, '\0');
      std::vector<transport::Tensor> ts;
      ts.push_back(std::move(t));
      ASSERT_TRUE(k.send(cluster::pack(cluster::Ping{static_cast<uint64_t>(i), 0}, std::move(ts))));
    }
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    int answers = 0;
    while (Clock::now() < deadline && answers < 40)
      if (k.recv(200)) ++answers;  // each message is answered with an Error (best effort)
  }
  const std::string log = w.child().err();
  size_t lines = 0;
  for (size_t at = log.find("dropping peer"); at != std::string::npos; at = log.find("dropping peer", at + 1)) ++lines;
  EXPECT_EQ(lines, 1u) << log;
  EXPECT_NE(log.find("Ping carries 5242880"), std::string::npos) << log;
  EXPECT_TRUE(w.child().running());
}

// --cache-max: a worker sent two models whose shards do not fit together keeps its cache under the
// quota by evicting the least recently used one; a model larger than the quota is refused before
// its tensors are fetched. (The 2 x 244 MiB into --cache-max 300M, scaled to test models:
// 12.8 and 25.4 MiB into 30 MiB.)
TEST_F(Bounds, WeightCacheQuotaHoldsByEvictingTheLeastRecentlyUsedModel) {
  const std::string cache = dir_ + "/cache-quota";
  auto run = [&](WorkerProcess& w, const std::string& name) {
    auto f = model::GgufFile::open(model_path(name));
    const auto config = model::load_config(*f);
    RemotePipelineOptions o;
    o.workers = {w.address()};
    o.n_ctx = 64;
    o.connect_timeout_ms = 3000;
    RemotePipeline r(*f, config, o);
    return r.weight_bytes_sent();
  };
  {
    WorkerProcess w("*", {"--cache-dir", cache, "--cache-max", "30M"}, /*any_model_path=*/false);
    EXPECT_GT(run(w, "randk-Q8_0.gguf"), uint64_t{12} << 20);
    EXPECT_LE(disk_usage(cache), uint64_t{30} << 20);
    EXPECT_GT(run(w, "rand15M-q8_0.gguf"), uint64_t{24} << 20);
    const uint64_t du = disk_usage(cache);
    std::printf("cache: du %.1f MiB under --cache-max 30M\n", du / 1048576.0);
    EXPECT_LE(du, uint64_t{30} << 20) << "du " << (du >> 20) << " MiB";
    EXPECT_GT(du, uint64_t{24} << 20) << "the second model is not in the cache";
    EXPECT_NE(w.child().err().find("evicted"), std::string::npos) << w.child().err();
  }
  {
    WorkerProcess w("*", {"--cache-dir", cache + "-small", "--cache-max", "20M"}, /*any_model_path=*/false);
    try {
      run(w, "rand15M-q8_0.gguf");
      ADD_FAILURE() << "a model larger than --cache-max was taken";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("--cache-max is 20.0 MiB"), std::string::npos) << e.what();
    }
    EXPECT_LE(disk_usage(cache + "-small"), uint64_t{20} << 20);
    expect_served(w, "after a refused transfer");
  }
}

// The default worker never opens a path a coordinator names (it asks for the weights instead);
// with --models-dir it opens only paths inside it; an error about a file that is not a GGUF says
// so without its bytes (before: "bad magic 0x726f6f74", the file's first four bytes).
TEST_F(Bounds, ModelPathsOnlyInsideModelsDirAndErrorsWithoutFileBytes) {
  const std::string inside = dir_ + "/models", outside = dir_ + "/secret";
  fs::create_directories(inside);
  fs::create_directories(outside);
  const std::string secret = outside + "/shadow", fake = inside + "/fake.gguf";
  std::ofstream(secret) << "root:$6$secrethash:19000:0:99999:7:::\n";
  std::ofstream(fake) << "root:$6$secrethash:19000:0:99999:7:::\n";
  const int ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT_GE(ino, 0);
  ASSERT_GE(inotify_add_watch(ino, secret.c_str(), IN_OPEN | IN_ACCESS), 0);
  auto f = model::GgufFile::open(model_path("stories260K.gguf"));
  const auto config = model::load_config(*f);
  auto attack = [&](WorkerProcess& w, const std::string& path) {
    KeyHolder k(w.address());
    k.hello("0123456789abcdef0123456789abcdef");  // one coordinator for every attack on this worker
    cluster::Assign a = assign_for(*f, 64, config.n_layers);
    a.model_path = path;
    a.header_bytes = 0;  // "I cannot send weights": only the path is left
    a.file_size = 0;
    EXPECT_TRUE(k.send(cluster::pack(a)));
    return error_text(k.expect(cluster::MsgType::Error, 5000));
  };
  for (const bool with_dir : {false, true}) {
    std::vector<std::string> extra;
    if (with_dir) extra = {"--models-dir", inside};
    WorkerProcess w("*", extra, /*any_model_path=*/false);
    const std::string e = attack(w, secret);
    EXPECT_NE(e.find("no model file"), std::string::npos) << e;
    EXPECT_EQ(e.find("root"), std::string::npos) << e;
    // Through a symlink inside the directory, and with ../: still outside.
    fs::remove(inside + "/link.gguf");
    fs::create_symlink(secret, inside + "/link.gguf");
    EXPECT_NE(attack(w, inside + "/link.gguf").find("no model file"), std::string::npos);
    EXPECT_NE(attack(w, inside + "/../secret/shadow").find("no model file"), std::string::npos);
    if (with_dir) {  // a file inside that is not a GGUF: named as such, none of its bytes
      const std::string bad = attack(w, fake);
      EXPECT_NE(bad.find("not a GGUF file"), std::string::npos) << bad;
      EXPECT_EQ(bad.find("root"), std::string::npos) << bad;
      EXPECT_EQ(bad.find("0x"), std::string::npos) << bad;
    }
  }
  char ev[4096];
  EXPECT_LT(::read(ino, ev, sizeof ev), 0) << "a worker opened the file outside --models-dir";
  ::close(ino);

  // The real coordinator: a default worker is sent the weights; one whose --models-dir holds the
  // model opens it (nothing sent).
  LocalReference m("stories260K.gguf");
  for (const bool with_dir : {false, true}) {
    std::vector<std::string> extra = {"--cache-dir", dir_ + "/cache-paths"};
    if (with_dir) extra.insert(extra.end(), {"--models-dir", fs::canonical(m.file->path()).parent_path().string()});
    WorkerProcess w("*", extra, /*any_model_path=*/false);
    RemotePipelineOptions o;
    o.workers = {w.address()};
    o.n_ctx = 256;
    o.connect_timeout_ms = 3000;
    RemotePipeline r(*m.file, m.config, o);
    EXPECT_EQ(r.weight_bytes_sent() > 0, !with_dir) << "models-dir " << with_dir;
    EXPECT_EQ(greedy(r, kPrompt, 8), greedy(*m.local, kPrompt, 8));
  }
}

}  // namespace
}  // namespace herd::test
