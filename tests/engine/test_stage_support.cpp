// A stage asks its backend supports() for every weight before the first batch: a type the backend
// lacks runs on the host reference instead (same bits as a reference run), and a device backend
// that lacks one is a clear error at construction, not mid-request.
#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>

#include "engine/stage.h"
#include "kernels/cpu/reference_backend.h"
#include "model/gguf.h"
#include "tests/test_paths.h"

namespace herd {
namespace {

// The reference backend, claiming it has no matmul for one type (and refusing to be called for it).
class Lacking : public ReferenceBackend {
 public:
  Lacking(DType lacks, Device device) : lacks_(lacks), device_(device) {}
  bool supports(Op op, DType t) const override {
    return !(op == Op::MatMul && t == lacks_) && ReferenceBackend::supports(op, t);
  }
  Device device() const override { return device_; }
  void matmul(const WeightMatrix& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy) override {
    if (w.type == lacks_) throw std::logic_error("called for a type it does not support");
    ReferenceBackend::matmul(w, x, n, ldx, y, ldy);
  }

 private:
  DType lacks_;
  Device device_;
};

TEST(StageSupport, AnUnsupportedWeightTypeFallsBackToTheReferenceWithTheSameBits) {
  const std::string path = test::model_path("randk-Q4_0.gguf");  // Q4_0 + one Q6_K tensor
  HERD_REQUIRE_FILE(path);
  auto f = model::GgufFile::open(path);
  const auto cfg = model::load_config(*f);
  const model::LayerRange all{0, cfg.n_layers, true, true};
  std::vector<int32_t> toks;
  for (int32_t i = 0; i < 9; ++i) toks.push_back((11 * i + 5) % static_cast<int32_t>(cfg.n_vocab));
  auto ref = make_reference_backend();
  Stage plain(cfg, model::load_stage_weights(*f, cfg, all), *ref, KvOptions{16});
  std::vector<float> want, got;
  plain.forward(toks.data(), nullptr, 9, 0, true, want);
  for (DType lacks : {DType::Q6_K, DType::Q4_0}) {
    Lacking be(lacks, Device{});
    Stage s(cfg, model::load_stage_weights(*f, cfg, all), be, KvOptions{16});
    s.forward(toks.data(), nullptr, 9, 0, true, got);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * sizeof(float))) << dtype_name(lacks);
  }
}

TEST(StageSupport, ADeviceBackendLackingAWeightTypeIsAClearErrorAtConstruction) {
  auto f = model::GgufFile::open(test::model_path("randk-Q4_0.gguf"));
  const auto cfg = model::load_config(*f);
  Lacking gpu(DType::Q6_K, Device{Device::Kind::Cuda, 0});
  try {
    Stage s(cfg, model::load_stage_weights(*f, cfg, {0, cfg.n_layers, true, true}), gpu, KvOptions{16});
    ADD_FAILURE() << "built a stage its backend cannot run";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("no matmul for q6_K"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace herd
