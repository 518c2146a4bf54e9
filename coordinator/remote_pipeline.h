// A Pipeline whose stages are `herd worker` processes (or in-process WorkerServers over inproc://
// links). The coordinator sends token ids to the first worker; hidden states flow worker to worker
// directly; the last worker returns logits. Same kernels, same split => bit-identical logits to
// LocalPipeline.
//
// Failure is a value: every wait watches all workers' links (ZeroMQ heartbeats + a socket monitor
// notice a dead worker within ~1 s), and a lost or failing worker turns into a std::runtime_error
// naming the worker and its layers. The next eval() reconnects and re-assigns every worker (a
// restarted worker simply joins again) and replays the tokens the lost caches held.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/pipeline.h"
#include "transport/link.h"
#include "transport/protocol.h"

namespace herd {

struct RemotePipelineOptions {
  std::vector<std::string> workers;  // listen addresses, in stage order ("HOST:PORT", tcp://..., inproc://...)
  std::string split;                 // "0-1,2-4" (one range per worker); "" = proportional to free memory
  int64_t n_ctx = 0;
  transport::WireDType act_dtype = transport::WireDType::F32;  // hidden states between workers
  std::string isa = "auto";          // CPU kernels the workers use (see CpuBackendOptions)
  bool exact = false;
  std::string model_path;            // hint sent to workers started without -m
  int connect_timeout_ms = 5000;     // Hello answer
  int assign_timeout_ms = 120000;    // mapping + loading a shard
  int request_timeout_ms = 0;        // 0 = no limit on one eval (dead workers are still noticed at once)
};

class RemotePipeline : public Pipeline {
 public:
  // Connects, checks versions and the model hash, assigns layers; throws std::runtime_error.
  RemotePipeline(const model::GgufFile& f, const model::ModelConfig& c, RemotePipelineOptions opts);
  ~RemotePipeline() override;

  const model::ModelConfig& config() const override { return config_; }
  int64_t n_ctx() const override { return opts_.n_ctx; }
  void eval(const int32_t* tokens, int64_t n, int64_t pos0, bool all_logits, std::vector<float>& logits) override;

  const std::vector<model::LayerRange>& ranges() const { return ranges_; }

 private:
  struct Worker {
    std::string address;
    std::unique_ptr<transport::Link> link;
    transport::Hello hello;
  };
  void setup();
  void forward(const int32_t* tokens, int64_t n, int64_t pos0, bool all_logits, std::vector<float>& logits);
  std::string describe(size_t i) const;
  [[noreturn]] void fail(size_t i, const std::string& what);
  [[noreturn]] void fail_root_cause(size_t i, const std::string& what);

  model::ModelConfig config_;
  RemotePipelineOptions opts_;
  std::string model_hash_;
  std::vector<Worker> workers_;
  std::vector<model::LayerRange> ranges_;
  std::vector<int32_t> history_;  // tokens whose keys/values the workers hold, from position 0
  bool healthy_ = false;
  uint64_t next_request_ = 1, session_ = 0;
};

// Contiguous ranges, one per worker, with layer counts proportional to free_bytes (each >= 1;
// largest remainders get the leftovers). Throws when there are more workers than layers.
std::vector<model::LayerRange> split_by_memory(int64_t n_layers, const std::vector<uint64_t>& free_bytes);

// "a:1,b:2" -> {"a:1", "b:2"} (empty parts rejected).
std::vector<std::string> parse_worker_list(const std::string& spec);

}  // namespace herd
