// A worker holds its shard, not the model: SmolLM2-135M (30 layers) over 4 `herd worker` processes,
// a short generation, then each worker's peak RSS (VmHWM). A middle stage (7-8 of 30 layers, no
// embedding, no output) must stay well under half the file; the first and last stages also hold
// the embedding table (SmolLM2 ties it to the output projection), so they are only reported.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "coordinator/generator.h"
#include "coordinator/remote_pipeline.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "model/weights.h"
#include "engine/host_probe.h"
#include "tests/integration/cluster_util.h"

namespace herd::test {
namespace {

TEST(ClusterRss, EachWorkerHoldsOnlyItsShard) {
  const std::string path = smollm2_path();
  HERD_REQUIRE_FILE(path);  // a missing model is a failure, not a skip: setup.sh always fetches it
  const uint64_t file_bytes = std::filesystem::file_size(path);
  auto file = model::GgufFile::open(path);
  const auto config = model::load_config(*file);
  auto tok = model::Tokenizer::from_gguf(*file);
  ASSERT_EQ(config.n_layers, 30);

  std::vector<std::unique_ptr<WorkerProcess>> w;
  for (int i = 0; i < 4; ++i) w.push_back(std::make_unique<WorkerProcess>());
  RemotePipelineOptions o;
  for (auto& x : w) o.workers.push_back(x->address());
  o.split = "0-7,8-15,16-22,23-29";
  o.n_ctx = 2048;  // a KV cache far larger than what is used: it must not be resident
  RemotePipeline remote(*file, config, o);
  Generator g(remote, *tok);
  SamplerParams sp;
  sp.temperature = 0;
  Sampler s(sp, static_cast<int32_t>(config.n_vocab));
  const auto st = g.generate(tok->encode("The capital of France is", true, false), 24, s,
                             [](const std::string&) { return true; });
  ASSERT_EQ(st.n_generated, 24);

  std::printf("model file: %.1f MiB\n", file_bytes / 1048576.0);
  for (size_t i = 0; i < w.size(); ++i) {
    const uint64_t hwm = proc_status_bytes("VmHWM", w[i]->child().pid());
    const uint64_t shard = model::stage_weight_bytes(*file, config, remote.ranges()[i]);
    ASSERT_GT(hwm, 0u) << "no VmHWM for worker " << i;
    std::printf("worker %zu (layers %lld-%lld%s%s): peak RSS %.1f MiB, shard tensors %.1f MiB (%.2f x file)\n", i,
                static_cast<long long>(remote.ranges()[i].first), static_cast<long long>(remote.ranges()[i].end - 1),
                remote.ranges()[i].embedding ? ", embedding" : "", remote.ranges()[i].output ? ", output" : "",
                hwm / 1048576.0, shard / 1048576.0, static_cast<double>(hwm) / static_cast<double>(file_bytes));
    if (i == 1 || i == 2) {
      EXPECT_LT(hwm, file_bytes / 2) << "middle worker " << i << " holds more than its shard";
    }
  }
  std::fflush(stdout);
}

}  // namespace
}  // namespace herd::test
