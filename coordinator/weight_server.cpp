#include "coordinator/weight_server.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "cluster/protocol.h"
#include "common/log.h"
#include "transport/crc32.h"

namespace herd {

using namespace transport;
using namespace cluster;

WeightServer::WeightServer(const model::GgufFile& file, int debug_corrupt_chunks, int debug_tamper_chunks)
    : file_(file),
      fd_(::open(file.path().c_str(), O_RDONLY | O_CLOEXEC)),
      corrupt_chunks_(debug_corrupt_chunks),
      tamper_chunks_(debug_tamper_chunks) {}

WeightServer::~WeightServer() {
  if (fd_ >= 0) ::close(fd_);
}

void WeightServer::allow(const model::ModelConfig& c, const std::vector<model::LayerRange>& ranges) {
  servable_.assign(ranges.size(), {{0, file_.data_offset()}});
  for (size_t k = 0; k < ranges.size(); ++k)
    for (const auto& name : model::stage_tensor_names(file_, c, ranges[k])) {
      const model::GgufTensorInfo* t = file_.find_tensor(name);
      if (t) servable_[k].push_back({file_.data_offset() + t->offset, file_.data_offset() + t->offset + t->n_bytes});
    }
}

uint64_t WeightServer::servable_bytes(size_t k) const {
  uint64_t n = 0;
  if (k < servable_.size())
    for (const auto& [b, e] : servable_[k]) n += e - b;
  return n;
}

std::string WeightServer::serve(size_t k, Link& link, const Message& m, uint64_t session, const std::string& who) {
  WeightRequest q;
  try {
    q = unpack<WeightRequest>(m);
  } catch (const ProtocolError& e) {
    return std::string("bad weight request: ") + e.what();
  }
  if (q.session != session) return "";  // from an abandoned assignment
  auto refuse = [&](const std::string& why) {
    HERD_LOG_WARN(who, ": ", why);
    return link.send(pack(ErrorMsg{0, why}));
  };
  if (fd_ < 0) return refuse("the coordinator cannot read its model file " + file_.path() + " to send weights");
  bool ok = false;
  if (k < servable_.size())
    for (const auto& [b, e] : servable_[k]) ok |= q.offset >= b && q.offset <= e && q.length <= e - q.offset;
  if (!ok)
    return refuse("weight request for bytes " + std::to_string(q.offset) + "+" + std::to_string(q.length) +
                  " outside the header and this worker's tensors");
  Tensor t;
  t.dtype = WireDType::U8;
  t.shape = {static_cast<int64_t>(q.length)};
  t.data.resize(q.length);
  size_t done = 0;
  while (done < q.length) {
    const ssize_t got = ::pread(fd_, t.data.data() + done, q.length - done, static_cast<off_t>(q.offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return refuse("cannot read " + file_.path() + " at offset " + std::to_string(q.offset + done));
    done += static_cast<size_t>(got);
  }
  if (q.offset >= file_.data_offset() && chunks_tampered_ < tamper_chunks_) {
    t.data[t.data.size() / 2] ^= 0x01;
    ++chunks_tampered_;
  }
  WeightChunk c{session, q.offset, crc32(t.data.data(), t.data.size())};
  if (corrupt_chunks_ < 0 || chunks_corrupted_ < corrupt_chunks_) {
    t.data[t.data.size() / 2] ^= 0x5A;
    ++chunks_corrupted_;
  }
  bytes_sent_ += q.length;
  return link.send(pack(c, {std::move(t)}));
}

}  // namespace herd
