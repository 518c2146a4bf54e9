# engine/comm: the collectives seam. In-process tests (inproc, ring over inproc:// and 127.0.0.1),
# then real processes: comm_rank started N times, and comm_mpi_rank under mpirun.
herd_add_test(test_comm UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_comm.cpp LIBS herd_comm herd_kernels TIMEOUT 120)

add_executable(comm_rank ${CMAKE_CURRENT_LIST_DIR}/comm_rank.cpp)
set_target_properties(comm_rank PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
target_include_directories(comm_rank PRIVATE ${CMAKE_SOURCE_DIR})
target_link_libraries(comm_rank PRIVATE herd_comm herd_warnings)
set(_comm_process_deps comm_rank)
if(TARGET herd_comm_mpi)
  add_executable(comm_mpi_rank ${CMAKE_CURRENT_LIST_DIR}/comm_mpi_rank.cpp)
  set_target_properties(comm_mpi_rank PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  target_include_directories(comm_mpi_rank PRIVATE ${CMAKE_SOURCE_DIR})
  target_link_libraries(comm_mpi_rank PRIVATE herd_comm_mpi herd_warnings)
  list(APPEND _comm_process_deps comm_mpi_rank)
endif()
herd_add_test(test_comm_processes SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_comm_processes.cpp LIBS Threads::Threads TIMEOUT 240)
target_compile_definitions(test_comm_processes PRIVATE HERD_TESTS_DIR="${CMAKE_BINARY_DIR}/tests")
add_dependencies(test_comm_processes ${_comm_process_deps})

# The NCCL bootstrap (engine/nccl_bootstrap.h) and NcclComm's host-side decisions (engine/nccl_poll.h):
# host-only, every build. The exchange runs over InprocComm and RingComm on 127.0.0.1.
herd_add_test(test_nccl_bootstrap UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_nccl_bootstrap.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_nccl_poll.cpp LIBS herd_comm TIMEOUT 120)
# NcclComm on GPUs (one thread per device); built with herd_comm_nccl, every test SKIPPED without a
# CUDA device. Building it is also the link check of herd_comm_nccl (CI has nvcc and NCCL, no GPU).
if(TARGET herd_comm_nccl)
  herd_add_test(test_nccl_comm SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_nccl_comm.cpp LIBS herd_comm_nccl herd_cuda TIMEOUT 300)
  target_compile_options(test_nccl_comm PRIVATE -Werror)
endif()
