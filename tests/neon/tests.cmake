# owner: Arm NEON backend. Included from tests/kernels/tests.cmake.
# On an AArch64 host the NEON tests build and run natively like every other test. Elsewhere,
# neon_cross_tests cross-builds them (tests/neon/CMakeLists.txt, build dir reused between runs)
# and runs them under qemu-aarch64 with and without dotprod; it is skipped, with the reason,
# when the cross compiler or qemu is missing.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
  herd_add_test(test_neon_kernels
    SOURCES
      ${CMAKE_CURRENT_LIST_DIR}/../kernels/test_neon_matmul.cpp
      ${CMAKE_CURRENT_LIST_DIR}/../kernels/test_neon_ops.cpp
      ${CMAKE_CURRENT_LIST_DIR}/../kernels/test_neon_replay.cpp
    LIBS herd_engine herd_model herd_coordinator herd_kernels TIMEOUT 600)
  target_compile_options(test_neon_kernels PRIVATE -ffp-contract=off)
else()
  add_test(NAME neon_cross_tests
    COMMAND ${CMAKE_CURRENT_LIST_DIR}/run_cross_tests.sh ${CMAKE_BINARY_DIR}/neon-cross ${HERD_SHARED_DIR})
  set_tests_properties(neon_cross_tests PROPERTIES TIMEOUT 1500 SKIP_RETURN_CODE 77 LABELS neon)
endif()
