# owner: kernels helper. Scalar reference backend and quant formats.
set(_herd_cpu_reference_sources
  ${CMAKE_CURRENT_LIST_DIR}/quant_row.cpp
  ${CMAKE_CURRENT_LIST_DIR}/quant_legacy.cpp
  ${CMAKE_CURRENT_LIST_DIR}/quant_kquants.cpp
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
