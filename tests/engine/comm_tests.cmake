# engine/comm: the collectives seam. In-process tests (inproc, ring over inproc:// and 127.0.0.1),
# then real processes: comm_rank started N times, and comm_mpi_rank under mpirun.
herd_add_test(test_comm SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_comm.cpp LIBS herd_comm TIMEOUT 120)
