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
