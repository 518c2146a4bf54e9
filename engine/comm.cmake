# engine/comm: collectives (all-reduce, all-gather, broadcast) behind one seam, over in-process
# threads and a ring of transport links; MPI in its own target so nothing else needs MPI to link.
add_library(herd_comm STATIC
  ${CMAKE_CURRENT_LIST_DIR}/comm.cpp
  ${CMAKE_CURRENT_LIST_DIR}/inproc_comm.cpp
  ${CMAKE_CURRENT_LIST_DIR}/ring_comm.cpp
)
target_include_directories(herd_comm PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(herd_comm PUBLIC herd_transport herd_common Threads::Threads PRIVATE herd_warnings)

find_package(MPI COMPONENTS CXX QUIET)
if(MPI_CXX_FOUND)
  add_library(herd_comm_mpi STATIC ${CMAKE_CURRENT_LIST_DIR}/mpi_comm.cpp)
  target_include_directories(herd_comm_mpi PUBLIC ${CMAKE_SOURCE_DIR})
  target_link_libraries(herd_comm_mpi PUBLIC herd_comm MPI::MPI_CXX PRIVATE herd_warnings)
endif()
