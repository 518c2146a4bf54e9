// The NCCL bootstrap message (engine/nccl_bootstrap.h) and its exchange over real Comms (InprocComm,
// RingComm on 127.0.0.1): host-only, no GPU, no NCCL.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <thread>

#include "engine/inproc_comm.h"
#include "engine/nccl_bootstrap.h"
#include "engine/ring_comm.h"
#include "transport/link.h"

namespace herd::test {
namespace {

NcclId sample_id(uint8_t seed) {
  NcclId id;
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(seed * 37 + i * 101 + (i >> 3));
  return id;
}

NcclIdMessage sample(uint64_t tag = 0x1234'5678'9abc'def0ull, int nranks = 3) {
  NcclIdMessage m;
  m.group_tag = tag;
  m.nranks = nranks;
  m.rank = 0;
  m.id = sample_id(7);
  return m;
}

// The error decode gives for `bytes` expected as a message for (tag, nranks); "" when accepted.
std::string decode_error(const std::string& bytes, uint64_t tag, int nranks) {
  NcclIdMessage out;
  return decode_nccl_id(bytes, tag, nranks, &out);
}

TEST(NcclIdMessage, RoundTripKeepsEveryField) {
  for (int nranks : {1, 2, 8, 1000}) {
    NcclIdMessage m = sample(nccl_group_tag("tcp://a:1,tcp://b:2#gen3"), nranks);
    m.rank = nranks - 1;
    const std::string b = encode_nccl_id(m);
    ASSERT_EQ(b.size(), kNcclIdMessageBytes);
    EXPECT_EQ(b.substr(0, 4), "HNID");
    NcclIdMessage out;
    ASSERT_EQ(decode_nccl_id(b, m.group_tag, nranks, &out), "");
    EXPECT_EQ(out.group_tag, m.group_tag);
    EXPECT_EQ(out.nranks, nranks);
    EXPECT_EQ(out.rank, nranks - 1);
    EXPECT_EQ(out.id, m.id);
  }
}

TEST(NcclIdMessage, GroupTagsOfDifferentGroupsDiffer) {
  EXPECT_NE(nccl_group_tag("tcp://h:1,tcp://h:2"), nccl_group_tag("tcp://h:1,tcp://h:3"));
  EXPECT_NE(nccl_group_tag("g#1"), nccl_group_tag("g#2"));
  EXPECT_EQ(nccl_group_tag("same"), nccl_group_tag("same"));
}

TEST(NcclIdMessage, EveryMalformedCaseIsAnErrorNamingIt) {
  const NcclIdMessage m = sample();
  const std::string good = encode_nccl_id(m);
  const uint64_t tag = m.group_tag;
  auto with = [&](size_t at, const void* v, size_t n) {
    std::string b = good;
    std::memcpy(b.data() + at, v, n);
    return b;
  };
  EXPECT_NE(decode_error(good.substr(0, 151), tag, 3).find("truncated: 151 bytes"), std::string::npos);
  EXPECT_NE(decode_error("", tag, 3).find("truncated: 0 bytes"), std::string::npos);
  EXPECT_NE(decode_error(good + "x", tag, 3).find("oversize: 153 bytes"), std::string::npos);
  EXPECT_NE(decode_error(with(0, "HNIX", 4), tag, 3).find("wrong magic"), std::string::npos);
  const uint16_t v2 = 2;
  EXPECT_NE(decode_error(with(4, &v2, 2), tag, 3).find("unsupported version 2"), std::string::npos);
  const uint16_t one = 1;
  EXPECT_NE(decode_error(with(6, &one, 2), tag, 3).find("reserved"), std::string::npos);
  const uint32_t zero = 0, three = 3, huge = 0xffffffffu;
  EXPECT_NE(decode_error(with(16, &zero, 4), tag, 3).find("nranks 0 is not a group size"), std::string::npos);
  EXPECT_NE(decode_error(with(16, &huge, 4), tag, 3).find("is not a group size"), std::string::npos);
  EXPECT_NE(decode_error(with(20, &three, 4), tag, 3).find("rank 3 outside the group of nranks 3"), std::string::npos);
  EXPECT_NE(decode_error(good, tag, 4).find("nranks mismatch: the id is for a group of 3, this rank's group has 4"),
            std::string::npos);
  EXPECT_NE(decode_error(good, tag + 1, 3).find("group tag mismatch"), std::string::npos);
  // Every refusal says what it is about.
  EXPECT_EQ(decode_error(good, tag + 1, 3).rfind("NCCL id message: ", 0), 0u);
}

TEST(NcclIdMessage, HostileBytesNeverCrashAndAreRefused) {
  std::mt19937_64 rng(42);
  const NcclIdMessage m = sample();
  const std::string good = encode_nccl_id(m);
  int accepted = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string b;
    if (iter % 2 == 0) {  // pure garbage of any length around the message size
      b.resize(rng() % 320);
      for (auto& c : b) c = static_cast<char>(rng());
    } else {  // the real message with a few bytes flipped (deeper past the early checks)
      b = good;
      for (int k = 0, flips = 1 + static_cast<int>(rng() % 4); k < flips; ++k) b[rng() % b.size()] ^= static_cast<char>(1 + rng() % 255);
    }
    NcclIdMessage out;
    const std::string e = decode_nccl_id(b, m.group_tag, 3, &out);
    if (e.empty()) {
      // Accepted only when the header still names this group (magic, version, tag, nranks) and the
      // sender's rank is inside it; flips inside the id are not the header's business.
      ++accepted;
      EXPECT_EQ(b.substr(0, 20), good.substr(0, 20));
      EXPECT_LT(out.rank, 3);
    } else {
      EXPECT_EQ(e.rfind("NCCL id message: ", 0), 0u) << e;
    }
  }
  EXPECT_GT(accepted, 0);  // flips inside the id itself are not the header's business
}

TEST(NcclIdPacking, F32PackingIsLosslessAndRefusesNonPairs) {
  std::string bytes(kNcclIdMessageBytes, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(255 - i);  // includes 0xff 0xff
  bytes[10] = bytes[11] = static_cast<char>(0xff);
  const std::vector<float> f = pack_bytes_f32(bytes);
  ASSERT_EQ(f.size(), kNcclIdFloats);
  std::string back;
  ASSERT_EQ(unpack_bytes_f32(f.data(), f.size(), &back), "");
  EXPECT_EQ(back, bytes);
  for (float bad : {-1.0f, 65536.0f, 0.5f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> g = f;
    g[5] = bad;
    EXPECT_NE(unpack_bytes_f32(g.data(), g.size(), &back).find("float 5 is not a packed byte pair"), std::string::npos) << bad;
  }
}

// fn(rank) on one thread per rank.
std::vector<std::string> on_threads(int n, const std::function<std::string(int)>& fn) {
  std::vector<std::string> out(static_cast<size_t>(n));
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r) ts.emplace_back([&, r] { out[static_cast<size_t>(r)] = fn(r); });
  for (auto& t : ts) t.join();
  return out;
}

void expect_exchange(std::vector<std::unique_ptr<Comm>>& g) {
  const int n = static_cast<int>(g.size());
  const uint64_t tag = nccl_group_tag("test-group");
  std::vector<NcclId> ids(static_cast<size_t>(n));
  ids[0] = sample_id(99);
  const auto errs = on_threads(n, [&](int r) { return exchange_nccl_id(*g[static_cast<size_t>(r)], tag, &ids[static_cast<size_t>(r)]); });
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(errs[static_cast<size_t>(r)], "") << "rank " << r;
    EXPECT_EQ(ids[static_cast<size_t>(r)], sample_id(99)) << "rank " << r;
  }
}

TEST(NcclIdExchange, OverInprocCommOf3Ranks) {
  auto g = make_inproc_comms(3);
  expect_exchange(g);
}

TEST(NcclIdExchange, OverRingCommOnLoopbackTcp) {
  const int n = 3;
  std::vector<std::unique_ptr<transport::Listener>> listeners(n);
  std::vector<std::string> addrs(n);
  for (int r = 0; r < n; ++r) {
    listeners[static_cast<size_t>(r)] = transport::listen("tcp://127.0.0.1:*");
    addrs[static_cast<size_t>(r)] = listeners[static_cast<size_t>(r)]->address();
  }
  std::vector<std::unique_ptr<Comm>> g(n);
  const auto errs = on_threads(n, [&](int r) {
    std::string err;
    auto c = make_ring_comm(addrs, r, &err, 20000, std::move(listeners[static_cast<size_t>(r)]));
    g[static_cast<size_t>(r)] = std::move(c);
    return err;
  });
  for (int r = 0; r < n; ++r) ASSERT_TRUE(g[static_cast<size_t>(r)]) << errs[static_cast<size_t>(r)];
  expect_exchange(g);
}

TEST(NcclIdExchange, RanksOfAnotherGroupAllFailNamingTheTag) {
  auto g = make_inproc_comms(3);
  std::vector<NcclId> ids(3);
  ids[0] = sample_id(1);
  // Rank 2 thinks it is in another group: it refuses the id, and ranks 0 and 1 learn that it did.
  const auto errs = on_threads(3, [&](int r) {
    return exchange_nccl_id(*g[static_cast<size_t>(r)], nccl_group_tag(r == 2 ? "other" : "this"), &ids[static_cast<size_t>(r)]);
  });
  EXPECT_NE(errs[2].find("rank 2: NCCL id message: group tag mismatch"), std::string::npos) << errs[2];
  for (int r : {0, 1}) EXPECT_NE(errs[static_cast<size_t>(r)].find("1 rank(s) of 3 refused rank 0's id"), std::string::npos) << errs[static_cast<size_t>(r)];
}

TEST(NcclIdExchange, ARootWithoutAnIdFailsEveryRankAtOnce) {
  auto g = make_inproc_comms(3);
  std::vector<NcclId> ids(3);
  const auto errs = on_threads(3, [&](int r) {
    return exchange_nccl_id(*g[static_cast<size_t>(r)], nccl_group_tag("g"), &ids[static_cast<size_t>(r)],
                            r == 0 ? "ncclGetUniqueId: unhandled system error" : "");
  });
  EXPECT_EQ(errs[0], "NCCL id exchange: rank 0 made no id: ncclGetUniqueId: unhandled system error");
  for (int r : {1, 2}) EXPECT_EQ(errs[static_cast<size_t>(r)], "NCCL id exchange: rank 0 made no id (its error says why)");
}

}  // namespace
}  // namespace herd::test
