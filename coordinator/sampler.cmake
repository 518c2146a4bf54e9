# owner: sampler.
target_sources(herd_coordinator PRIVATE ${CMAKE_CURRENT_LIST_DIR}/sampler.cpp)
