# owner: sampler.
# Compiled into herd_worker (herd_coordinator links it): the last pipeline stage samples
# (worker/ may not depend on coordinator/).
target_sources(herd_worker PRIVATE ${CMAKE_CURRENT_LIST_DIR}/sampler.cpp)
