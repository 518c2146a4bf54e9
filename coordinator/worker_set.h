// The workers a RemotePipeline talks to: one link each, opened with the Hello handshake (protocol
// version, role, the worker's profile) and measured right after it (cluster/link_measure.h), and
// the way a worker's trouble becomes an error value — a std::runtime_error naming the worker, its
// address and its layers, after every link is closed so that the next request reconnects all.
#pragma once

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cluster/protocol.h"
#include "model/weights.h"
#include "transport/link.h"

namespace herd {

// This process's coordinator session id (32 random hex digits, made once): a worker recognises its
// owner by it when the owner reconnects (cluster/protocol.h "Roles").
const std::string& coordinator_session();
// 32 random hex digits (link tokens).
std::string random_token();

// What WorkerSet::fail throws: the message names the worker; `address` and `lost` say which one and
// whether it is gone or stuck (a dead link, no progress) rather than reporting an error of its own
// (a refusal, a bad message): a lost worker may be left out and the rest re-planned
// (RemotePipelineOptions::on_worker_loss), a worker that reports an error is not second-guessed.
class WorkerError : public std::runtime_error {
 public:
  WorkerError(const std::string& msg, std::string address, bool lost)
      : std::runtime_error(msg), address(std::move(address)), lost(lost) {}
  std::string address;  // normalized (tcp://HOST:PORT, inproc://...)
  bool lost = false;
};

class WorkerSet {
 public:
  struct Worker {
    std::string address;
    std::unique_ptr<transport::Link> link;  // null once failed (or not connected yet)
    cluster::Hello hello;                   // the worker's answer: its profile
    size_t index = 0;                       // position in the list given to connect()
  };

  // `ranges`: the layers of each worker (the pipeline's, may be shorter or empty), named in describe().
  explicit WorkerSet(const std::vector<model::LayerRange>& ranges) : ranges_(ranges) {}

  // Connects to every address (normalized: "HOST:PORT" is tcp://), sends all Hellos, then collects
  // the answers within one timeout, and measures each link. Throws via fail() naming the worker.
  // With take_over, workers owned by another coordinator are taken from it; without, such a worker
  // answers "busy: owned by HOST (pid P) since T", which fail() reports.
  void connect(const std::vector<std::string>& addresses, int timeout_ms, bool take_over = false);

  size_t size() const { return workers_.size(); }
  Worker& operator[](size_t i) { return workers_[i]; }
  const Worker& operator[](size_t i) const { return workers_[i]; }
  std::vector<Worker>::iterator begin() { return workers_.begin(); }
  std::vector<Worker>::iterator end() { return workers_.end(); }

  // Coordinator -> worker link of every address given to connect(), in that order.
  const std::vector<cluster::LinkStats>& links() const { return links_; }

  // Keeps the workers at `positions`, in that order (the plan's stages); the others' links close.
  void keep(const std::vector<size_t>& positions);
  // Closes every link (the next request reconnects).
  void close();

  // "worker 2 of 3 (tcp://host:port, layers 4-7)".
  std::string describe(size_t i) const;
  // Closes every link and throws WorkerError "<describe(i)>: <what>" (logged at info). lost: the
  // worker is gone or stuck (see WorkerError).
  [[noreturn]] void fail(size_t i, const std::string& what, bool lost = false);
  // For an error reported by worker i: a stage that cannot reach its neighbour reports an error,
  // but the news worth giving is which worker died, so this looks briefly for a lost connection
  // before blaming the reporter (a lost one is thrown as lost). Throws as fail().
  // grace_ms: how long to look (a tensor-parallel rank reports its ring's error about when the
  // coordinator's own link to a stopped neighbour times out: longer there).
  [[noreturn]] void fail_root_cause(size_t i, const std::string& what, int grace_ms = 300);

 private:
  const std::vector<model::LayerRange>& ranges_;
  std::vector<Worker> workers_;
  std::vector<cluster::LinkStats> links_;
};

// "layer 3" or "layers 0-13".
std::string layers_text(const model::LayerRange& r);

// "a:1,b:2" -> {"a:1", "b:2"} (empty parts rejected).
std::vector<std::string> parse_worker_list(const std::string& spec);

}  // namespace herd
