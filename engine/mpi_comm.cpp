#include "engine/mpi_comm.h"

#include <chrono>
#include <climits>
#include <cstring>
#include <thread>

namespace herd {

MpiComm::MpiComm(MPI_Comm comm) : comm_(comm) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
}

std::string MpiComm::check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return {};
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  broken_ = "mpi rank " + std::to_string(rank_) + ": " + what + ": " + std::string(text, len);
  return broken_;
}

std::string MpiComm::wait(MPI_Request* req, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms());
  while (true) {
    int done = 0;
    if (auto e = check(MPI_Test(req, &done, MPI_STATUS_IGNORE), what); !e.empty()) return e;
    if (done) return {};
    if (std::chrono::steady_clock::now() >= deadline) {
      broken_ = "mpi rank " + std::to_string(rank_) + ": " + what + " timed out after " +
                std::to_string(timeout_ms()) + " ms";
      return broken_;
    }
    // Open MPI progresses inside MPI_Test; yielding lets oversubscribed ranks share a core.
    std::this_thread::yield();
  }
}

std::string MpiComm::all_reduce_sum(float* data, size_t n) {
  if (!broken_.empty()) return broken_;
  if (n > static_cast<size_t>(INT_MAX)) return "mpi: " + std::to_string(n) + " floats exceed MPI's int counts";
  if (size_ == 1 || n == 0) return {};
  // Slice j = [n*j/size, n*(j+1)/size) belongs to rank j.
  std::vector<int> send_counts(size_), send_displs(size_), recv_counts(size_), recv_displs(size_);
  const size_t lo = n * rank_ / size_, mine = n * (rank_ + 1) / size_ - lo;
  for (int j = 0; j < size_; ++j) {
    send_displs[j] = static_cast<int>(n * j / size_);
    send_counts[j] = static_cast<int>(n * (j + 1) / size_) - send_displs[j];
    recv_counts[j] = static_cast<int>(mine);
    recv_displs[j] = static_cast<int>(mine * j);
  }
  gathered_.resize(mine * size_);  // [size, mine]: row r = rank r's slice of my part
  MPI_Request req;
  if (auto e = check(MPI_Ialltoallv(data, send_counts.data(), send_displs.data(), MPI_FLOAT, gathered_.data(),
                                    recv_counts.data(), recv_displs.data(), MPI_FLOAT, comm_, &req),
                     "MPI_Ialltoallv");
      !e.empty())
    return e;
  if (auto e = wait(&req, "MPI_Ialltoallv"); !e.empty()) return e;
  std::vector<const float*> parts(size_);
  for (int r = 0; r < size_; ++r) parts[r] = gathered_.data() + mine * r;
  std::vector<float> summed(mine);
  rank_order_sum(parts.data(), size_, mine, summed.data());
  if (auto e = check(MPI_Iallgatherv(summed.data(), static_cast<int>(mine), MPI_FLOAT, data, send_counts.data(),
                                     send_displs.data(), MPI_FLOAT, comm_, &req),
                     "MPI_Iallgatherv");
      !e.empty())
    return e;
  return wait(&req, "MPI_Iallgatherv");
}

std::string MpiComm::all_gather(const float* in, size_t n, float* out) {
  if (!broken_.empty()) return broken_;
  if (n > static_cast<size_t>(INT_MAX)) return "mpi: " + std::to_string(n) + " floats exceed MPI's int counts";
  if (n == 0) return {};
  MPI_Request req;
  if (auto e = check(MPI_Iallgather(in, static_cast<int>(n), MPI_FLOAT, out, static_cast<int>(n), MPI_FLOAT, comm_, &req),
                     "MPI_Iallgather");
      !e.empty())
    return e;
  return wait(&req, "MPI_Iallgather");
}

std::string MpiComm::broadcast(float* data, size_t n, int root) {
  if (!broken_.empty()) return broken_;
  if (n > static_cast<size_t>(INT_MAX)) return "mpi: " + std::to_string(n) + " floats exceed MPI's int counts";
  if (root < 0 || root >= size_) return "mpi: broadcast root " + std::to_string(root) + " out of range";
  if (n == 0) return {};
  MPI_Request req;
  if (auto e = check(MPI_Ibcast(data, static_cast<int>(n), MPI_FLOAT, root, comm_, &req), "MPI_Ibcast"); !e.empty())
    return e;
  return wait(&req, "MPI_Ibcast");
}

}  // namespace herd
