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
