#include "coordinator/worker_set.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iomanip>
#include <random>
#include <sstream>
#include <stdexcept>

#include "cluster/link_measure.h"
#include "common/log.h"

namespace herd {

using namespace transport;
using namespace cluster;

namespace {

using Clock = std::chrono::steady_clock;

// "HOST (pid N)": how a worker names this coordinator in its log (Hello.name holds 256 bytes).
std::string coordinator_name() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return std::string(host[0] ? host : "?").substr(0, 200) + " (pid " + std::to_string(getpid()) + ")";
}

}  // namespace

std::string random_token() {
  std::random_device rd;  // getrandom(2) on Linux
  std::ostringstream os;
  for (int i = 0; i < 4; ++i) os << std::hex << std::setw(8) << std::setfill('0') << rd();
  return os.str();
}

const std::string& coordinator_session() {
  static const std::string s = random_token();
  return s;
}

std::string layers_text(const model::LayerRange& r) {
  return r.size() == 1 ? "layer " + std::to_string(r.first)
                       : "layers " + std::to_string(r.first) + "-" + std::to_string(r.end - 1);
}

std::vector<std::string> parse_worker_list(const std::string& spec) {
  std::vector<std::string> out;
  std::stringstream ss(spec);
  std::string part;
  while (std::getline(ss, part, ',')) {
    if (part.empty()) throw std::invalid_argument("--workers '" + spec + "' has an empty entry");
    try {
      transport::check_address(part, /*listening=*/false);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("--workers: ") + e.what());
    }
    out.push_back(part);
  }
  if (out.empty()) throw std::invalid_argument("--workers is empty");
  return out;
}

std::string WorkerSet::describe(size_t i) const {
  std::string s = "worker " + std::to_string(i + 1) + " of " + std::to_string(workers_.size()) + " (" +
                  workers_[i].address;
  if (i < ranges_.size()) s += ", " + layers_text(ranges_[i]);
  return s + ")";
}

void WorkerSet::fail(size_t i, const std::string& what, bool lost) {
  const std::string msg = describe(i) + ": " + what;
  const std::string address = workers_[i].address;
  close();  // the next eval reconnects and re-assigns everyone
  HERD_LOG_INFO(msg);  // the caller reports it (the CLI prints it once, as its error)
  throw WorkerError(msg, address, lost);
}

void WorkerSet::fail_root_cause(size_t i, const std::string& what, int grace_ms) {
  const auto until = Clock::now() + std::chrono::milliseconds(grace_ms);
  while (Clock::now() < until) {
    for (size_t j = 0; j < workers_.size(); ++j) {
      if (j == i || !workers_[j].link) continue;
      Received r = workers_[j].link->recv(j + 1 == workers_.size() ? 5 : 0);
      if (r.status == RecvStatus::closed)
        fail(j, "lost (" + r.error + "); " + describe(i) + " reported: " + what, /*lost=*/true);
    }
  }
  fail(i, what);
}

void WorkerSet::close() {
  for (auto& w : workers_) w.link.reset();
}

void WorkerSet::keep(const std::vector<size_t>& positions) {
  std::vector<Worker> active;
  for (size_t p : positions) active.push_back(std::move(workers_[p]));
  workers_ = std::move(active);  // the left-out workers' links close here
}

void WorkerSet::connect(const std::vector<std::string>& addresses, int timeout_ms, bool take_over) {
  workers_.clear();
  for (size_t i = 0; i < addresses.size(); ++i) workers_.push_back({normalize_address(addresses[i]), nullptr, {}, i});
  // Hello to everyone first, then collect the answers (in parallel: one timeout in all).
  Hello h;
  h.role = Role::Coordinator;
  h.name = coordinator_name();  // a worker logs it when we connect
  h.session = coordinator_session();
  h.take_over = take_over;
  for (size_t i = 0; i < workers_.size(); ++i) {
    try {
      workers_[i].link = transport::connect(workers_[i].address);
    } catch (const std::exception& e) {
      fail(i, e.what());
    }
    if (auto err = workers_[i].link->send(pack(h)); !err.empty()) fail(i, err);
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (size_t i = 0; i < workers_.size(); ++i) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    Received r = workers_[i].link->recv(static_cast<int>(std::max<int64_t>(left, 0)));
    if (r.status == RecvStatus::timeout)
      fail(i, "no answer within " + std::to_string(timeout_ms / 1000.0).substr(0, 4) +
                  " s (is `herd worker --listen " + workers_[i].address + "` running?)",
           /*lost=*/true);
    if (r.status != RecvStatus::ok) fail(i, r.error, /*lost=*/true);
    try {
      if (r.msg.type == static_cast<uint16_t>(MsgType::Error)) {
        const std::string why = unpack<ErrorMsg>(r.msg).message;
        // A worker older than protocol 4 drops us for the lane request that precedes our Hello.
        if (why.rfind("busy: ", 0) == 0) fail(i, why);  // another coordinator owns it
        fail(i, "refused: " + why +
                    (why.find("before Hello") != std::string::npos
                         ? " (an older herd worker? this coordinator speaks protocol " +
                               std::to_string(kProtocolVersion) + ": update herd on that host)"
                         : ""));
      }
      workers_[i].hello = unpack<Hello>(r.msg);
    } catch (const ProtocolError& e) {
      fail(i, std::string("bad handshake: ") + e.what());
    }
    if (workers_[i].hello.protocol_version != kProtocolVersion)
      fail(i, "speaks protocol version " + std::to_string(workers_[i].hello.protocol_version) +
                  ", this coordinator speaks " + std::to_string(kProtocolVersion) + " (update herd on that host)");
    if (workers_[i].hello.role != Role::Worker) fail(i, "answered but is not a worker");
  }
  // Measure each link (a few small round trips and one ~1 MiB echo through this very link).
  links_.assign(workers_.size(), {});
  for (size_t i = 0; i < workers_.size(); ++i) {
    try {
      LinkMeasureOptions lo;
      lo.timeout_ms = timeout_ms;
      links_[i] = measure_link(*workers_[i].link, lo);
    } catch (const std::exception& e) {
      fail(i, std::string("measuring the link: ") + e.what(), /*lost=*/true);
    }
    HERD_LOG_INFO(describe(i), ": link ", links_[i].latency_s * 1e6, " us one way, ",
                  links_[i].bandwidth_Bps / 1e9, " GB/s; profile (", workers_[i].hello.profile.source, ") ",
                  workers_[i].hello.profile.free_ram_bytes / 1e9, " GB free, ", workers_[i].hello.profile.read_bw_Bps / 1e9,
                  " GB/s read");
  }
}

}  // namespace herd
