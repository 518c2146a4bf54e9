// The Stage's contract with a device backend (kernels/backend.h, "Where each op's pointers live"),
// checked on the CPU: a backend whose memory the host cannot touch. GuardedDevice allocates from
// an arena that is mapped PROT_NONE except while one of its own ops runs, so a Stage that reads
// or writes activations, the KV cache or an uploaded weight directly (a std::memcpy into a GPU
// buffer, a host pointer handed to an op that expects device memory) dies with SIGSEGV or is
// recorded as a violation. Every op also checks that its pointers are on the side the contract
// says. Inside, the ops are the reference backend's on the arena's bytes, so the logits must be
// the reference's bit for bit: the seam moves every byte it should, and only those.
//
// This is what can be proved of the CUDA backend's host side without a GPU (issue [cuda]); the
// CUDA backend is the same seam with cudaMemcpy and kernels behind it.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/comm.h"
#include "engine/host_probe.h"
#include "engine/inproc_comm.h"
#include "engine/stage.h"
#include "kernels/cpu/reference_backend.h"
#include "kernels/quant.h"
#include "model/gguf.h"
#include "tests/engine/guarded_device.h"
#include "tests/test_paths.h"
#include "tests/tools/tiny_models.h"

namespace herd {
namespace {

using test::GuardedDevice;

struct Loaded {
  std::unique_ptr<model::GgufFile> f;
  model::ModelConfig cfg;
};

Loaded load(const std::string& path) {
  Loaded l;
  l.f = model::GgufFile::open(path);
  l.cfg = model::load_config(*l.f);
  return l;
}

// Two sequences, prompt then decode steps, with only some rows asking for logits: the paths a
// server's batches take (keep_output_rows, per-slot attention).
std::vector<Batch> seam_batches(int32_t V) {
  std::vector<Batch> batches(3);
  for (int32_t i = 0; i < 7; ++i) batches[0].add(i == 0 ? 1 : (13 * i + 3) % V, i, 0, i == 6);
  for (int32_t i = 0; i < 4; ++i) batches[0].add((7 * i + 2) % V, i, 1, i == 3);
  batches[1].add(5 % V, 7, 0, true);
  batches[1].add(9 % V, 4, 1, true);
  for (int32_t i = 0; i < 3; ++i) batches[2].add((3 * i + 11) % V, 5 + i, 1, true);
  return batches;
}

// seam_batches through one Stage.
std::vector<float> run_batches(const Loaded& m, Backend& be, const model::LayerRange& range, const KvOptions& kv,
                               const std::vector<std::vector<float>>* hidden_in = nullptr,
                               std::vector<std::vector<float>>* hidden_out = nullptr) {
  Stage s(m.cfg, model::load_stage_weights(*m.f, m.cfg, range), be, kv);
  std::vector<float> all;
  const std::vector<Batch> batches = seam_batches(static_cast<int32_t>(m.cfg.n_vocab));
  for (size_t i = 0; i < batches.size(); ++i) {
    const Batch& b = batches[i];
    std::vector<float> out(static_cast<size_t>(s.output_floats(b)));
    const float* h = hidden_in ? (*hidden_in)[i].data() : nullptr;
    s.forward(b, h, out.data());
    if (hidden_out) hidden_out->push_back(out);
    all.insert(all.end(), out.begin(), out.end());
  }
  return all;
}

void expect_same_bits(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * sizeof(float))) << what;
}

TEST(DeviceSeam, AStageOnMemoryTheHostCannotTouchGivesTheReferenceBits) {
  for (const char* file : {"stories260K.gguf", "stories260K-Q4_K_M.gguf", "randk-Q4_0.gguf"})
    for (DType kv : {DType::F32, DType::F16, DType::Q8_0}) {
      const std::string path = test::model_path(file);
      HERD_REQUIRE_FILE(path);
      const Loaded m = load(path);
      const model::LayerRange all{0, m.cfg.n_layers, true, true};
      const KvOptions kvo{32, 2, kv};
      auto ref = make_reference_backend();
      const auto want = run_batches(m, *ref, all, kvo);
      GuardedDevice dev;
      const auto got = run_batches(m, dev, all, kvo);
      const std::string what = std::string(file) + " kv " + std::string(dtype_name(kv));
      expect_same_bits(got, want, what);
      EXPECT_TRUE(dev.violations().empty()) << what << ": " << dev.violations().front();
      EXPECT_EQ(dev.uploads(), 7 * m.cfg.n_layers + 1) << what << ": every matrix uploaded once";
    }
}

TEST(DeviceSeam, APipelineOfDeviceStagesMovesHiddenStatesInAndOutThroughTheSeam) {
  const std::string path = test::model_path("stories260K.gguf");
  HERD_REQUIRE_FILE(path);
  const Loaded m = load(path);
  ASSERT_GE(m.cfg.n_layers, 2);
  const KvOptions kvo{32, 2, DType::F32};
  auto ref = make_reference_backend();
  const auto want = run_batches(m, *ref, {0, m.cfg.n_layers, true, true}, kvo);
  GuardedDevice first, last;
  std::vector<std::vector<float>> hidden;
  run_batches(m, first, {0, 1, true, false}, kvo, nullptr, &hidden);
  const auto got = run_batches(m, last, {1, m.cfg.n_layers, false, true}, kvo, &hidden);
  expect_same_bits(got, want, "2 stages");
  EXPECT_TRUE(first.violations().empty() && last.violations().empty());
}

TEST(DeviceSeam, ABackendUsedByOneStageAfterAnotherHoldsNoCopyOfAGoneStagesVectors) {
  // A worker keeps its device backend from one Assign to the next. The device keeps its copies of
  // the weight vectors by their host address, and a new stage's vectors may be allocated where the
  // old stage's were: a copy left behind would be found for a different vector (wrong logits, as
  // a tensor-parallel worker assigned a second time once gave).
  const std::string a = test::model_path("stories260K.gguf"), b = test::model_path("stories260K-Q4_K_M.gguf");
  HERD_REQUIRE_FILE(a);
  HERD_REQUIRE_FILE(b);
  GuardedDevice dev;
  const KvOptions kvo{32, 2, DType::F32};
  for (const std::string& path : {a, b, a}) {
    const Loaded m = load(path);
    const model::LayerRange all{0, m.cfg.n_layers, true, true};
    auto ref = make_reference_backend();
    expect_same_bits(run_batches(m, dev, all, kvo), run_batches(m, *ref, all, kvo), path);
    EXPECT_EQ(dev.residents(), 0u) << path << ": the stage is gone, and so must be its vectors' copies";
  }
  EXPECT_TRUE(dev.violations().empty());
}

// Stages that hand their hidden state over device to device (Stage::set_io_on_device): a stage's
// output stays in its device's memory, a hop moves it into the next device's (here through the
// host, as the stand-in hop of tests/integration/test_device_hop.cpp does; between GPUs, NCCL),
// and the next stage reads it there. The reference's bits, no violations, no copy_out of a hidden
// state, and a synchronize after the pass so the hop's queue may read the output.
TEST(DeviceSeam, StagesHandTheirHiddenStateOverDeviceToDevice) {
  const std::string path = test::model_path("stories260K.gguf");
  HERD_REQUIRE_FILE(path);
  const Loaded m = load(path);
  const int64_t L = m.cfg.n_layers, d = m.cfg.n_embd;
  ASSERT_GE(L, 3);
  const KvOptions kvo{32, 2, DType::F32};
  auto ref = make_reference_backend();
  const auto want = run_batches(m, *ref, {0, L, true, true}, kvo);

  GuardedDevice d0, d1, d2;
  GuardedDevice* devs[] = {&d0, &d1, &d2};
  const model::LayerRange ranges[] = {{0, 1, true, false}, {1, 2, false, false}, {2, L, false, true}};
  std::vector<std::unique_ptr<Stage>> stages;
  for (int i = 0; i < 3; ++i)
    stages.push_back(std::make_unique<Stage>(m.cfg, model::load_stage_weights(*m.f, m.cfg, ranges[i]), *devs[i], kvo));
  stages[0]->set_io_on_device(false, true);
  stages[1]->set_io_on_device(true, true);
  stages[2]->set_io_on_device(true, false);

  std::vector<float> got;
  for (const Batch& b : seam_batches(static_cast<int32_t>(m.cfg.n_vocab))) {
    const size_t floats = static_cast<size_t>(b.size() * d);
    Buffer in;  // the hidden state on the receiving device (none for the first stage)
    for (int i = 0; i < 2; ++i) {
      GuardedDevice& dev = *devs[i];
      Buffer out = dev.alloc(floats * sizeof(float));
      dev.events.clear();
      stages[static_cast<size_t>(i)]->forward(b, i ? in.as<float>() : nullptr, out.as<float>());
      ASSERT_EQ(dev.events.size(), 3u) << "stage " << i;
      EXPECT_EQ(dev.events[1], "end 1");
      EXPECT_EQ(dev.events[2], "sync") << "stage " << i << ": the output stays on the device, synchronized";
      // The hop: device i -> host -> device i + 1 (what NCCL does device to device).
      std::vector<float> host(floats);
      dev.copy_out(host.data(), out.as<float>(), floats * sizeof(float));
      in = devs[i + 1]->alloc(floats * sizeof(float));
      devs[i + 1]->copy_in(in.data(), host.data(), floats * sizeof(float));
    }
    std::vector<float> logits(static_cast<size_t>(stages[2]->output_floats(b)));
    stages[2]->forward(b, in.as<float>(), logits.data());
    got.insert(got.end(), logits.begin(), logits.end());
  }
  expect_same_bits(got, want, "3 stages, device to device");
  for (GuardedDevice* dev : devs) EXPECT_TRUE(dev->violations().empty()) << dev->violations().front();

  // What cannot be said: a host backend's memory is the host's; the first stage reads token ids;
  // the last stage's logits go to the host.
  Stage host(m.cfg, model::load_stage_weights(*m.f, m.cfg, ranges[1]), *ref, kvo);
  EXPECT_THROW(host.set_io_on_device(true, false), std::invalid_argument);
  EXPECT_NO_THROW(host.set_io_on_device(false, false));
  EXPECT_THROW(stages[0]->set_io_on_device(true, true), std::invalid_argument);
  EXPECT_THROW(stages[2]->set_io_on_device(true, true), std::invalid_argument);
}

TEST(DeviceSeam, ArchitectureVariantsReachTheirBiasesNormsAndRopeFactorsOnTheDevice) {
  // qwen2 (q/k/v biases), qwen3 (per-head q/k norms), llama with tied embeddings and rope scaling.
  const std::string donor = test::model_path("stories260K.gguf");
  HERD_REQUIRE_FILE(donor);
  int ran = 0;
  for (const auto& spec : test::tiny_model_specs()) {
    if (spec.n_expert) continue;  // refused on a device (next test)
    const std::string path = ::testing::TempDir() + "herd-seam-" + spec.name + ".gguf";
    test::write_tiny_model(spec, donor, path);
    const Loaded m = load(path);
    const model::LayerRange all{0, m.cfg.n_layers, true, true};
    const KvOptions kvo{32, 2, DType::F32};
    auto ref = make_reference_backend();
    const auto want = run_batches(m, *ref, all, kvo);
    GuardedDevice dev;
    expect_same_bits(run_batches(m, dev, all, kvo), want, spec.name);
    EXPECT_TRUE(dev.violations().empty()) << spec.name << ": " << dev.violations().front();
    ++ran;
  }
  EXPECT_GE(ran, 3);
}

TEST(DeviceSeam, WhatRunsOnTheHostOnlyIsRefusedOnADeviceWithAClearError) {
  const std::string donor = test::model_path("stories260K.gguf");
  HERD_REQUIRE_FILE(donor);
  for (const auto& spec : test::tiny_model_specs()) {
    if (!spec.n_expert) continue;
    const std::string path = ::testing::TempDir() + "herd-seam-" + spec.name + ".gguf";
    test::write_tiny_model(spec, donor, path);
    const Loaded m = load(path);
    GuardedDevice dev;
    try {
      Stage s(m.cfg, model::load_stage_weights(*m.f, m.cfg, {0, m.cfg.n_layers, true, true}), dev, KvOptions{16});
      ADD_FAILURE() << spec.name << ": a mixture of experts built on a device";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("mixture-of-experts"), std::string::npos) << e.what();
    }
  }
  const Loaded m = load(donor);
  GuardedDevice dev;
  Stage s(m.cfg, model::load_stage_weights(*m.f, m.cfg, {0, m.cfg.n_layers, true, true}), dev, KvOptions{16});
  auto group = make_inproc_comms(2);
  StageTensorParallel tp;
  tp.comm = group[0].get();
  EXPECT_THROW(s.set_tensor_parallel(tp), std::invalid_argument);
  struct NoPieces : WeightResidency {
    const std::vector<Piece>* pieces(const WeightMatrix&) const override { return nullptr; }
    void before(int64_t) override {}
    void after(int64_t) override {}
  };
  EXPECT_THROW(s.set_residency(std::make_shared<NoPieces>()), std::invalid_argument);
  s.set_tensor_parallel({});  // not tensor-parallel: fine
  s.set_residency(nullptr);
}

TEST(DeviceSeam, TheProbeMeasuresADeviceBackendThroughTheSeam) {
  // What a GPU worker reports in its Hello (engine/host_probe.h probe_device): every kernel rate
  // measured with the operands in the device's memory, nothing touched from the host.
  GuardedDevice dev;
  HostProbeOptions o;
  o.startup = true;
  o.types = {static_cast<uint32_t>(DType::Q4_0), static_cast<uint32_t>(DType::Q4_K), static_cast<uint32_t>(DType::F16)};
  const ProbeResult r = probe_device(dev, o, size_t(1) << 20);
  EXPECT_TRUE(dev.violations().empty()) << dev.violations().front();
  EXPECT_EQ(r.isa, "guarded-device");
  EXPECT_EQ(r.matvec_Bps.size(), 3u);
  for (const auto& [t, bps] : r.matvec_Bps) EXPECT_GT(bps, 0) << t;
  EXPECT_GT(r.matmul_flops, 0);
  EXPECT_GT(r.op_overhead_s, 0);
  EXPECT_GT(r.attn_Bps, 0);
  EXPECT_GT(dev.uploads(), 3);  // the matrices were prepared (uploaded), as a stage's are
}

// The pass a device may record as a CUDA graph (Backend::begin_pass/end_pass): one per forward,
// around the layers and the output projection, never with a copy_out inside; the same key for
// passes of the same shape (decode steps at growing positions), another for another shape; a pass
// that throws is ended as failed and the next one is whole.
TEST(DeviceSeam, EveryForwardIsOnePassWithItsOutputCopiedOutAfterIt) {
  const std::string path = test::model_path("stories260K.gguf");
  HERD_REQUIRE_FILE(path);
  const Loaded m = load(path);
  for (const bool last : {true, false}) {
    GuardedDevice dev;
    Stage s(m.cfg, model::load_stage_weights(*m.f, m.cfg, {0, m.cfg.n_layers, true, last}), dev, KvOptions{32, 2});
    auto step = [&](std::vector<std::pair<int32_t, int32_t>> rows) {  // (position, sequence) per row
      Batch b;
      for (const auto& [pos, seq] : rows) b.add(3, pos, seq, true);
      std::vector<float> out(static_cast<size_t>(s.output_floats(b)));
      dev.events.clear();
      s.forward(b, nullptr, out.data());
      return dev.events;
    };
    const auto a = step({{0, 0}}), b = step({{1, 0}}), c = step({{2, 0}, {0, 1}});
    for (const auto& ev : {a, b, c}) {
      ASSERT_EQ(ev.size(), 3u);
      EXPECT_EQ(ev[0].rfind("begin ", 0), 0u);
      EXPECT_EQ(ev[1], "end 1");
      EXPECT_EQ(ev[2], "copy_out");
    }
    EXPECT_EQ(a[0], b[0]) << "two decode steps of one sequence: one shape";
    EXPECT_NE(b[0], c[0]) << "two rows: another shape";
    EXPECT_EQ(c[0].substr(c[0].rfind(' ')), " 2");
    dev.throw_at_matmul = 3;
    EXPECT_THROW(step({{3, 0}}), std::runtime_error);
    EXPECT_EQ(dev.events.back(), "end 0");
    const auto d = step({{3, 0}});
    EXPECT_EQ(d.back(), "copy_out");
    EXPECT_TRUE(dev.violations().empty()) << dev.violations().front();
  }
}

TEST(DeviceSeamDeathTest, TheGuardCatchesAHostAccessToDeviceMemory) {
  // The negative control: if the Stage (or anything) touched the arena outside an op, this is
  // what would happen, so the tests above could fail.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        GuardedDevice dev;
        Buffer b = dev.alloc(4096);
        dev.lock_for_tests();
        static_cast<volatile float*>(b.as<float>())[0] = 1.0f;
      },
      "");
}

}  // namespace
}  // namespace herd
