# CUDA backend: its own library target, compiled whenever nvcc is found (CI compiles it; tests
# run on a GPU machine and skip cleanly elsewhere).
# The default must be set before enable_language, which otherwise fills CMAKE_CUDA_ARCHITECTURES
# with the compiler's own default (sm_75 for nvcc 13) and this default never applies.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  set(CMAKE_CUDA_ARCHITECTURES 80 86 89 90)
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
add_library(herd_cuda STATIC
  ${CMAKE_CURRENT_LIST_DIR}/device.cu
  ${CMAKE_CURRENT_LIST_DIR}/matmul.cu)  # owner: CUDA block math (matmul_q8, matmul_f, quantize_act, get_rows)
target_sources(herd_cuda PRIVATE ${CMAKE_CURRENT_LIST_DIR}/bandwidth.cu)  # owner: nccl helper (herd probe's GPU copy bandwidth)
# CMake 3.25 knows no C++20 flag for nvcc 13; the CUDA sources are C++17 (host code stays C++20).
set_target_properties(herd_cuda PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
target_include_directories(herd_cuda PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(herd_cuda PUBLIC CUDA::cudart_static)
target_compile_definitions(herd_cuda PUBLIC HERD_HAVE_CUDA=1)

# owner: CUDA activation ops (rmsnorm, rope, softmax, attention, KV rows, elementwise, rank-order
# sum). Their math is ops_math.h (HERD_HD), checked on the CPU by test_cuda_ops_math.
target_sources(herd_cuda PRIVATE ${CMAKE_CURRENT_LIST_DIR}/ops.cu)
# owner: engine (lead). CudaBackend, the Backend seam over the launchers above: host C++ against
# the CUDA runtime; it needs herd_kernels for the formats (dequantize_row, act_scale_mode).
target_sources(herd_cuda PRIVATE ${CMAKE_CURRENT_LIST_DIR}/cuda_backend.cpp)
target_link_libraries(herd_cuda PUBLIC herd_kernels)
# Every nvcc warning is an error (CI compiles for all four architectures without a GPU).
target_compile_options(herd_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings>
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter -Werror>)
