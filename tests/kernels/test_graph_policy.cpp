// kernels/cuda/graph_policy.h: when the CUDA backend records a pass as a graph, updates the last
// one or instantiates anew, and when it gives graphs up. Host logic, every build.
#include <gtest/gtest.h>

#include "kernels/cuda/graph_policy.h"

namespace herd::cuda {
namespace {

using B = GraphPolicy::Begin;
using F = GraphPolicy::Finish;

TEST(GraphPolicy, OffUnlessAskedAndOnlyForDecodeSizedPasses) {
  GraphPolicy off(false);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(off.begin(7, 1), B::Direct);
  GraphPolicy on(true);
  EXPECT_EQ(on.begin(7, 1), B::Direct) << "the first eligible pass runs directly (it sizes the scratch)";
  EXPECT_EQ(on.begin(9, 512), B::Direct) << "prefill";
  EXPECT_EQ(on.begin(9, GraphPolicy::kMaxRows + 1), B::Direct);
  EXPECT_EQ(on.begin(9, 0), B::Direct);
  EXPECT_EQ(on.begin(7, 1), B::Capture);
  EXPECT_EQ(on.begin(7, GraphPolicy::kMaxRows), B::Capture);
}

TEST(GraphPolicy, InstantiatesOnceThenUpdatesWhileTheShapeHolds) {
  GraphPolicy p(true);
  p.begin(1, 1);
  ASSERT_EQ(p.begin(1, 1), B::Capture);
  EXPECT_EQ(p.finish(), F::Instantiate) << "nothing to update yet";
  p.instantiated();
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(p.begin(1, 1), B::Capture);
    EXPECT_EQ(p.finish(), F::Update) << i;
  }
  // Another shape: instantiate; an update that fails (the topology changed under the same key,
  // e.g. attention split into more chunks as the cache grew): instantiate too.
  ASSERT_EQ(p.begin(2, 2), B::Capture);
  EXPECT_EQ(p.finish(), F::Instantiate);
  p.instantiated();
  ASSERT_EQ(p.begin(2, 2), B::Capture);
  ASSERT_EQ(p.finish(), F::Update);
  p.update_failed();
  EXPECT_EQ(p.finish(), F::Instantiate);
  p.instantiated();
  ASSERT_EQ(p.begin(2, 2), B::Capture);
  EXPECT_EQ(p.finish(), F::Update);
  EXPECT_TRUE(p.enabled());
}

TEST(GraphPolicy, GivesUpWhenEveryPassChangesShapeOrTheMachineryFails) {
  GraphPolicy p(true);
  p.begin(0, 1);
  uint64_t key = 100;
  int captured = 0;
  for (int i = 0; i < 3 * GraphPolicy::kMaxChangedRun; ++i) {
    if (p.begin(key++, 1) == B::Capture) {
      ++captured;
      p.instantiated();
    }
  }
  EXPECT_TRUE(p.given_up());
  EXPECT_EQ(captured, GraphPolicy::kMaxChangedRun);
  EXPECT_NE(p.why_given_up().find("changed"), std::string::npos);
  EXPECT_EQ(p.begin(key, 1), B::Direct);

  // Shapes that alternate with runs of the same shape in between never give up.
  GraphPolicy q(true);
  q.begin(0, 1);
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(q.begin(static_cast<uint64_t>(i / 3), 1), B::Capture) << i;
    q.instantiated();
  }
  EXPECT_FALSE(q.given_up());

  GraphPolicy r(true);
  r.begin(0, 1);
  ASSERT_EQ(r.begin(0, 1), B::Capture);
  r.give_up("launch failed");
  EXPECT_FALSE(r.enabled());
  EXPECT_EQ(r.begin(0, 1), B::Direct);
  EXPECT_EQ(r.why_given_up(), "launch failed");
}

}  // namespace
}  // namespace herd::cuda
