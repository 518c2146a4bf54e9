// NcclComm's host-side decisions (engine/nccl_poll.h), with a fake clock: what NcclComm does with
// ncclCommGetAsyncError / cudaStreamQuery answers, checked without a GPU.
#include <gtest/gtest.h>

#include <limits>
#include <vector>

#include "engine/nccl_poll.h"

namespace herd::test {
namespace {

TEST(NcclPoll, JudgeStepErrorsThenDoneThenDeadline) {
  using A = NcclAsync;
  using S = StreamState;
  using V = StepVerdict;
  // Errors win, even past the deadline and even with the stream drained.
  EXPECT_EQ(judge_step(A::Error, S::Done, 0, 100), V::Failed);
  EXPECT_EQ(judge_step(A::Ok, S::Error, 0, 100), V::Failed);
  EXPECT_EQ(judge_step(A::InProgress, S::Error, 500, 100), V::Failed);
  // Done needs the communicator settled AND its stream work finished (or none).
  EXPECT_EQ(judge_step(A::Ok, S::Done, 0, 100), V::Done);
  EXPECT_EQ(judge_step(A::Ok, S::NotUsed, 0, 100), V::Done);
  EXPECT_EQ(judge_step(A::Ok, S::Done, 1e9, 100), V::Done);  // finished late still counts as finished
  EXPECT_EQ(judge_step(A::InProgress, S::Done, 0, 100), V::KeepWaiting);
  EXPECT_EQ(judge_step(A::Ok, S::NotReady, 0, 100), V::KeepWaiting);
  EXPECT_EQ(judge_step(A::InProgress, S::NotUsed, 99.9, 100), V::KeepWaiting);
  // The deadline: at timeout_ms exactly, and after.
  EXPECT_EQ(judge_step(A::InProgress, S::NotUsed, 100, 100), V::TimedOut);
  EXPECT_EQ(judge_step(A::Ok, S::NotReady, 250, 100), V::TimedOut);
}

TEST(NcclPoll, SleepBackoffIsBoundedAndNeverShrinks) {
  int prev = 0;
  for (int p = 0; p < 100; ++p) {
    const int us = poll_sleep_us(p);
    EXPECT_GE(us, prev) << p;
    EXPECT_LE(us, 1000) << p;
    prev = us;
  }
  EXPECT_EQ(poll_sleep_us(0), 0);
  EXPECT_EQ(poll_sleep_us(8), 5);
  EXPECT_EQ(poll_sleep_us(99), 1000);
  EXPECT_EQ(poll_sleep_us(std::numeric_limits<int>::max()), 1000);
}

// A fake clock that advances only when the loop sleeps (plus 1 ms per poll with `tick`).
struct FakeClock {
  double t = 0, tick = 0;
  StepClock clock() {
    return {[this] { return t += tick; }, [this](int us) { t += us / 1000.0; }};
  }
};

TEST(NcclPoll, WaitStepReturnsWhenTheStreamDrains) {
  FakeClock fc;
  int polls = 0;
  const auto v = wait_step(
      [&](NcclAsync* a, StreamState* s) {
        ++polls;
        *a = polls < 3 ? NcclAsync::InProgress : NcclAsync::Ok;  // the call is still being issued at first
        *s = polls < 20 ? StreamState::NotReady : StreamState::Done;
      },
      1000, fc.clock());
  EXPECT_EQ(v, StepVerdict::Done);
  EXPECT_EQ(polls, 20);
}

TEST(NcclPoll, WaitStepTimesOutOnASilentPeerWithinTheBound) {
  FakeClock fc;
  int polls = 0;
  const auto v = wait_step([&](NcclAsync* a, StreamState* s) { ++polls, *a = NcclAsync::Ok, *s = StreamState::NotReady; },
                           50, fc.clock());
  EXPECT_EQ(v, StepVerdict::TimedOut);
  // It stops at the first poll past 50 ms: at most one 1 ms sleep late.
  EXPECT_GE(fc.t, 50.0);
  EXPECT_LE(fc.t, 51.0);
  EXPECT_GT(polls, 8);
}

TEST(NcclPoll, WaitStepTimesOutEvenWhenPollsThemselvesTakeTime) {
  FakeClock fc;
  fc.tick = 7;  // each clock read costs 7 ms (a slow driver call)
  const auto v = wait_step([&](NcclAsync* a, StreamState* s) { *a = NcclAsync::InProgress, *s = StreamState::NotUsed; },
                           100, fc.clock());
  EXPECT_EQ(v, StepVerdict::TimedOut);
  EXPECT_LE(fc.t, 100 + 2 * 7 + 1);
}

TEST(NcclPoll, WaitStepReportsAnAsyncErrorAtOnce) {
  FakeClock fc;
  int polls = 0;
  const auto v = wait_step(
      [&](NcclAsync* a, StreamState* s) {
        ++polls;
        *a = polls == 4 ? NcclAsync::Error : NcclAsync::InProgress;
        *s = StreamState::NotReady;
      },
      1000000, fc.clock());
  EXPECT_EQ(v, StepVerdict::Failed);
  EXPECT_EQ(polls, 4);
}

TEST(NcclPoll, ScratchSizeAndOverflow) {
  std::string e;
  EXPECT_EQ(allreduce_scratch_floats(4, 1000, &e), 4000u);
  EXPECT_EQ(e, "");
  EXPECT_EQ(allreduce_scratch_floats(1, 0, &e), 0u);
  EXPECT_EQ(e, "");  // an empty all-reduce needs nothing and is no error
  EXPECT_EQ(allreduce_scratch_floats(0, 10, &e), 0u);
  EXPECT_NE(e.find("nranks 0"), std::string::npos);
  e.clear();
  EXPECT_EQ(allreduce_scratch_floats(8, std::numeric_limits<size_t>::max() / 16, &e), 0u);
  EXPECT_NE(e.find("overflow"), std::string::npos);
}

TEST(NcclPoll, ErrorsNameRankDeviceStepAndPeers) {
  EXPECT_EQ(nccl_step_error(1, 3, "all_gather", "all 4 ranks", StepVerdict::TimedOut, 30000, ""),
            "nccl rank 1 (device cuda:3): all_gather: timed out after 30000 ms waiting for all 4 ranks");
  EXPECT_EQ(nccl_step_error(0, 0, "recv", "rank 2", StepVerdict::Failed, 10, "unhandled system error"),
            "nccl rank 0 (device cuda:0): recv: failed (waiting for rank 2): unhandled system error");
}

}  // namespace
}  // namespace herd::test
