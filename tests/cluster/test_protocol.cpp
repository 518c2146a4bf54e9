// Wire protocol: every message round-trips; every malformed frame or payload is rejected with a
// ProtocolError (never a crash, never a huge allocation).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>

#include "transport/codec.h"
#include "cluster/protocol.h"
#include "transport/crc32.h"
#include "cluster/sha256.h"
#include "tests/cluster/round_trip.h"

namespace herd::cluster {
namespace {

using namespace transport;


Tensor f32_tensor(std::vector<int64_t> shape) {
  Tensor t;
  t.shape = shape;
  t.data.resize(static_cast<size_t>(t.n_elements()) * 4);
  for (size_t i = 0; i < t.data.size(); ++i) t.data[i] = static_cast<char>(i * 7);
  return t;
}

TEST(Protocol, EveryMessageRoundTrips) {
  Hello h;
  h.role = Role::Worker;
  h.profile.threads = 12;
  h.profile.free_ram_bytes = 123456789012ull;
  h.name = "host-a";
  const Hello h2 = round_trip(h);
  EXPECT_EQ(h2.protocol_version, kProtocolVersion);
  EXPECT_EQ(h2.role, Role::Worker);
  EXPECT_EQ(h2.profile.threads, 12);
  EXPECT_EQ(h2.profile.free_ram_bytes, 123456789012ull);
  EXPECT_EQ(h2.name, "host-a");
  EXPECT_EQ(h2.session, "");
  EXPECT_FALSE(h2.take_over);
  Hello c;  // v2: a coordinator's session id and --take-over
  c.session = std::string(32, 'a');
  c.take_over = true;
  const Hello c2 = round_trip(c);
  EXPECT_EQ(c2.session, c.session);
  EXPECT_TRUE(c2.take_over);
  c.session = std::string(65, 'a');  // bounded on load
  EXPECT_THROW(round_trip(c), ProtocolError);

  Assign a;
  a.session = 7;
  a.model_hash = std::string(64, 'f');
  a.model_path = "/models/x.gguf";
  a.layers = {3, 9, false, true};
  a.n_ctx = 4096;
  a.act_dtype = WireDType::F16;
  a.upstream_token = "up";
  a.next_token = "next";
  const Assign a2 = round_trip(a);
  EXPECT_EQ(a2.upstream_token, "up");
  EXPECT_EQ(a2.next_token, "next");
  EXPECT_EQ(a2.session, 7u);
  EXPECT_EQ(a2.model_hash, a.model_hash);
  EXPECT_EQ(a2.model_path, a.model_path);
  EXPECT_EQ(a2.layers.first, 3);
  EXPECT_EQ(a2.layers.end, 9);
  EXPECT_FALSE(a2.layers.embedding);
  EXPECT_TRUE(a2.layers.output);
  EXPECT_EQ(a2.n_ctx, 4096);
  EXPECT_EQ(a2.act_dtype, WireDType::F16);
  EXPECT_EQ(a2.next_address, "");

  EXPECT_EQ(round_trip(Ready{"ok"}).info, "ok");
  const ErrorMsg e = round_trip(ErrorMsg{42, "boom"});
  EXPECT_EQ(e.request_id, 42u);
  EXPECT_EQ(e.message, "boom");
  Forward two_seqs{9, 17, 3, true};
  two_seqs.pos.push_back(4);
  two_seqs.seq.push_back(2);
  two_seqs.logits.push_back(0);
  const Forward f = round_trip(two_seqs);
  EXPECT_EQ(f.request_id, 9u);
  EXPECT_EQ(f.pos, (std::vector<int32_t>{17, 18, 19, 4}));
  EXPECT_EQ(f.seq, (std::vector<int32_t>{0, 0, 0, 2}));
  EXPECT_EQ(f.logits, (std::vector<uint8_t>{1, 1, 1, 0}));
  EXPECT_EQ(f.n_outputs(), 3);
  EXPECT_EQ(round_trip(Result{5, 2}).n_rows, 2);
  // Row arrays of different lengths, an output flag of 2, an empty batch: refused on load.
  Forward bad = f;
  bad.seq.pop_back();
  EXPECT_THROW(unpack<Forward>(pack(bad)), ProtocolError);
  bad = f;
  bad.logits[0] = 2;
  EXPECT_THROW(unpack<Forward>(pack(bad)), ProtocolError);
  EXPECT_THROW(unpack<Forward>(pack(Forward{})), ProtocolError);
  round_trip(Reset{});
  round_trip(Stop{});
}

TEST(Protocol, TensorFramesRoundTripBitExact) {
  Message m = pack(Forward{1, 0, 2, false}, {f32_tensor({2, 3}), f32_tensor({0})});
  m.tensors[1].dtype = WireDType::I32;
  const Message back = decode_frames(encode_frames(m));
  ASSERT_EQ(back.tensors.size(), 2u);
  EXPECT_EQ(back.tensors[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(back.tensors[0].data, m.tensors[0].data);
  EXPECT_EQ(back.tensors[1].dtype, WireDType::I32);
  EXPECT_EQ(back.tensors[1].n_elements(), 0);
}

std::vector<std::string> good_frames() { return encode_frames(pack(Forward{1, 0, 2, false}, {f32_tensor({2, 4})})); }

void expect_rejected(std::vector<std::string> frames, const std::string& needle) {
  try {
    decode_frames(std::move(frames));
    ADD_FAILURE() << "accepted a malformed message (expected: " << needle << ")";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Protocol, MalformedFramesAreRejected) {
  auto f = good_frames();
  f[3].pop_back();  // data frame one byte short
  expect_rejected(f, "data frame is 31 bytes");
  f = good_frames();
  f[3] += "xx";  // longer
  expect_rejected(f, "data frame is 34 bytes");
  f = good_frames();
  f[2][0] = 9;  // dtype
  expect_rejected(f, "unknown dtype 9");
  f = good_frames();
  f[2][1] = 7;  // rank
  expect_rejected(f, "rank 7");
  f = good_frames();
  f[2][8] = 3;  // dims [3, 4] but n_bytes says 32
  expect_rejected(f, "header says 32 bytes but the shape needs 48");
  f = good_frames();
  const int64_t neg = -2;
  std::memcpy(f[2].data() + 8, &neg, 8);
  expect_rejected(f, "dimension 0 is -2");
  f = good_frames();
  f[2].resize(20);  // truncated header
  expect_rejected(f, "header of 20 bytes");
  f = good_frames();
  f.pop_back();  // missing data frame
  expect_rejected(f, "frames");
  f = good_frames();
  f[0][0] = 'X';
  expect_rejected(f, "bad magic");
  f = good_frames();
  f[0][4] = 99;
  expect_rejected(f, "wire version 99");
  f = good_frames();
  f[0].pop_back();
  expect_rejected(f, "envelope is 11 bytes");
  f = good_frames();
  f[0][8] = 100;  // n_tensors
  expect_rejected(f, "announces 100 tensors");
  expect_rejected({}, "0 frames");
  expect_rejected({"garbage"}, "1 frames");
}

TEST(Protocol, MalformedPayloadsAreRejected) {
  Assign a;
  a.model_hash = "abc";
  a.model_path = "/some/where";
  a.layers = {0, 4, true, true};
  Message m = pack(a);
  EXPECT_NO_THROW(unpack<Assign>(m));
  // Truncated at every length: always a ProtocolError.
  for (size_t cut = 0; cut < m.payload.size(); ++cut) {
    Message t = m;
    t.payload.resize(cut);
    EXPECT_THROW(unpack<Assign>(t), ProtocolError) << "cut at " << cut;
  }
  Message trailing = m;
  trailing.payload += "z";
  EXPECT_THROW(unpack<Assign>(trailing), ProtocolError);
  EXPECT_THROW(unpack<Hello>(m), ProtocolError);  // wrong type

  // A string length of 2^62 must be refused before any allocation.
  Message huge = pack(ErrorMsg{1, "x"});
  const size_t len_at = huge.payload.size() - 1 - 8;
  const uint64_t big = uint64_t{1} << 62;
  std::memcpy(huge.payload.data() + len_at, &big, 8);
  try {
    unpack<ErrorMsg>(huge);
    ADD_FAILURE() << "accepted a 2^62-byte string";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("Error.message is"), std::string::npos) << e.what();
  }

  Hello h;
  Message bad_role = pack(h);
  // Layout: u8 endianness flag, u32 class version, u32 protocol_version, u8 role, profile, name.
  bad_role.payload[1 + 4 + 4] = 9;
  try {
    unpack<Hello>(bad_role);
    ADD_FAILURE() << "accepted role 9";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown role 9"), std::string::npos) << e.what();
  }

  Assign fp16;
  fp16.layers = {0, 4, true, true};
  fp16.act_dtype = WireDType::I32;  // not an activation dtype
  EXPECT_THROW(unpack<Assign>(pack(fp16)), ProtocolError);

  // A layer range no model has, or the embedding on a stage not at layer 0 (or missing there).
  for (const model::LayerRange& r : {model::LayerRange{0, 0, true, true}, model::LayerRange{5, 3, false, true},
                                     model::LayerRange{-1, 3, false, true}, model::LayerRange{2, 4, true, true},
                                     model::LayerRange{0, 4, false, true},
                                     model::LayerRange{0, kMaxLayers + 1, true, true}}) {
    Assign b;
    b.layers = r;
    try {
      unpack<Assign>(pack(b));
      ADD_FAILURE() << "accepted layers " << r.first << ".." << r.end << " embedding " << r.embedding;
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find("Assign: layer range"), std::string::npos) << e.what();
    }
  }
}

// Every bool on the wire is one byte that must be 0 or 1: loading another value straight into a
// bool was undefined behaviour (found by fuzz/fuzz_protocol under UBSan: a Ready whose
// has_next_link byte was 64). Each is now a named ProtocolError.
TEST(Protocol, BoolBytesOtherThanZeroOrOneAreRejected) {
  auto flip_last_bool = [](Message m, size_t at, uint8_t value) {
    EXPECT_LE(static_cast<uint8_t>(m.payload.at(at)), 1) << "offset " << at << " is not a bool";
    m.payload[at] = static_cast<char>(value);
    return m;
  };
  // Ready{""}: portable-binary flag (1) + class version (4) + info length (8), then has_next_link.
  const Message ready = pack(Ready{""});
  EXPECT_NO_THROW(unpack<Ready>(ready));
  for (uint8_t v : {2, 64, 255}) {
    try {
      unpack<Ready>(flip_last_bool(ready, 13, v));
      ADD_FAILURE() << "a bool byte of " << int(v) << " was accepted";
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find("Ready.has_next_link is " + std::to_string(v)), std::string::npos) << e.what();
    }
  }
  // Assign: session (8) + two empty strings (16) + first, end (16) after flag and version (5),
  // then embedding and output.
  Assign a;
  a.layers = {0, 2, true, false};
  const Message assign = pack(a);
  EXPECT_NO_THROW(unpack<Assign>(assign));
  EXPECT_THROW(unpack<Assign>(flip_last_bool(assign, 5 + 8 + 16 + 16, 3)), ProtocolError);
  EXPECT_THROW(unpack<Assign>(flip_last_bool(assign, 5 + 8 + 16 + 16 + 1, 3)), ProtocolError);
}

TEST(Protocol, RandomGarbageNeverCrashes) {
  std::mt19937 rng(1234);
  int rejected = 0;
  for (int it = 0; it < 2000; ++it) {
    std::vector<std::string> frames(1 + rng() % 5);
    for (auto& f : frames) {
      f.resize(rng() % 40);
      for (auto& c : f) c = static_cast<char>(rng());
    }
    if (it % 2 == 0) frames[0] = good_frames()[0];  // a valid envelope, garbage after it
    try {
      Message m = decode_frames(std::move(frames));
      unpack<Forward>(m);
    } catch (const ProtocolError&) {
      ++rejected;
    }
  }
  EXPECT_EQ(rejected, 2000);
}

TEST(Protocol, SamplingForwardAndWeightMessagesRoundTrip) {
  Forward f{3, 10, 1, false};
  f.sample = true;
  f.samples.resize(1);
  SampleSpec& sp = f.samples[0];
  sp.reset = true;
  sp.params.temperature = 0.7f;
  sp.params.top_k = 40;
  sp.params.top_p = 0.9f;
  sp.params.min_p = 0.05f;
  sp.params.repeat_penalty = 1.1f;
  sp.params.repeat_last_n = 64;
  sp.params.frequency_penalty = 0.5f;
  sp.params.presence_penalty = -0.25f;
  sp.draw = 0xDEADBEEFCAFEF00Dull;
  sp.recent = {5, 7, 9};
  const Forward g = round_trip(f);
  ASSERT_TRUE(g.sample);
  ASSERT_EQ(g.samples.size(), 1u);
  const SampleSpec& gp = g.samples[0];
  EXPECT_TRUE(gp.reset);
  EXPECT_EQ(gp.params.temperature, 0.7f);
  EXPECT_EQ(gp.params.top_k, 40);
  EXPECT_EQ(gp.params.top_p, 0.9f);
  EXPECT_EQ(gp.params.min_p, 0.05f);
  EXPECT_EQ(gp.params.repeat_penalty, 1.1f);
  EXPECT_EQ(gp.params.repeat_last_n, 64);
  EXPECT_EQ(gp.params.frequency_penalty, 0.5f);
  EXPECT_EQ(gp.params.presence_penalty, -0.25f);
  EXPECT_EQ(gp.draw, 0xDEADBEEFCAFEF00Dull);
  EXPECT_EQ(gp.recent, (std::vector<int32_t>{5, 7, 9}));
  // A decode step carries only the draw: 9 bytes, no parameters, no window.
  Forward step = f;
  step.samples[0] = SampleSpec{};
  step.samples[0].draw = 77;
  const Forward h = round_trip(step);
  EXPECT_FALSE(h.samples[0].reset);
  EXPECT_EQ(h.samples[0].draw, 77u);
  EXPECT_TRUE(h.samples[0].recent.empty());
  EXPECT_EQ(pack(f).payload.size() - pack(step).payload.size(), 8 * 4 + 8 + 3 * 4u);  // 8 params, window size, ids
  const Result r = round_trip(Result{3, 2, {1234, 7}});
  EXPECT_EQ(r.tokens, (std::vector<int32_t>{1234, 7}));
  EXPECT_EQ(r.n_rows, 2);

  // One sample spec per output row, exactly.
  Forward extra = f;
  extra.samples.push_back(SampleSpec{});
  EXPECT_THROW(unpack<Forward>(pack(extra)), ProtocolError);
  // A history length of 2^40 is refused before any allocation (it is the u64 before 3 i32s and
  // the empty stage_times' count).
  Message huge = pack(f);
  const uint64_t big = uint64_t{1} << 40;
  std::memcpy(huge.payload.data() + huge.payload.size() - 8 - 12 - 8, &big, 8);
  try {
    unpack<Forward>(huge);
    ADD_FAILURE() << "accepted a 2^40-entry history";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("SampleSpec.recent"), std::string::npos) << e.what();
  }

  Assign a;
  a.layers = {2, 5, false, false};
  a.file_size = 94000000;
  a.header_bytes = 1234567;
  a.n_seq = 8;
  a.kv_type = DType::Q8_0;
  const Assign a2 = round_trip(a);
  EXPECT_EQ(a2.file_size, 94000000u);
  EXPECT_EQ(a2.header_bytes, 1234567u);
  EXPECT_EQ(a2.n_seq, 8);
  EXPECT_EQ(a2.kv_type, DType::Q8_0);
  a.kv_type = DType::Q4_0;  // not a KV type
  EXPECT_THROW(unpack<Assign>(pack(a)), ProtocolError);
  a.kv_type = DType::F16;
  a.n_seq = 0;
  EXPECT_THROW(unpack<Assign>(pack(a)), ProtocolError);

  const WeightRequest q = round_trip(WeightRequest{4, 1 << 20, 4096});
  EXPECT_EQ(q.session, 4u);
  EXPECT_EQ(q.offset, 1u << 20);
  EXPECT_EQ(q.length, 4096u);
  EXPECT_THROW(unpack<WeightRequest>(pack(WeightRequest{4, 0, 0})), ProtocolError);
  EXPECT_THROW(unpack<WeightRequest>(pack(WeightRequest{4, 0, kMaxWeightChunk + 1})), ProtocolError);

  Tensor bytes{WireDType::U8, {5}, "hello"};
  Message m = decode_frames(encode_frames(pack(WeightChunk{4, 99, crc32("hello", 5)}, {bytes})));
  const WeightChunk c = unpack<WeightChunk>(m);
  EXPECT_EQ(c.offset, 99u);
  EXPECT_EQ(c.crc32, crc32("hello", 5));
  ASSERT_EQ(m.tensors.size(), 1u);
  EXPECT_EQ(m.tensors[0].dtype, WireDType::U8);
  EXPECT_EQ(m.tensors[0].data, "hello");
}

TEST(Crc32, KnownVectorsAndIncremental) {
  EXPECT_EQ(crc32("", 0), 0u);
  EXPECT_EQ(crc32("123456789", 9), 0xCBF43926u);
  EXPECT_EQ(crc32("The quick brown fox jumps over the lazy dog", 43), 0x414FA339u);
  std::string big(100003, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 + (i >> 7));
  const uint32_t whole = crc32(big.data(), big.size());
  EXPECT_EQ(crc32(big.data() + 777, big.size() - 777, crc32(big.data(), 777)), whole);
  // Byte-at-a-time (the table path only) agrees with the sliced path.
  uint32_t c = 0;
  for (char ch : big) c = crc32(&ch, 1, c);
  EXPECT_EQ(c, whole);
  big[50000] ^= 1;
  EXPECT_NE(crc32(big.data(), big.size()), whole);
}

TEST(Sha256, KnownVectors) {
  auto hex = [](const std::string& s) {
    Sha256 h;
    h.update(s.data(), s.size());
    return h.hex_digest();
  };
  EXPECT_EQ(hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// Protocol 6: each stage appends its compute/overhead time to the Forward; the last copies them
// into the Result; Ready says what the stage runs on and holds.
TEST(Protocol, StageTimesAndStageDescriptionRoundTrip) {
  Forward f{7, 0, 3, false};
  EXPECT_TRUE(round_trip(f).stage_times.empty());  // as the coordinator sends it
  f.stage_times = {{1500, 20}, {0, 0}, {kMaxStageMicros, kMaxStageMicros}};
  EXPECT_EQ(round_trip(f).stage_times, f.stage_times);
  Result r{7, 1};
  r.stage_times = f.stage_times;
  const Result r2 = round_trip(r);
  EXPECT_EQ(r2.stage_times, f.stage_times);
  EXPECT_EQ(r2.n_rows, 1);
  // 16 bytes a stage on the wire.
  EXPECT_EQ(pack(f).payload.size() - pack(Forward{7, 0, 3, false}).payload.size(), 3 * 16u);

  Ready ready{"layers 0-3"};
  ready.device = "cpu-avx2-q8, 4 threads";
  ready.memory_bytes = 123456789;
  const Ready ready2 = round_trip(ready);
  EXPECT_EQ(ready2.info, "layers 0-3");
  EXPECT_EQ(ready2.device, "cpu-avx2-q8, 4 threads");
  EXPECT_EQ(ready2.memory_bytes, 123456789u);
}

void expect_protocol_error(const Message& m, bool result, const std::string& needle) {
  try {
    if (result)
      unpack<Result>(m);
    else
      unpack<Forward>(m);
    ADD_FAILURE() << "accepted a payload that should fail with '" << needle << "'";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Protocol, HostileStageTimesAreRefused) {
  for (const bool result : {false, true}) {
    const Message good = result ? pack(Result{7, 1, {3}}) : pack(Forward{7, 0, 3, false});
    const std::string field = result ? "Result.stage_times" : "Forward.stage_times";
    // The count is the payload's last u64 while it is empty (a Forward's, since v5, followed by
    // its device_hop byte): a huge one, one past the bound (refused before any entry is read or
    // allocated), and a count whose entries are missing.
    const size_t count_at = good.payload.size() - 8 - (result ? 0 : 1);
    for (const uint64_t n : {uint64_t{1} << 62, uint64_t{kMaxStages} + 1}) {
      Message m = good;
      std::memcpy(m.payload.data() + count_at, &n, 8);
      expect_protocol_error(m, result, field + " has " + std::to_string(n) + " entries");
    }
    Message truncated = good;
    const uint64_t two = 2;
    std::memcpy(truncated.payload.data() + count_at, &two, 8);
    truncated.payload += std::string(16, '\0');  // one entry of two
    expect_protocol_error(truncated, result, "payload");
    // A time beyond an hour per batch.
    Forward f{7, 0, 3, false};
    f.stage_times = {{1, 2}, {kMaxStageMicros + 1, 0}};
    Result r{7, 1, {3}};
    r.stage_times = {{0, kMaxStageMicros + 1}};
    expect_protocol_error(result ? pack(r) : pack(f), result, field + ": ");
    // Versions: an older Forward/Result (protocol 5, no stage times) and a newer one are refused.
    // Layout: u8 endianness flag, then the u32 class version.
    for (const uint32_t v : {3u, result ? 5u : 6u}) {  // (Forward v5: the device_hop flag)
      Message m = good;
      std::memcpy(m.payload.data() + 1, &v, 4);
      expect_protocol_error(m, result, v == 3 ? "predates protocol 6" : "newer than this build");
    }
  }
  // Ready's memory is bounded too (a status page shows it; nothing allocates it).
  Ready ready{"x"};
  ready.memory_bytes = kMaxStageBytes + 1;
  EXPECT_THROW(unpack<Ready>(pack(ready)), ProtocolError);
  ready.memory_bytes = 0;
  ready.device = std::string(257, 'd');
  EXPECT_THROW(unpack<Ready>(pack(ready)), ProtocolError);
}

}  // namespace
// Protocol 10: the tensor-parallel section of an Assign, Ready's ring address and TpRing round-trip,
// and every hostile value is refused on load (a ProtocolError naming the field), before use.
TEST(Protocol, TensorParallelFieldsRoundTripAndHostileValuesAreRefused) {
  Assign a;
  a.layers = {0, 2, true, false};
  a.next_address = "tcp://h:1";
  a.tp.rank = 1;
  a.tp.size = 3;
  a.tp.weights = {1.5, 2, 3e9};
  a.tp.sync = 2;
  a.tp.next_addresses = {"tcp://h:1", "tcp://h:2", "tcp://h:3"};
  a.tp.ring_timeout_ms = 4000;
  EXPECT_EQ(round_trip(a).tp, a.tp);
  Assign none = a;
  none.tp = {};
  EXPECT_EQ(round_trip(none).tp, TpAssign{});  // no TP: size 1, no weights
  none.tp.weights = {1.0};
  EXPECT_THROW(unpack<Assign>(pack(none)), ProtocolError);
  auto refused = [&](const std::function<void(TpAssign&)>& spoil, const std::string& words) {
    Assign b = a;
    spoil(b.tp);
    try {
      unpack<Assign>(pack(b));
      ADD_FAILURE() << "accepted: " << words;
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  refused([](TpAssign& t) { t.rank = 3; }, "tensor-parallel rank 3 of 3");
  refused([](TpAssign& t) { t.size = 0; t.rank = 0; }, "rank 0 of 0");
  refused([](TpAssign& t) { t.size = kMaxTpRanks + 1; }, "of 257");
  refused([](TpAssign& t) { t.weights.pop_back(); }, "2 tensor-parallel weights for 3 ranks");
  refused([](TpAssign& t) { t.weights[1] = std::nan(""); }, "weight");
  refused([](TpAssign& t) { t.weights[1] = -1; }, "weight");
  refused([](TpAssign& t) { t.weights[1] = 0; }, "weight");
  refused([](TpAssign& t) { t.weights[1] = INFINITY; }, "weight");
  refused([](TpAssign& t) { t.sync = 3; }, "sync 3");
  refused([](TpAssign& t) { t.ring_timeout_ms = 0; }, "ring timeout 0");
  refused([](TpAssign& t) { t.ring_timeout_ms = -5; }, "ring timeout");
  refused([](TpAssign& t) { t.next_addresses.assign(kMaxTpRanks + 1, "tcp://h:1"); }, "Assign.tp.next_addresses has 257");
  refused([](TpAssign& t) { t.next_addresses[0] = std::string(kMaxAddress + 1, 'a'); }, "Assign.tp.next_addresses is");

  Ready r{"x"};
  r.ring_address = "tcp://0.0.0.0:5";
  EXPECT_EQ(round_trip(r).ring_address, r.ring_address);
  r.ring_address = std::string(kMaxAddress + 1, 'a');
  EXPECT_THROW(unpack<Ready>(pack(r)), ProtocolError);

  TpRing t;
  t.session = 9;
  t.addresses = {"tcp://a:1", "tcp://b:2"};
  const TpRing t2 = round_trip(t);
  EXPECT_EQ(t2.session, 9u);
  EXPECT_EQ(t2.addresses, t.addresses);
  t.addresses = {"tcp://a:1"};
  EXPECT_THROW(unpack<TpRing>(pack(t)), ProtocolError);  // a ring of one is not a ring
  t.addresses.assign(kMaxTpRanks + 1, "tcp://a:1");
  EXPECT_THROW(unpack<TpRing>(pack(t)), ProtocolError);
  // A claimed count of 2^60 addresses (after the flag and version, 5 bytes, and the session, 8) is
  // refused before anything is allocated.
  t.addresses = {"tcp://a:1", "tcp://b:2"};
  Message m = pack(t);
  const uint64_t huge = uint64_t{1} << 60;
  std::memcpy(m.payload.data() + 13, &huge, sizeof huge);
  try {
    unpack<TpRing>(m);
    ADD_FAILURE() << "accepted 2^60 addresses";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("TpRing.addresses has 1152921504606846976 entries"), std::string::npos) << e.what();
  }
  EXPECT_EQ(std::string(msg_type_name(static_cast<uint16_t>(MsgType::TpRing))), "TpRing");
}

// Protocol 11: stage hops between devices. HopOffer carries exactly engine/nccl_bootstrap.h's
// checked id message (the receiver decodes it), HopAnswer one of four states, Forward v5 the flag
// that its hidden state follows on the hop; anything else is refused on load.
TEST(Protocol, DeviceHopMessagesRoundTripAndMalformedOnesAreRefused) {
  NcclIdMessage id;
  id.group_tag = nccl_group_tag("hop");
  id.nranks = 2;
  id.id[0] = 1;
  id.id[127] = 0xfe;
  const HopOffer o{encode_nccl_id(id), 0x0123456789abcdefull, true};
  const HopOffer o2 = round_trip(o);
  EXPECT_EQ(o2.id, o.id);
  EXPECT_EQ(o2.host, o.host);
  EXPECT_TRUE(o2.across_hosts);
  NcclIdMessage back;
  EXPECT_EQ(decode_nccl_id(o2.id, id.group_tag, 2, &back), "");
  EXPECT_EQ(back.id, id.id);
  EXPECT_THROW(pack(HopOffer{"short"}), ProtocolError);  // not even sent
  // On the wire the id's length (after the flag and version, 5 bytes) must be 152: shorter,
  // longer, or a huge claim are refused before anything is allocated; so are missing bytes.
  for (const uint64_t n : {uint64_t{0}, uint64_t{151}, uint64_t{153}, uint64_t{1} << 60}) {
    Message m = pack(o);
    std::memcpy(m.payload.data() + 5, &n, sizeof n);
    try {
      unpack<HopOffer>(m);
      ADD_FAILURE() << "accepted an id of " << n << " bytes";
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find("HopOffer: an id of " + std::to_string(n) + " bytes"), std::string::npos)
          << e.what();
    }
  }
  Message cut = pack(o);
  cut.payload.pop_back();
  EXPECT_THROW(unpack<HopOffer>(cut), ProtocolError);
  Message longer = pack(o);
  longer.payload += "x";
  EXPECT_THROW(unpack<HopOffer>(longer), ProtocolError);
  Message not_bool = pack(o);  // across_hosts is the last byte: 0 or 1 only
  not_bool.payload.back() = 2;
  EXPECT_THROW(unpack<HopOffer>(not_bool), ProtocolError);

  for (const HopState st : {HopState::Declined, HopState::Accepted, HopState::Joined, HopState::Failed}) {
    const HopAnswer a2 = round_trip(HopAnswer{st, "why"});
    EXPECT_EQ(a2.state, st);
    EXPECT_EQ(a2.reason, "why");
  }
  Message bad_state = pack(HopAnswer{HopState::Failed, ""});
  bad_state.payload[5] = 4;
  EXPECT_THROW(unpack<HopAnswer>(bad_state), ProtocolError);
  EXPECT_THROW(unpack<HopAnswer>(pack(HopAnswer{HopState::Failed, std::string(1025, 'r')})), ProtocolError);

  Forward f{5, 0, 2, false};
  EXPECT_FALSE(round_trip(f).device_hop);
  f.device_hop = true;
  EXPECT_TRUE(round_trip(f).device_hop);
  Message flag = pack(f);
  flag.payload.back() = 2;  // the flag is the last byte: a bool is 0 or 1
  EXPECT_THROW(unpack<Forward>(flag), ProtocolError);

  EXPECT_EQ(std::string(msg_type_name(static_cast<uint16_t>(MsgType::HopOffer))), "HopOffer");
  EXPECT_EQ(std::string(msg_type_name(static_cast<uint16_t>(MsgType::HopAnswer))), "HopAnswer");
  EXPECT_EQ(kProtocolVersion, 11u);
}

}  // namespace herd::cluster
