# Kernels: f16/bf16 conversions, quant block formats, the thread pool and the scalar reference backend.
herd_add_test(test_kernels
  SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/test_fp16.cpp
    ${CMAKE_CURRENT_LIST_DIR}/test_dequantize.cpp
    ${CMAKE_CURRENT_LIST_DIR}/test_quant_roundtrip.cpp
    ${CMAKE_CURRENT_LIST_DIR}/test_reference_matmul.cpp
    ${CMAKE_CURRENT_LIST_DIR}/test_reference_ops.cpp
    ${CMAKE_CURRENT_LIST_DIR}/test_thread_pool.cpp
  LIBS herd_kernels)

# owner: x86 SIMD backend. Every op × type × ISA against the reference, and teacher-forced replay
# of the llama.cpp dumps through the exact and the 8-bit paths.
herd_add_test(test_simd_kernels
  SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/test_simd_matmul.cpp
    ${CMAKE_CURRENT_LIST_DIR}/test_simd_ops.cpp
  LIBS herd_kernels)
herd_add_test(test_simd_replay SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_simd_replay.cpp
  LIBS herd_coordinator herd_engine herd_model herd_kernels TIMEOUT 600)

# owner: Arm NEON backend (native on AArch64; cross-built and run under qemu elsewhere).
include(${CMAKE_CURRENT_LIST_DIR}/../neon/tests.cmake)

# owner: CUDA block math. kernels/cuda/block_math.h's HERD_HD functions (what the CUDA kernels are
# thin loops over) compiled by g++ and checked against the CPU definitions: runs without a GPU.
# -ffp-contract=off: one rounding per f32 operation, as on the device (hd_fp16.h) and in the CPU
# reference quant code, so dequant_block can be compared bit for bit.
herd_add_test(test_cuda_block_math SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cuda_block_math.cpp LIBS herd_kernels)
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/test_cuda_block_math.cpp PROPERTIES COMPILE_OPTIONS -ffp-contract=off)

# owner: CUDA block math. The launchers of kernels/cuda/matmul.h on a GPU, bit for bit against the
# same block math on the CPU; skipped (with the reason) without a GPU, except the argument checks.
if(HERD_CUDA)
  herd_add_test(test_cuda_matmul SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cuda_matmul.cpp LIBS herd_cuda herd_kernels)
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/test_cuda_matmul.cpp PROPERTIES COMPILE_OPTIONS -ffp-contract=off)
endif()

# owner: CUDA activation ops. The HERD_HD math of kernels/cuda/ops_math.h, compiled by g++ and
# checked against the reference backend (no GPU needed; runs in CI). No FMA contraction, as the
# reference and the device's _rn intrinsics.
herd_add_test(test_cuda_ops_math SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cuda_ops_math.cpp
  LIBS herd_engine herd_kernels)
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/test_cuda_ops_math.cpp PROPERTIES COMPILE_OPTIONS -ffp-contract=off)

# owner: engine (lead). The CUDA backend's graph decisions (kernels/cuda/graph_policy.h): host logic, every build.
herd_add_test(test_graph_policy UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_graph_policy.cpp LIBS herd_kernels)
