# owner: engine (lead).
target_sources(herd_worker PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/worker_server.cpp
  ${CMAKE_CURRENT_LIST_DIR}/shard_loader.cpp
  ${CMAKE_CURRENT_LIST_DIR}/device_hop.cpp
  ${CMAKE_CURRENT_LIST_DIR}/weight_cache.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bounds.cpp
  ${CMAKE_CURRENT_LIST_DIR}/mem_budget.cpp
  ${CMAKE_CURRENT_LIST_DIR}/shard_budget.cpp
  ${CMAKE_CURRENT_LIST_DIR}/streamed_weights.cpp
  ${CMAKE_CURRENT_LIST_DIR}/stream_plan.cpp
)
