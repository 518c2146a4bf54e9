// The continuous-batching scheduler on a real model (stories260K): requests that run together,
// join while others decode, and have their prompts evaluated a chunk per step give exactly the
// tokens each gives alone through Generator; stop strings, cancellation, the bounded queue and
// refusals.
#include "coordinator/scheduler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "coordinator/generator.h"
#include "coordinator/model_session.h"
#include "tests/test_paths.h"

namespace herd {
namespace {

ModelSession open_model(int64_t n_seq, int64_t n_ctx = 256) {
  SessionOptions o;
  o.n_ctx = n_ctx;
  o.n_threads = 1;
  o.n_seq = n_seq;
  const std::string path = test::model_path("stories260K.gguf");
  return ModelSession::open(path, o);
}

struct Done {
  std::string text;
  StreamEvent last;
};

Done read_all(RequestStream& s) {
  Done d;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    auto e = s.next(100);
    if (!e) continue;
    d.text += e->text;
    if (e->done) {
      d.last = *e;
      return d;
    }
  }
  ADD_FAILURE() << "no end of stream within 60 s";
  return d;
}

SamplerParams sampled(uint64_t seed) {
  SamplerParams p;
  p.temperature = 0.9f;
  p.repeat_penalty = 1.2f;
  p.repeat_last_n = 16;
  p.presence_penalty = 0.3f;
  p.seed = seed;
  return p;
}

TEST(Scheduler, RequestsTogetherGiveTheTokensEachGivesAlone) {
  HERD_REQUIRE_FILE(test::model_path("stories260K.gguf"));
  ModelSession alone = open_model(1);
  const model::Tokenizer& tok = *alone.tokenizer;
  const std::vector<std::string> prompts = {
      "Once upon a time", "The little dog ran to the park and saw a big red ball. He",
      "Lily and Tom were friends. One day they found a box in the garden. Inside the box", "Tim"};
  const std::vector<int64_t> lengths = {40, 25, 33, 18};
  std::vector<std::string> want;
  std::vector<std::vector<int32_t>> encoded;
  for (size_t i = 0; i < prompts.size(); ++i) {
    encoded.push_back(tok.encode(prompts[i], true, false));
    Generator gen(*alone.pipeline, tok);
    gen.reset();
    Sampler s(sampled(100 + i), static_cast<int32_t>(alone.config.n_vocab));
    std::string text;
    gen.generate(encoded.back(), lengths[i], s, [&](const std::string& t) {
      text += t;
      return true;
    });
    want.push_back(text);
  }

  // Four slots, chunks of 8 rows (every prompt but the last is evaluated over several steps while
  // the others decode), six requests: two wait in the queue and join when slots free.
  ModelSession m = open_model(4);
  Scheduler sched(*m.pipeline, *m.tokenizer, SchedulerOptions{8, 8, 0});
  std::vector<std::shared_ptr<RequestStream>> streams;
  std::vector<size_t> which;
  for (size_t k = 0; k < 6; ++k) {
    const size_t i = k % prompts.size();
    streams.push_back(sched.submit({encoded[i], lengths[i], sampled(100 + i), {}}));
    ASSERT_NE(streams.back(), nullptr);
    which.push_back(i);
  }
  for (size_t k = 0; k < streams.size(); ++k) {
    const Done d = read_all(*streams[k]);
    EXPECT_EQ(d.last.error, "");
    EXPECT_EQ(d.text, want[which[k]]) << "request " << k;
    EXPECT_EQ(d.last.completion_tokens, lengths[which[k]]);
    EXPECT_EQ(d.last.finish_reason, "length");
    EXPECT_EQ(d.last.prompt_tokens, static_cast<int64_t>(encoded[which[k]].size()));
  }
  const SchedulerStats st = sched.stats();
  EXPECT_EQ(st.requests_finished, 6u);
  EXPECT_EQ(st.generated_tokens_total, 2u * 40 + 2u * 25 + 33 + 18);
}

TEST(Scheduler, StopStringEndsTheTextBeforeIt) {
  HERD_REQUIRE_FILE(test::model_path("stories260K.gguf"));
  ModelSession m = open_model(2);
  Scheduler sched(*m.pipeline, *m.tokenizer);
  SamplerParams greedy;
  greedy.temperature = 0;
  const auto prompt = m.tokenizer->encode("Once upon a time", true, false);
  const Done full = read_all(*sched.submit({prompt, 30, greedy, {}}));
  ASSERT_GT(full.text.size(), 20u);
  // Stop on a piece of the greedy text that starts past its first 10 bytes.
  const std::string stop = full.text.substr(12, 5);
  const size_t at = full.text.find(stop);
  const Done cut = read_all(*sched.submit({prompt, 30, greedy, {"never appears", stop}}));
  EXPECT_EQ(cut.text, full.text.substr(0, at));
  EXPECT_EQ(cut.last.finish_reason, "stop");
  EXPECT_LT(cut.last.completion_tokens, 30);
  // A stop string that never appears: the whole text, held-back bytes included.
  const Done whole = read_all(*sched.submit({prompt, 30, greedy, {full.text.substr(full.text.size() - 3) + "#"}}));
  EXPECT_EQ(whole.text, full.text);
  EXPECT_EQ(whole.last.finish_reason, "length");
}

TEST(Scheduler, CancelFreesTheSlotAndTheQueueIsBounded) {
  HERD_REQUIRE_FILE(test::model_path("stories260K.gguf"));
  ModelSession m = open_model(1, 2048);
  Scheduler sched(*m.pipeline, *m.tokenizer, SchedulerOptions{256, 1, 0});
  const auto prompt = m.tokenizer->encode("Once upon a time", true, false);
  SamplerParams p;
  p.temperature = 1.5f;  // keeps going: end of text is unlikely before the context is full
  auto first = sched.submit({prompt, 2000, p, {}});
  auto second = sched.submit({prompt, 2000, p, {}});
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  // One slot busy, one waiting: the queue of 1 is full.
  EXPECT_EQ(sched.submit({prompt, 5, p, {}}), nullptr);
  first->cancel();
  second->cancel();
  const Done a = read_all(*first), b = read_all(*second);
  EXPECT_EQ(a.last.finish_reason, "cancelled");
  EXPECT_EQ(b.last.finish_reason, "cancelled");
  EXPECT_LT(a.last.completion_tokens, 2000);
  // Freed: a new request runs to its end.
  const Done c = read_all(*sched.submit({prompt, 5, p, {}}));
  EXPECT_EQ(c.last.completion_tokens, 5);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (sched.stats().slots_busy != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(sched.stats().slots_busy, 0);
  EXPECT_EQ(sched.stats().requests_cancelled, 2u);
}

TEST(Scheduler, RefusesWhatCannotRun) {
  HERD_REQUIRE_FILE(test::model_path("stories260K.gguf"));
  ModelSession m = open_model(1, 32);
  Scheduler sched(*m.pipeline, *m.tokenizer);
  SamplerParams p;
  EXPECT_THROW(sched.submit({std::vector<int32_t>(32, 5), 4, p, {}}), std::length_error);
  EXPECT_THROW(sched.submit({{}, 4, p, {}}), std::invalid_argument);
  EXPECT_THROW(sched.submit({{1, 100000}, 4, p, {}}), std::invalid_argument);
  p.top_p = 0;
  EXPECT_THROW(sched.submit({{1, 2}, 4, p, {}}), std::invalid_argument);
  // Context full: a prompt of 30 in a context of 32 generates what fits, and says "length".
  const Done d = read_all(*sched.submit({std::vector<int32_t>(30, 5), 100, SamplerParams{}, {}}));
  EXPECT_EQ(d.last.finish_reason, "length");
  EXPECT_EQ(d.last.completion_tokens, 3);  // positions 30, 31 evaluated; the third token has no room
}

TEST(StopMatcher, HoldsBackPrefixesAndCutsAtTheEarliestStop) {
  bool stopped = false;
  StopMatcher s({"END", "xyz"});
  EXPECT_EQ(s.push("abc E", stopped), "abc ");  // "E" may start END
  EXPECT_FALSE(stopped);
  EXPECT_EQ(s.push("N", stopped), "");
  EXPECT_EQ(s.push("x", stopped), "EN");  // "ENx" cannot become END; "x" may start xyz
  EXPECT_FALSE(stopped);
  EXPECT_EQ(s.push("yz and more", stopped), "");
  EXPECT_TRUE(stopped);
  StopMatcher t({"ab"});
  EXPECT_EQ(t.push("xa", stopped), "x");
  EXPECT_EQ(t.flush(), "a");
  StopMatcher none({});
  EXPECT_EQ(none.push("anything", stopped), "anything");
  StopMatcher two({"bc", "abcd"});
  EXPECT_EQ(two.push("xabcd", stopped), "x");  // the stop that starts first in the text wins
  EXPECT_TRUE(stopped);
}

}  // namespace
}  // namespace herd
