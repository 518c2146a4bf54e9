// Backend::matmul throughput per weight type at real shapes:
//   n_tokens = 1   (decode): weight bytes streamed per second (bytes_per_second), what decides tok/s;
//   n_tokens = 128 (prompt): FLOP/s (2 flops per weight per token).
// Shapes: 4096x4096 (a 7B/8B attention projection) and 2048x768 (stories110M's ffn_up: 2048 rows
// of 768). Weights are seeded random values quantized with quantize_row, so every block is valid.
// Matrices are prepared as a stage prepares its weights (Backend::prepare_matmul: the x86 packed
// layout for Q4_0/Q8_0). Environment: HERD_BENCH_THREADS (default 1) sets the backend's thread count; HERD_CPU_ISA pins "auto".
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/quant.h"

namespace {

using herd::DType;

struct Case {
  std::vector<uint8_t> weights;
  herd::WeightMatrix w;
  std::vector<float> x, y;
};

Case make_case(DType t, int64_t rows, int64_t cols, int64_t n_tokens) {
  Case c;
  const size_t rb = herd::row_bytes(t, cols);
  c.weights.resize(rb * static_cast<size_t>(rows));
  std::vector<float> row(static_cast<size_t>(cols));
  uint64_t s = 0x9E3779B97F4A7C15ull ^ static_cast<uint64_t>(t);
  auto uni = [&] {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<float>(static_cast<double>(s >> 11) / 9007199254740992.0 - 0.5);
  };
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = 0.04f * uni();
    herd::quantize_row(t, row.data(), c.weights.data() + static_cast<size_t>(r) * rb, cols);
  }
  c.w = {t, c.weights.data(), rows, cols, rb};
  c.x.resize(static_cast<size_t>(n_tokens * cols));
  for (float& v : c.x) v = uni();
  c.y.resize(static_cast<size_t>(n_tokens * rows));
  return c;
}

int bench_threads() {
  const char* e = std::getenv("HERD_BENCH_THREADS");
  return e && *e ? std::max(1, std::atoi(e)) : 1;
}

void BM_matmul(benchmark::State& state, std::string isa, DType t, int64_t rows, int64_t cols, int64_t n_tokens) {
  auto backend = herd::make_cpu_backend(herd::CpuBackendOptions{false, isa});
  backend->set_threads(bench_threads());
  if (!backend->supports(herd::Op::MatMul, t)) {
    state.SkipWithError("backend does not support this type");
    return;
  }
  Case c = make_case(t, rows, cols, n_tokens);
  herd::WeightMatrix* prepared[] = {&c.w};  // the layout a stage multiplies (Backend::prepare_matmul)
  backend->prepare_matmul(prepared);
  for (auto _ : state) {
    backend->matmul(c.w, c.x.data(), n_tokens, cols, c.y.data(), rows);
    benchmark::DoNotOptimize(c.y.data());
    benchmark::ClobberMemory();
  }
  const double iters = static_cast<double>(state.iterations());
  if (n_tokens == 1) {
    state.SetBytesProcessed(static_cast<int64_t>(iters * static_cast<double>(c.weights.size())));
  } else {
    state.counters["FLOP"] =
        benchmark::Counter(iters * 2.0 * static_cast<double>(rows * cols * n_tokens), benchmark::Counter::kIsRate);
  }
  state.counters["threads"] = bench_threads();
  state.SetLabel(std::string(backend->name()) + " " + std::string(herd::dtype_name(t)));
}

const DType kTypes[] = {DType::F32,  DType::F16,  DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                        DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

struct Shape {
  const char* name;
  int64_t rows, cols;
};
const Shape kShapes[] = {{"4096x4096", 4096, 4096}, {"2048x768", 2048, 768}};

// "auto" is the fastest kernel set of this CPU; "scalar" the reference, for the ratio (the scalar
// 4096x4096 x 128-token case is left out: seconds per iteration, nothing new to learn).
const bool kRegistered = [] {
  for (const std::string isa : {"auto", "scalar"}) {
    for (const auto& sh : kShapes) {
      for (DType t : kTypes) {
        const std::string tn(herd::dtype_name(t)), suffix = tn + "/" + sh.name + "/" + isa;
        benchmark::RegisterBenchmark(("matvec/" + suffix).c_str(), BM_matmul, isa, t, sh.rows, sh.cols, int64_t{1})
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
        if (isa == "scalar" && sh.rows * sh.cols > 4096 * 1024) continue;
        benchmark::RegisterBenchmark(("matmul128/" + suffix).c_str(), BM_matmul, isa, t, sh.rows, sh.cols,
                                     int64_t{128})
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
    }
  }
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
