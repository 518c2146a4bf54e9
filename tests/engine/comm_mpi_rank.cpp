// One rank of an MpiComm under mpirun (test_comm_processes): the same checks as every other Comm.
// Exit 0 when every check passed on this rank, 1 otherwise.
#include <mpi.h>

#include <cstdio>

#include "engine/mpi_comm.h"
#include "tests/engine/comm_checks.h"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  std::string err;
  {
    herd::MpiComm comm;
    herd::test::CommCheckOptions o;
    o.max_delay_ms = 2;
    err = herd::test::run_comm_checks(comm, o);
    if (err.empty()) std::printf("mpi rank %d/%d: all checks passed\n", comm.rank(), comm.size());
    else std::fprintf(stderr, "%s\n", err.c_str());
  }
  MPI_Finalize();
  return err.empty() ? 0 : 1;
}
