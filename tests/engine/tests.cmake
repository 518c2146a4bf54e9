# engine/: the sampler, stages and local pipelines (replay against llama.cpp's logits), batches.
herd_add_test(test_sampler UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sampler.cpp LIBS herd_engine)
herd_add_test(test_reference_replay SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_reference_replay.cpp
  LIBS herd_coordinator herd_engine herd_model herd_kernels TIMEOUT 600)
herd_add_test(test_arch_variants UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_arch_variants.cpp
  LIBS herd_coordinator herd_engine herd_model herd_kernels herd_test_tiny_models)
herd_add_test(test_lowbit_replay SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_lowbit_replay.cpp
  LIBS herd_coordinator herd_engine herd_model herd_kernels herd_test_tiny_models)
herd_add_test(test_stage_prepare UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_stage_prepare.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_stage_support.cpp
  LIBS herd_engine herd_model herd_kernels)
include(${CMAKE_CURRENT_LIST_DIR}/comm_tests.cmake)
herd_add_test(test_batch UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_batch.cpp
  LIBS herd_engine herd_model herd_kernels herd_test_tiny_models)
herd_add_test(test_tensor_parallel UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_tensor_parallel.cpp
  LIBS herd_coordinator herd_engine herd_model herd_kernels herd_test_tiny_models TIMEOUT 600)
herd_add_test(test_host_probe UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_host_probe.cpp LIBS herd_engine herd_kernels)
herd_add_test(test_read_bound UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_read_bound.cpp LIBS herd_engine)
# The Stage's contract with a device backend, on a guarded arena the host cannot touch ([cuda]).
herd_add_test(test_device_seam UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_device_seam.cpp
  LIBS herd_engine herd_model herd_kernels herd_test_tiny_models)
# Tensor-parallel ranks on devices joined through a Comm on the device's memory ([cuda] item 3).
herd_add_test(test_device_tp UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_device_tp.cpp
  LIBS herd_coordinator herd_engine herd_model herd_kernels)
