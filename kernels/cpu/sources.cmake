# owner: kernels helper. Scalar reference backend and quant formats.
set(_herd_cpu_reference_sources
  ${CMAKE_CURRENT_LIST_DIR}/quant_row.cpp
  ${CMAKE_CURRENT_LIST_DIR}/quant_legacy.cpp
  ${CMAKE_CURRENT_LIST_DIR}/quant_kquants.cpp
  ${CMAKE_CURRENT_LIST_DIR}/quant_kquants_low.cpp
  ${CMAKE_CURRENT_LIST_DIR}/thread_pool.cpp
  ${CMAKE_CURRENT_LIST_DIR}/reference_backend.cpp
)
target_sources(herd_kernels PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/dtype.cpp
  ${_herd_cpu_reference_sources}
)
# The reference is the oracle: its rounding must not change with -march/-mfma (no fused
# multiply-add contraction), so dequantized values are exactly the layout's formulas.
set_source_files_properties(${_herd_cpu_reference_sources} PROPERTIES COMPILE_OPTIONS -ffp-contract=off)

# owner: x86 SIMD backend. cpu_backend.cpp, simd_backend.cpp and the shared driver simd_driver.cpp
# are baseline code (they decide at run time); only the two kernel-table units get ISA flags, so
# the binary runs on any x86-64.
target_sources(herd_kernels PRIVATE ${CMAKE_CURRENT_LIST_DIR}/cpu_backend.cpp)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  target_sources(herd_kernels PRIVATE
    ${CMAKE_CURRENT_LIST_DIR}/simd_driver.cpp
    ${CMAKE_CURRENT_LIST_DIR}/x86/simd_backend.cpp
    ${CMAKE_CURRENT_LIST_DIR}/x86/kernels_avx2.cpp
    ${CMAKE_CURRENT_LIST_DIR}/x86/kernels_avx512.cpp)
  # -ffp-contract=off: only the FMAs written as intrinsics are fused, so the exact path's
  # dequantized values equal the reference's and AVX2/AVX-512 round the same way.
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/x86/kernels_avx2.cpp PROPERTIES
    COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-ffp-contract=off")
  # -Wno-(maybe-)uninitialized: GCC 12 warns inside its own avx512fintrin.h (the _mm512_undefined_*
  # placeholders of masked intrinsics), not about our code.
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/x86/kernels_avx512.cpp PROPERTIES
    COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-ffp-contract=off;-Wno-uninitialized;-Wno-maybe-uninitialized")
endif()

# owner: Arm NEON backend (compiles nothing unless the target is AArch64).
include(${CMAKE_CURRENT_LIST_DIR}/arm/sources.cmake)
