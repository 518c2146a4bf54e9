// Comm in one process: InprocComm, and RingComm over inproc:// and tcp://127.0.0.1 links with one
// thread per rank. The same checks as the process and mpirun tests (tests/engine/comm_checks.h).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>

#include "engine/inproc_comm.h"
#include "engine/ring_comm.h"
#include "engine/ring_wire.h"
#include "engine/tp_sync.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/engine/comm_checks.h"
#include "transport/link.h"
#include "transport/zmq_link.h"

namespace herd::test {
namespace {

using Clock = std::chrono::steady_clock;
using Group = std::vector<std::unique_ptr<Comm>>;

// Runs fn(rank) on one thread per rank; returns each rank's result.
std::vector<std::string> on_threads(int n, const std::function<std::string(int)>& fn) {
  std::vector<std::string> out(n);
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r) ts.emplace_back([&, r] { out[r] = fn(r); });
  for (auto& t : ts) t.join();
  return out;
}

std::string unique_inproc(const std::string& stem) {
  static std::atomic<int> next{0};
  return "inproc://comm-test-" + stem + "-" + std::to_string(next++);
}

// A ring of n ranks over `scheme` ("inproc" or "tcp"), opened concurrently as real ranks would be.
Group ring_group(int n, const std::string& scheme, int timeout_ms = 20000) {
  std::vector<std::unique_ptr<transport::Listener>> listeners(n);
  std::vector<std::string> addrs(n);
  for (int r = 0; r < n; ++r) {
    // tcp: the OS picks a free port on loopback (no port races); inproc: a fresh name.
    listeners[r] = transport::listen(scheme == "tcp" ? "tcp://127.0.0.1:*" : unique_inproc("ring"));
    addrs[r] = listeners[r]->address();
  }
  Group g(n);
  const auto errs = on_threads(n, [&](int r) {
    std::string err;
    auto c = make_ring_comm(addrs, r, &err, timeout_ms, std::move(listeners[r]));
    if (c) c->set_timeout_ms(timeout_ms);
    g[r] = std::move(c);
    return err;
  });
  for (int r = 0; r < n; ++r) EXPECT_TRUE(g[r]) << errs[r];
  return g;
}

Group make_group(const std::string& impl, int n) {
  if (impl == "inproc") return make_inproc_comms(n);
  return ring_group(n, impl == "ring-tcp" ? "tcp" : "inproc");
}

void expect_all_ok(const std::vector<std::string>& res, const std::string& ctx) {
  for (size_t r = 0; r < res.size(); ++r) EXPECT_EQ(res[r], "") << ctx << " rank " << r;
}

class CommImpl : public ::testing::TestWithParam<std::string> {};

TEST_P(CommImpl, ExactSumsGatherBroadcastAndBitIdentityOn2To4Ranks) {
  for (int n : {2, 3, 4}) {
    Group g = make_group(GetParam(), n);
    ASSERT_EQ(g.size(), size_t(n));
    for (auto& c : g) ASSERT_TRUE(c);
    EXPECT_EQ(g[0]->size(), n);
    EXPECT_EQ(g[n - 1]->rank(), n - 1);
    expect_all_ok(on_threads(n, [&](int r) { return run_comm_checks(*g[r]); }), GetParam() + " n=" + std::to_string(n));
  }
}

TEST_P(CommImpl, ArrivalOrderDoesNotChangeTheBits) {
  // Random per-rank sleeps before every collective, several seeds: the results must still be the
  // exact values and the rank-order bits (run_comm_checks checks both).
  for (int n : {3, 4}) {
    Group g = make_group(GetParam(), n);
    for (auto& c : g) ASSERT_TRUE(c);
    for (uint64_t seed : {11, 12, 13}) {
      CommCheckOptions o;
      o.sizes = {1, 33, 16385, 40000};
      o.seed = seed;
      o.max_delay_ms = 4;
      expect_all_ok(on_threads(n, [&](int r) { return run_comm_checks(*g[r], o); }),
                    GetParam() + " n=" + std::to_string(n) + " seed " + std::to_string(seed));
    }
  }
}

TEST_P(CommImpl, SameBitsAsEveryOtherImplementation) {
  // The same random inputs through this implementation and InprocComm: identical bits.
  const int n = 4;
  const size_t len = 70001;
  auto run = [&](Group& g) {
    std::vector<std::vector<float>> d(n, std::vector<float>(len));
    for (int r = 0; r < n; ++r)
      for (size_t i = 0; i < len; ++i) d[r][i] = random_input(99, r, i);
    expect_all_ok(on_threads(n, [&](int r) { return g[r]->all_reduce_sum(d[r].data(), len); }), "");
    for (int r = 1; r < n; ++r) EXPECT_EQ(std::memcmp(d[r].data(), d[0].data(), len * 4), 0) << "rank " << r;
    return d[0];
  };
  Group ref = make_inproc_comms(n), g = make_group(GetParam(), n);
  for (auto& c : g) ASSERT_TRUE(c);
  const auto a = run(ref), b = run(g);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), len * 4), 0);
}

TEST_P(CommImpl, TpSyncF16AndQ8SendTheRoundedFormWithTheBitsOfRoundingThenSumming) {
  // tp_all_reduce's f16 / q8 path all-gathers the encoded partials and sums them decoded in rank
  // order: the result must be, bit for bit, round_for_sync on every rank's input followed by the
  // rank-order sum. Rows of 64 values in 3 rows, values spread over a few decades so the f16 and
  // Q8_0 roundings really change them (checked below: the rounding is not the identity).
  const int64_t n_rows = 3, row = 64;
  const auto n = static_cast<size_t>(n_rows * row);
  for (int ranks : {2, 3}) {
    Group g = make_group(GetParam(), ranks);
    for (auto& c : g) ASSERT_TRUE(c);
    for (TpSync sync : {TpSync::F16, TpSync::Q8}) {
      std::vector<std::vector<float>> in(ranks, std::vector<float>(n)), rounded = in;
      for (int r = 0; r < ranks; ++r)
        for (size_t i = 0; i < n; ++i) in[r][i] = random_input(7, r, i) * (1.0f + static_cast<float>(i % 7) * 13.0f);
      std::vector<const float*> ptrs;
      size_t changed = 0;
      for (int r = 0; r < ranks; ++r) {
        rounded[r] = in[r];
        round_for_sync(sync, rounded[r].data(), n_rows, row);
        for (size_t i = 0; i < n; ++i) changed += rounded[r][i] != in[r][i];
        ptrs.push_back(rounded[r].data());
      }
      EXPECT_GT(changed, n / 2) << tp_sync_name(sync) << ": the rounding should change most values";
      std::vector<float> want(n);
      rank_order_sum(ptrs.data(), ranks, n, want.data());
      // Converted by kernels/fp16.h, and (as a Stage does) by each rank's CPU backend's vector
      // conversions (store_rows / load_rows): the same bits.
      std::vector<std::unique_ptr<Backend>> backends;
      for (int r = 0; r < ranks; ++r) {
        backends.push_back(make_cpu_backend());
        backends.back()->set_threads(1);
      }
      for (bool with_backend : {false, true}) {
        auto got = in;
        expect_all_ok(on_threads(ranks,
                                 [&](int r) {
                                   try {
                                     tp_all_reduce(*g[r], sync, got[r].data(), n_rows, row,
                                                   with_backend ? backends[static_cast<size_t>(r)].get() : nullptr);
                                   } catch (const std::exception& e) {
                                     return std::string(e.what());
                                   }
                                   return std::string();
                                 }),
                      GetParam() + " " + tp_sync_name(sync));
        for (int r = 0; r < ranks; ++r)
          EXPECT_EQ(std::memcmp(got[r].data(), want.data(), n * 4), 0)
              << GetParam() << " " << tp_sync_name(sync) << " ranks " << ranks << " rank " << r
              << (with_backend ? " (backend conversions)" : "");
      }
    }
    on_threads(ranks, [&](int r) {  // together, as real ranks close (each says Bye to its successor)
      g[r].reset();
      return std::string();
    });
  }
  EXPECT_EQ(sync_bytes(TpSync::F32, 2, 64), 512u);
  EXPECT_EQ(sync_bytes(TpSync::F16, 2, 64), 256u);
  EXPECT_EQ(sync_bytes(TpSync::Q8, 2, 64), 2u * 2u * 34u);
}

INSTANTIATE_TEST_SUITE_P(Comm, CommImpl, ::testing::Values("inproc", "ring-inproc", "ring-tcp"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (auto& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

TEST(CommReference, OrderChangesTheBitsSoTheBitwiseCheckHasTeeth) {
  // With these inputs the reverse order gives different bits: a Comm summing in any order but rank
  // order would fail the bitwise checks above.
  const int n = 4;
  const size_t len = 10000;
  std::vector<std::vector<float>> d(n, std::vector<float>(len));
  for (int r = 0; r < n; ++r)
    for (size_t i = 0; i < len; ++i) d[r][i] = random_input(5, r, i);
  std::vector<const float*> fwd = {d[0].data(), d[1].data(), d[2].data(), d[3].data()};
  std::vector<const float*> rev = {d[3].data(), d[2].data(), d[1].data(), d[0].data()};
  std::vector<float> a(len), b(len);
  rank_order_sum(fwd.data(), n, len, a.data());
  rank_order_sum(rev.data(), n, len, b.data());
  size_t differ = 0;
  for (size_t i = 0; i < len; ++i) differ += std::memcmp(&a[i], &b[i], 4) != 0;
  EXPECT_GT(differ, len / 100);
  EXPECT_EQ(a[7], ((d[0][7] + d[1][7]) + d[2][7]) + d[3][7]);
}

TEST(CommInprocFailure, SilentRankIsAnErrorWithinTheTimeout) {
  Group g = make_inproc_comms(3);
  for (auto& c : g) c->set_timeout_ms(300);
  std::vector<float> d0(10, 1.0f), d1(10, 2.0f);
  const auto t0 = Clock::now();
  // Rank 2 never joins.
  const auto res = on_threads(2, [&](int r) { return g[r]->all_reduce_sum(r == 0 ? d0.data() : d1.data(), 10); });
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_NE(res[0], "");
  EXPECT_NE(res[1], "");
  EXPECT_NE(res[0].find("timed out"), std::string::npos) << res[0];
  EXPECT_LT(s, 3.0);
  // The group is broken: the next call fails at once instead of waiting again.
  EXPECT_NE(g[0]->broadcast(d0.data(), 10, 0), "");
}

TEST(CommInprocFailure, DisagreeingRanksAreAnError) {
  Group g = make_inproc_comms(2);
  std::vector<float> a(10), b(11);
  const auto res = on_threads(2, [&](int r) { return g[r]->all_reduce_sum(r ? b.data() : a.data(), r ? 11 : 10); });
  EXPECT_NE(res[0], "");
  EXPECT_NE(res[1], "");
}

TEST(CommRingFailure, DeadRankIsAnErrorForEveryOtherRankWellBeforeTheTimeout) {
  for (const std::string scheme : {"inproc", "tcp"}) {
    Group g = ring_group(3, scheme, /*timeout_ms=*/20000);
    for (auto& c : g) ASSERT_TRUE(c);
    g[2].reset();  // rank 2 dies: its listener and link close
    std::vector<std::vector<float>> d(2, std::vector<float>(100000, 1.0f));
    const auto t0 = Clock::now();
    const auto res = on_threads(2, [&](int r) { return g[r]->all_reduce_sum(d[r].data(), d[r].size()); });
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    EXPECT_NE(res[0], "") << scheme;
    EXPECT_NE(res[1], "") << scheme;
    EXPECT_LT(s, 10.0) << scheme << ": the dead rank must be noticed, not waited out (" << res[0] << " / " << res[1] << ")";
  }
}

// The ring's wire format (engine/ring_wire.h), to play a misbehaving peer.
std::string header(uint32_t seq, uint32_t phase, uint32_t index, uint32_t origin, uint64_t count) {
  return RingComm::Header{seq, phase, index, origin, count}.encode();
}
transport::Message data_msg(uint32_t seq, uint32_t phase, uint32_t index, uint32_t origin, uint64_t count,
                            int64_t tensor_len) {
  transport::Message m;
  m.type = kRingData;
  m.payload = header(seq, phase, index, origin, count);
  transport::Tensor t;
  t.shape = {tensor_len};
  t.data.assign(tensor_len * 4, '\0');
  m.tensors.push_back(t);
  return m;
}

TEST(CommRingFailure, GarbageFromAPeerIsAnErrorNotACrash) {
  // Rank 0 is real; rank 1 is played by the test and answers rank 0's all-reduce with junk.
  const std::vector<std::function<void(transport::Link&)>> junk = {
      [](transport::Link& l) { (void)l.send_frames({"not a herd message"}); },
      [](transport::Link& l) { (void)l.send(data_msg(1, 3, 0, 1, 10, 5)); },    // header says 10, tensor 5
      [](transport::Link& l) { (void)l.send(data_msg(1, 3, 0, 1, 5, 5)); },     // 5 floats, 10 expected
      [](transport::Link& l) { (void)l.send(data_msg(7, 3, 0, 1, 10, 10)); },   // another collective
      [](transport::Link& l) { (void)l.send(data_msg(1, 3, 3, 1, 10, 10)); },   // chunk 3 of 1
      [](transport::Link& l) {
        transport::Message m;
        m.type = kRingData;
        m.payload = "short";
        (void)l.send(m);
      },
  };
  for (size_t c = 0; c < junk.size(); ++c) {
    for (const std::string scheme : {"inproc", "tcp"}) {
      auto l0 = transport::listen(scheme == "tcp" ? "tcp://127.0.0.1:*" : unique_inproc("junk"));
      auto l1 = transport::listen(scheme == "tcp" ? "tcp://127.0.0.1:*" : unique_inproc("junk"));
      const std::vector<std::string> addrs = {l0->address(), l1->address()};
      auto to0 = transport::connect(addrs[0]);
      transport::Message hello;
      hello.type = kRingHello;
      hello.payload = header(0, 1, 0, 1, 2);
      ASSERT_EQ(to0->send(hello), "");
      std::string err;
      std::unique_ptr<RingComm> rank0;
      std::thread forming([&] { rank0 = make_ring_comm(addrs, 0, &err, 5000, std::move(l0)); });
      // Take rank 0's hello and answer it as a rank does (engine/ring_wire.h: kPhaseHelloAck).
      transport::Received h = l1->recv(5000);
      ASSERT_EQ(h.status, transport::RecvStatus::ok);
      transport::Message ack;
      ack.type = kRingHello;
      ack.payload = header(0, kPhaseHelloAck, 0, 1, 2);
      ASSERT_EQ(l1->send(h.peer, ack), "");
      forming.join();
      ASSERT_TRUE(rank0) << err;
      // Rank 0 answered our hello on the link we sent it from.
      transport::Received a = to0->recv(5000);
      ASSERT_EQ(a.status, transport::RecvStatus::ok);
      EXPECT_EQ(a.msg.payload, header(0, kPhaseHelloAck, 0, 0, 2));
      std::vector<float> d(10, 1.0f);
      std::string res;
      std::thread t([&] { res = rank0->all_reduce_sum(d.data(), 10); });
      // Take rank 0's partial sum, then answer with junk.
      for (int got = 0; got < 1;) got += l1->recv(2000).status == transport::RecvStatus::ok;
      junk[c](*to0);
      t.join();
      EXPECT_NE(res, "") << "case " << c << " " << scheme;
    }
  }
}

TEST(CommRingBootstrap, EveryTcpLinkTakesItsDataLaneBeforeTheRingIsReturned) {
  // Each rank's link to its successor gets a lane offer from the successor's listener; the link
  // acts on it only inside its own recv. The ring reads that link while it forms, so every lane is
  // connected before the first collective (before, a ring whose collectives each ended within
  // kPollNextEvery never read it, and all its data went through ZeroMQ for good).
  for (int n : {2, 3}) {
    std::atomic<int> offers{0};
    transport::set_lane_redirect_for_tests([&](uint16_t port) {
      ++offers;
      return port;
    });
    Group g = ring_group(n, "tcp");
    const int seen = offers.load();  // read before any collective
    transport::set_lane_redirect_for_tests({});
    EXPECT_EQ(seen, n) << n << " ranks: lanes connected while the ring formed";
    const auto errs = on_threads(n, [&](int r) {
      std::vector<float> d(4096, static_cast<float>(r + 1));
      if (auto e = g[r]->all_reduce_sum(d.data(), d.size()); !e.empty()) return e;
      return d[4095] == n * (n + 1) / 2.0f ? std::string() : "wrong sum";
    });
    for (int r = 0; r < n; ++r) EXPECT_EQ(errs[r], "") << "rank " << r << " of " << n;
  }
}

TEST(CommRingBootstrap, NobodyListeningOrMismatchedGroupsAreErrors) {
  std::string err;
  auto c = make_ring_comm({unique_inproc("a"), unique_inproc("nobody")}, 0, &err, 200);
  EXPECT_FALSE(c);
  EXPECT_NE(err.find("cannot dial"), std::string::npos) << err;
  // Rank 1 believes in a group of 3: rank 0's hello says 2 ranks.
  const std::string a = unique_inproc("m"), b = unique_inproc("m"), x = unique_inproc("m");
  std::string e0, e1;
  std::unique_ptr<RingComm> c0, c1;
  std::thread t0([&] { c0 = make_ring_comm({a, b}, 0, &e0, 1000); });
  std::thread t1([&] { c1 = make_ring_comm({a, b, x}, 1, &e1, 1000); });
  t0.join();
  t1.join();
  EXPECT_FALSE(c0 && c1);
  EXPECT_NE(e0 + e1, "");
}

}  // namespace
}  // namespace herd::test
