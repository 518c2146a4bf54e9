# owner: engine (lead). Architecture hyper-parameters and per-stage weights.
target_sources(herd_model PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/arch.cpp
  ${CMAKE_CURRENT_LIST_DIR}/weights.cpp
  ${CMAKE_CURRENT_LIST_DIR}/synth.cpp
)
