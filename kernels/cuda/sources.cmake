# CUDA backend: its own library target, compiled whenever nvcc is found (CI compiles it; tests
# run on a GPU machine and skip cleanly elsewhere).
enable_language(CUDA)
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 80 86 89 90)
endif()
find_package(CUDAToolkit REQUIRED)
add_library(herd_cuda STATIC ${CMAKE_CURRENT_LIST_DIR}/device.cu)
target_sources(herd_cuda PRIVATE ${CMAKE_CURRENT_LIST_DIR}/bandwidth.cu)  # owner: nccl helper (herd probe's GPU copy bandwidth)
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/bandwidth.cu PROPERTIES COMPILE_OPTIONS -Werror=all-warnings)
# CMake 3.25 knows no C++20 flag for nvcc 13; the CUDA sources are C++17 (host code stays C++20).
set_target_properties(herd_cuda PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
target_include_directories(herd_cuda PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(herd_cuda PUBLIC CUDA::cudart_static)
target_compile_definitions(herd_cuda PUBLIC HERD_HAVE_CUDA=1)
