# owner: Arm NEON backend. Included from kernels/cpu/sources.cmake; only AArch64 builds (native, or
# the cross build of tests/neon) compile it. The shared driver ../simd_driver.cpp (NeonBackend's
# body), cpu_has_dotprod.cpp and kernels_neon.cpp are baseline ARMv8-A; only kernels_neon_dotprod.cpp
# gets +dotprod, and the backend calls it only after the CPU said it has the instructions, so one
# binary runs on every AArch64 CPU.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
  target_sources(herd_kernels PRIVATE
    ${CMAKE_CURRENT_LIST_DIR}/../simd_driver.cpp
    ${CMAKE_CURRENT_LIST_DIR}/cpu_has_dotprod.cpp
    ${CMAKE_CURRENT_LIST_DIR}/kernels_neon.cpp
    ${CMAKE_CURRENT_LIST_DIR}/kernels_neon_dotprod.cpp)
  # -ffp-contract=off: only the FMAs written as intrinsics are fused (GCC fuses a*b+c on AArch64
  # by default), so the exact path's dequantized values equal the reference's and both tables
  # round the same way.
  set_source_files_properties(
    ${CMAKE_CURRENT_LIST_DIR}/../simd_driver.cpp ${CMAKE_CURRENT_LIST_DIR}/cpu_has_dotprod.cpp
    ${CMAKE_CURRENT_LIST_DIR}/kernels_neon.cpp
    PROPERTIES COMPILE_OPTIONS "-ffp-contract=off")
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/kernels_neon_dotprod.cpp PROPERTIES
    COMPILE_OPTIONS "-march=armv8.2-a+dotprod;-ffp-contract=off")
endif()
