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

# owner: CUDA activation ops. The HERD_HD math of kernels/cuda/ops_math.h, compiled by g++ and
# checked against the reference backend (no GPU needed; runs in CI). No FMA contraction, as the
# reference and the device's _rn intrinsics.
herd_add_test(test_cuda_ops_math SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cuda_ops_math.cpp
  LIBS herd_engine herd_kernels)
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/test_cuda_ops_math.cpp PROPERTIES COMPILE_OPTIONS -ffp-contract=off)
