# test_cuda: the CUDA backend on a GPU (every op × type, replay of ../shared/reference, repeated runs).
# One ctest entry: on a host without a CUDA device every test skips with the reason and ctest
# reports it as skipped, never as passed. scripts/gpu-check.sh runs it on a GPU machine.
if(TARGET herd_cuda)
  add_executable(test_cuda ${CMAKE_CURRENT_LIST_DIR}/test_cuda.cpp)
  set_target_properties(test_cuda PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  target_link_libraries(test_cuda PRIVATE herd_cuda herd_coordinator herd_worker herd_engine herd_model herd_kernels
    GTest::gtest GTest::gtest_main herd_warnings)
  target_include_directories(test_cuda PRIVATE ${CMAKE_SOURCE_DIR})
  target_compile_definitions(test_cuda PRIVATE HERD_SHARED_DIR="${HERD_SHARED_DIR}" HERD_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
    HERD_BIN="${CMAKE_BINARY_DIR}/bin/herd")
  if(TARGET herd_comm_nccl)
    target_link_libraries(test_cuda PRIVATE herd_comm_nccl)
    target_compile_definitions(test_cuda PRIVATE HERD_HAVE_NCCL=1)
  endif()
  add_dependencies(test_cuda herd)  # the worker processes of its pipeline tests
  add_test(NAME test_cuda COMMAND test_cuda)
  set_tests_properties(test_cuda PROPERTIES SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" TIMEOUT 600 LABELS gpu)
endif()
