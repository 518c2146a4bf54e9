// A Pipeline whose stages are `herd worker` processes (or in-process WorkerServers over inproc://
// links). The coordinator sends token ids to the first worker; hidden states flow worker to worker
// directly; the last worker returns logits — or, for generation (eval_sample), samples them with
// the request's sampler and returns the token id (this coordinator keeps the sampler's RNG and
// sends each step's draw, so a seed gives the same text locally and on a cluster). Same kernels,
// same split => bit-identical logits to LocalPipeline.
//
// A worker with no copy of the model asks for exactly its tensors (and the GGUF header) while it
// handles the Assign; they are served from this process's file in crc32-checked chunks
// (transport/protocol.h WeightRequest/WeightChunk) and cached on the worker's disk.
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
  int debug_corrupt_chunks = 0;      // test hook: flip a byte in the first N weight chunks sent (-1: all)
};

class RemotePipeline : public Pipeline {
 public:
  // Connects, checks versions and the model hash, assigns layers; throws std::runtime_error.
  RemotePipeline(const model::GgufFile& f, const model::ModelConfig& c, RemotePipelineOptions opts);
  ~RemotePipeline() override;

  const model::ModelConfig& config() const override { return config_; }
  int64_t n_ctx() const override { return opts_.n_ctx; }
  void eval(const int32_t* tokens, int64_t n, int64_t pos0, bool all_logits, std::vector<float>& logits) override;
  int32_t eval_sample(const int32_t* tokens, int64_t n, int64_t pos0, Sampler& sampler) override;

  const std::vector<model::LayerRange>& ranges() const { return ranges_; }
  // Weight bytes sent to workers that had no copy of the model (since construction).
  uint64_t weight_bytes_sent() const { return weight_bytes_sent_; }
  // Each worker's Ready text from the last assignment (its layers, mapped MiB, bytes received).
  const std::vector<std::string>& ready_info() const { return ready_info_; }

 private:
  struct Worker {
    std::string address;
    std::unique_ptr<transport::Link> link;
    transport::Hello hello;
  };
  void setup();
  void prepare(const int32_t* tokens, int64_t n, int64_t pos0);
  // Returns the sampled token when `sample` is given, else fills logits and returns -1.
  int32_t forward(const int32_t* tokens, int64_t n, int64_t pos0, bool all_logits, std::vector<float>& logits,
                  const transport::SampleSpec* sample = nullptr);
  void serve_weights(size_t k, const transport::Message& m);
  std::string describe(size_t i) const;
  [[noreturn]] void fail(size_t i, const std::string& what);
  [[noreturn]] void fail_root_cause(size_t i, const std::string& what);

  model::ModelConfig config_;
  const model::GgufFile& file_;
  int fd_ = -1;  // the model file, for serving weight chunks (pread: our own mapping stays untouched)
  RemotePipelineOptions opts_;
  uint64_t weight_bytes_sent_ = 0;
  int chunks_corrupted_ = 0;
  std::vector<std::string> ready_info_;
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> servable_;  // per worker: file [begin, end) it may fetch
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
