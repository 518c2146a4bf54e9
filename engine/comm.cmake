# engine/comm: collectives (all-reduce, all-gather, broadcast) behind one seam. The seam and the
# in-process group (comm.cpp, inproc_comm.cpp) are in herd_engine, which runs tensor parallelism
# over them; the ring over transport links is herd_comm; MPI its own target so nothing else needs MPI.
add_library(herd_comm STATIC
  ${CMAKE_CURRENT_LIST_DIR}/ring_comm.cpp
)
target_include_directories(herd_comm PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(herd_comm PUBLIC herd_engine herd_transport herd_common Threads::Threads PRIVATE herd_warnings)

find_package(MPI COMPONENTS CXX QUIET)
if(MPI_CXX_FOUND)
  add_library(herd_comm_mpi STATIC ${CMAKE_CURRENT_LIST_DIR}/mpi_comm.cpp)
  target_include_directories(herd_comm_mpi PUBLIC ${CMAKE_SOURCE_DIR})
  target_link_libraries(herd_comm_mpi PUBLIC herd_comm MPI::MPI_CXX PRIVATE herd_warnings)
endif()

# NCCL (engine/nccl_comm.h): a Comm on CUDA device pointers, built only with the CUDA backend and
# libnccl found. A .cpp compiled by the host compiler against the toolkit's headers, linking the CUDA
# runtime (herd_cuda's cudart_static: one runtime per binary) and NCCL; the rank-order sum kernel
# comes from herd_cuda. Warnings are errors here: nothing
# runs it in CI, so compiling cleanly is what CI checks.
if(HERD_CUDA AND TARGET herd_cuda)
  find_library(HERD_NCCL_LIB nccl HINTS /usr/local/cuda/lib /usr/local/cuda-13.0/lib /usr/local/cuda/lib64)
  find_path(HERD_NCCL_INCLUDE nccl.h HINTS /usr/local/cuda/include /usr/local/cuda-13.0/include)
  if(HERD_NCCL_LIB AND HERD_NCCL_INCLUDE)
    add_library(herd_comm_nccl STATIC ${CMAKE_CURRENT_LIST_DIR}/nccl_comm.cpp)
    target_include_directories(herd_comm_nccl PUBLIC ${CMAKE_SOURCE_DIR} PRIVATE ${HERD_NCCL_INCLUDE})
    target_link_libraries(herd_comm_nccl PUBLIC herd_engine herd_cuda PRIVATE ${HERD_NCCL_LIB} herd_warnings)
    target_compile_options(herd_comm_nccl PRIVATE -Werror)
    message(STATUS "herd_comm_nccl: NCCL ${HERD_NCCL_LIB}")
  else()
    message(STATUS "herd_comm_nccl: libnccl or nccl.h not found; no NCCL Comm in this build")
  endif()
endif()
