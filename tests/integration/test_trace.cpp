// --trace FILE: the real binary writes Chrome trace events that parse as JSON, with one track per
// stage and per link, one "batch" slice per evaluated batch, and stage + link slices that add up
// to each batch's time (in process and over two real workers).
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "tests/integration/cluster_util.h"
#include "tests/process.h"
#include "tests/test_paths.h"

namespace herd::test {
namespace {

using json = nlohmann::json;

struct Trace {
  std::map<int, std::string> tracks;  // tid -> name
  std::vector<json> slices;           // ph X
};

Trace read_trace(const std::string& path) {
  Trace t;
  const json j = json::parse(slurp(path));  // throws (fails the test) when it is not JSON
  EXPECT_TRUE(j.is_array());
  for (const json& e : j) {
    if (e.at("ph") == "M" && e.at("name") == "thread_name") t.tracks[e.at("tid").get<int>()] = e.at("args").at("name");
    if (e.at("ph") == "X") t.slices.push_back(e);
  }
  return t;
}

// Per batch number: the batch slice's duration and the sum of the stage and link slices.
void expect_slices_add_up(const Trace& t, size_t n_stages, size_t n_links) {
  std::map<int, double> batch, parts;
  std::map<int, std::set<int>> tids;
  for (const json& e : t.slices) {
    const int b = e.at("args").at("batch");
    EXPECT_GE(e.at("dur").get<double>(), 0.0);
    if (e.at("name") == "batch") batch[b] = e.at("dur");
    else parts[b] += e.at("dur").get<double>();
    tids[b].insert(e.at("tid").get<int>());
  }
  ASSERT_FALSE(batch.empty());
  for (const auto& [b, dur] : batch) {
    EXPECT_EQ(tids[b].size(), 1 + n_stages + n_links) << "batch " << b;
    if (n_links > 0) EXPECT_NEAR(parts[b], dur, 0.01 * dur + 5) << "batch " << b;  // µs rounding
    else EXPECT_LE(parts[b], dur + 1) << "batch " << b;
  }
}

TEST(Trace, InProcessStagesOneTrackEachOneBatchPerStep) {
  HERD_REQUIRE_FILE(model_path("stories260K.gguf"));
  const std::string path = "/tmp/herd-trace-local.json";
  const auto r = run_process({herd_bin(), "run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time", "-n",
                              "6", "--temp", "0", "--split", "0-1,2-4", "--trace", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Trace t = read_trace(path);
  EXPECT_EQ(t.tracks.at(1), "coordinator");
  EXPECT_EQ(t.tracks.at(100), "stage 0 local (layers 0-1)");
  EXPECT_EQ(t.tracks.at(101), "stage 1 local (layers 2-4)");
  size_t batches = 0;
  for (const json& e : t.slices) batches += e.at("name") == "batch";
  EXPECT_EQ(batches, 6u);  // the prompt, then 5 decode steps (the 6th token is not evaluated)
  expect_slices_add_up(t, 2, 0);
}

TEST(Trace, TwoWorkersHaveStageAndLinkTracks) {
  HERD_REQUIRE_FILE(model_path("stories260K.gguf"));
  WorkerProcess a, b;
  const std::string path = "/tmp/herd-trace-cluster.json";
  const auto r = run_process({herd_bin(), "run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time", "-n",
                              "6", "--temp", "0", "--workers", a.address() + "," + b.address(), "--split", "0-1,2-4",
                              "--trace", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Trace t = read_trace(path);
  EXPECT_NE(t.tracks.at(100).find("(layers 0-1)"), std::string::npos) << t.tracks.at(100);
  EXPECT_NE(t.tracks.at(101).find("(layers 2-4)"), std::string::npos) << t.tracks.at(101);
  EXPECT_EQ(t.tracks.at(1000), "link coordinator -> stage 0");
  EXPECT_EQ(t.tracks.at(1001), "link stage 0 -> stage 1");
  EXPECT_EQ(t.tracks.at(1002), "link stage 1 -> coordinator");
  expect_slices_add_up(t, 2, 3);
}

TEST(Trace, AnUnwritablePathIsAClearError) {
  const auto r = run_process({herd_bin(), "run", "-m", model_path("stories260K.gguf"), "-p", "x", "-n", "2", "--trace",
                              "/nonexistent-dir/t.json"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--trace /nonexistent-dir/t.json: cannot write"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace herd::test
