# CUDA backend: its own library target, compiled whenever nvcc is found (CI compiles it; tests
# run on a GPU machine and skip cleanly elsewhere).
enable_language(CUDA)
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 80 86 89 90)
endif()
find_package(CUDAToolkit REQUIRED)
add_library(herd_cuda STATIC ${CMAKE_CURRENT_LIST_DIR}/device.cu)
target_include_directories(herd_cuda PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(herd_cuda PUBLIC CUDA::cudart_static)
target_compile_definitions(herd_cuda PUBLIC HERD_HAVE_CUDA=1)
