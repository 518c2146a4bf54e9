// WorkerServer's side of stage hops between devices (worker/device_hop.h): the upstream's offer
// after it dialled the next stage, the downstream's answer. Every failure leaves the hop on the
// link, as a stage of a CPU worker has it, with the reason logged: a hop is an optimisation, never
// a reason for an assignment to fail.
#include <chrono>

#include "common/host_identity.h"
#include "common/log.h"
#include "worker/worker_server.h"

namespace herd {

using namespace transport;
using namespace cluster;

namespace {

constexpr int kHopAnswerTimeoutMs = 5000;  // a declined or accepted offer: answered at once

}  // namespace

uint64_t device_hop_tag(const std::string& token) { return nccl_group_tag("herd stage hop " + token); }

std::unique_ptr<DeviceHop> WorkerServer::join_hop(const NcclId& id, int rank, std::string* error) {
  try {  // a hook that throws (a CUDA error) is a failed join, not the end of the worker's loop
    auto hop = opts_.device_hop.join(id, rank, *backend_, opts_.device_hop_timeout_ms, error);
    if (!hop && error->empty()) *error = "the hop's hook made none";
    return hop;
  } catch (const std::exception& e) {
    *error = e.what();
    return nullptr;
  }
}

uint64_t WorkerServer::host() const { return opts_.host_identity ? opts_.host_identity : host_identity(); }

bool WorkerServer::can_hop() const {
  return opts_.device_hop && opts_.device_backend && backend_ && backend_->device().kind != Device::Kind::Host;
}

void WorkerServer::offer_device_hop(const Assign& a) {
  next_hop_.reset();
  if (!can_hop() || !next_) return;
  auto keep_link = [&](const std::string& why) {
    HERD_LOG_WARN("worker: no device hop to the next stage ", a.next_address, " (", why,
                  "); hidden states go over the link");
  };
  // What a device hop does not carry: a tensor-parallel stage or next group (every rank gets the
  // batch over the links), f16 hops (the link's rounding is part of the run's bits).
  if (a.tp.size > 1 || a.tp.next_addresses.size() > 1) return keep_link("tensor parallel");
  if (a.act_dtype != WireDType::F32) return keep_link("--act-dtype f16 rounds on the link");
  NcclIdMessage id;
  id.group_tag = device_hop_tag(a.next_token);
  id.nranks = 2;
  id.rank = 0;
  std::string id_err;
  try {
    id_err = opts_.device_hop.new_id(&id.id);
  } catch (const std::exception& e) {
    id_err = e.what();
  }
  if (!id_err.empty()) return keep_link("no group id: " + id_err);
  if (std::string err = next_->send(pack(HopOffer{encode_nccl_id(id), host(), opts_.nccl_across_hosts})); !err.empty())
    return keep_link(err);

  // The next stage's answers, each within its time; "" and *answer, or why there is none.
  auto answer = [&](int timeout_ms, HopAnswer* out) -> std::string {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "the next stage did not answer within " + std::to_string(timeout_ms) + " ms";
      Received r = next_->recv(static_cast<int>(left.count()));
      if (r.status == RecvStatus::timeout) continue;
      if (r.status != RecvStatus::ok) return "the link to the next stage: " + r.error;
      try {
        if (r.msg.type == static_cast<uint16_t>(MsgType::Error))
          return "the next stage answered: " + unpack<ErrorMsg>(r.msg).message;
        if (r.msg.type != static_cast<uint16_t>(MsgType::HopAnswer))
          return std::string("the next stage answered ") + msg_type_name(r.msg.type);
        *out = unpack<HopAnswer>(r.msg);
        return "";
      } catch (const ProtocolError& e) {
        return std::string("a malformed answer: ") + e.what();
      }
    }
  };
  HopAnswer first;
  if (std::string err = answer(kHopAnswerTimeoutMs, &first); !err.empty()) return keep_link(err);
  if (first.state != HopState::Accepted)
    return keep_link(first.state == HopState::Declined ? "the next stage declined: " + first.reason
                                                       : "the next stage answered out of turn");
  std::string err;
  auto hop = join_hop(id.id, 0, &err);
  // (Not joined: the next stage's own join times out and it answers Failed, which nobody reads;
  // the link to it carries nothing else until the next assignment dials it again.)
  if (!hop) return keep_link("cannot join the hop: " + err);
  HopAnswer joined;
  if (err = answer(opts_.device_hop_timeout_ms + kHopAnswerTimeoutMs, &joined); !err.empty()) return keep_link(err);
  if (joined.state != HopState::Joined)
    return keep_link(joined.state == HopState::Failed ? "the next stage could not join: " + joined.reason
                                                      : "the next stage answered out of turn");
  next_hop_ = std::move(hop);
  note("herd worker: hidden states to the next stage " + a.next_address + " over the device hop (" + next_hop_->name() + ")");
}

void WorkerServer::on_hop_offer(const std::string& peer, const Message& m) {
  const HopOffer o = unpack<HopOffer>(m);  // refusal() let only this stage's upstream send it
  prev_hop_.reset();
  std::string why;
  NcclIdMessage id;
  if (!can_hop()) why = opts_.device_backend ? "this worker's build makes no device hops" : "this stage computes on the CPU";
  else if (!stage_) why = "no stage assigned";
  else if (assign_.tp.size > 1) why = "a tensor-parallel stage takes its batches over the links";
  else if (assign_.act_dtype != WireDType::F32) why = "f16 activations";
  else if (std::string err = decode_nccl_id(o.id, device_hop_tag(assign_.upstream_token), 2, &id); !err.empty())
    why = "the offer's id: " + err;
  else if (id.rank != 0) why = "the offer's id is from rank " + std::to_string(id.rank) + ", not 0";
  else if (o.host != host() && !(o.across_hosts && opts_.nccl_across_hosts))
    why = std::string("the previous stage is on another host, and NCCL's network transport is neither authenticated "
                      "nor encrypted (--nccl-across-hosts on ") +
          (o.across_hosts ? "this worker" : opts_.nccl_across_hosts ? "the previous worker" : "both workers") +
          " allows it)";
  if (!why.empty()) {
    HERD_LOG_INFO("worker: declined a device hop from the previous stage: ", why);
    listener_->send(peer, pack(HopAnswer{HopState::Declined, why}));
    return;
  }
  if (std::string err = listener_->send(peer, pack(HopAnswer{HopState::Accepted, ""})); !err.empty()) {
    HERD_LOG_WARN("worker: cannot answer the previous stage's device hop offer: ", err);
    return;
  }
  // The previous stage joins now too; this loop serves nothing else until the group is formed or
  // the timeout passed (a setup step: the coordinator is waiting for that stage's Ready).
  std::string err;
  auto hop = join_hop(id.id, 1, &err);
  if (!hop) {
    HERD_LOG_WARN("worker: cannot join the device hop from the previous stage (", err, "); it uses the link");
    listener_->send(peer, pack(HopAnswer{HopState::Failed, err.substr(0, 1000)}));
    return;
  }
  if (err = listener_->send(peer, pack(HopAnswer{HopState::Joined, ""})); !err.empty()) {
    HERD_LOG_WARN("worker: cannot tell the previous stage the device hop is joined: ", err);
    return;
  }
  prev_hop_ = std::move(hop);
  HERD_LOG_INFO("worker: hidden states from the previous stage over the device hop (", prev_hop_->name(), ")");
}

}  // namespace herd
