# The partition planner: profiles, model shapes, memory/cost models, strategies, `herd plan`.
herd_add_test(test_partition SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/test_profile.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_cluster_file.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_model_shape.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_moe_shape.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_strategies.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_plan_cli.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_cost_model.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_memory_rss.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_tp_model.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_gpu_devices.cpp
  LIBS herd_partition)
add_dependencies(test_partition herd)
if(TARGET herd_cuda)  # the herd under test lists GPUs itself (else it says it was built without CUDA)
  target_compile_definitions(test_partition PRIVATE HERD_TEST_CUDA_BUILT=1)
endif()
