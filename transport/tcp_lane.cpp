#include "transport/tcp_lane.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include <sodium.h>

namespace herd::transport {

namespace {

using Clock = std::chrono::steady_clock;

// A frame buffer grows by at most this much beyond what has arrived (see the header comment).
constexpr uint64_t kGrowStep = uint64_t{1} << 22;

void set_nonblocking(int fd) {
  const int fl = ::fcntl(fd, F_GETFL, 0);
  if (fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

void tune(int fd) {
  set_nonblocking(fd);
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // small messages go out at once
}

uint32_t le32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(std::min<int64_t>(left, 1 << 30)) : 0;
}

}  // namespace

LaneSocket::LaneSocket(int fd, uint64_t max_message_bytes) : fd_(fd), max_message_(max_message_bytes) { tune(fd_); }

LaneSocket::~LaneSocket() {
  if (fd_ >= 0) ::close(fd_);
  sodium_memzero(send_key_, sizeof send_key_);
  sodium_memzero(recv_key_, sizeof recv_key_);
}

namespace {
void nonce_of(uint64_t seq, unsigned char (&n)[crypto_aead_chacha20poly1305_IETF_NPUBBYTES]) {
  static_assert(crypto_aead_chacha20poly1305_IETF_NPUBBYTES == 12);
  std::memset(n, 0, 4);
  std::memcpy(n + 4, &seq, 8);
}
std::string peer_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "an unknown peer";
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
    std::string out(1, '[');  // (not "[" + string: GCC 12 warns -Wrestrict on that, falsely)
    out.append(host).append("]:").append(std::to_string(port));
    return out;
  }
  return "a local peer";
}
}  // namespace

void LaneSocket::seal(const uint8_t (&send_key)[kLaneKeyBytes], const uint8_t (&recv_key)[kLaneKeyBytes], std::string peer) {
  if (sodium_init() < 0) {
    fail("data lane: libsodium cannot initialise", false);
    return;
  }
  std::memcpy(send_key_, send_key, kLaneKeyBytes);
  std::memcpy(recv_key_, recv_key, kLaneKeyBytes);
  peer_ = peer.empty() ? peer_address(fd_) : std::move(peer);
  sealed_ = true;
  hold_ = held_ = false;
  std::string rest = std::move(stash_);
  stash_.clear();
  if (!rest.empty() && ok()) parse_sealed(rest.data(), rest.size());
}

bool LaneSocket::parse_sealed(const char* p, size_t n) {
  while (n > 0) {
    if (!in_body_) {
      const size_t take = std::min(n, sizeof shdr_ - shdr_have_);
      std::memcpy(shdr_ + shdr_have_, p, take);
      shdr_have_ += take;
      p += take;
      n -= take;
      if (shdr_have_ < sizeof shdr_) return true;
      shdr_have_ = 0;
      if (le32(shdr_) != kLaneSealedMagic)
        return fail("lane from " + peer_ + ": frame " + std::to_string(recv_seq_) + " is not sealed (bad magic)", true);
      sframes_ = le32(shdr_ + 4);
      uint64_t body = 0;
      std::memcpy(&body, shdr_ + 8, 8);
      if (sframes_ == 0 || sframes_ > kLaneMaxFrames)
        return fail("lane from " + peer_ + ": frame " + std::to_string(recv_seq_) + " announces " +
                        std::to_string(sframes_) + " parts", true);
      if (body < 8 * uint64_t{sframes_} || body - 8 * uint64_t{sframes_} > max_message_)
        return fail("lane from " + peer_ + ": frame " + std::to_string(recv_seq_) + " of " + std::to_string(body) +
                        " bytes (more than " + std::to_string(max_message_) + ")", true);
      sbody_len_ = body + kLaneTagBytes;
      sbody_have_ = 0;
      sbody_.clear();
      in_body_ = true;
    } else {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(n, sbody_len_ - sbody_have_));
      if (sbody_.size() < sbody_have_ + take)
        sbody_.resize(static_cast<size_t>(std::min(sbody_len_, sbody_have_ + take + kGrowStep)));
      std::memcpy(sbody_.data() + sbody_have_, p, take);
      sbody_have_ += take;
      p += take;
      n -= take;
    }
    if (in_body_ && sbody_have_ == sbody_len_ && !open_record()) return false;
  }
  return true;
}

bool LaneSocket::open_record() {
  in_body_ = false;
  const uint64_t body = sbody_len_ - kLaneTagBytes;
  unsigned char nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES];
  nonce_of(recv_seq_, nonce);
  auto* data = reinterpret_cast<unsigned char*>(sbody_.data());
  if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(data, nullptr, data, body, data + body,
                                                         reinterpret_cast<const unsigned char*>(shdr_), sizeof shdr_,
                                                         nonce, recv_key_) != 0)
    return fail("lane from " + peer_ + ": frame " + std::to_string(recv_seq_) +
                    " failed authentication (altered, replayed, reordered or not from this session)", true);
  const uint64_t seq = recv_seq_++;
  // Authentic: the sender framed it, so a bad inner layout is a broken peer, still named.
  std::vector<std::string> frames;
  frames.reserve(sframes_);
  uint64_t at = 0;
  for (uint32_t i = 0; i < sframes_; ++i) {
    uint64_t len = 0;
    if (body - at < 8) return fail("lane from " + peer_ + ": frame " + std::to_string(seq) + ": truncated part", true);
    std::memcpy(&len, data + at, 8);
    at += 8;
    if (len > body - at) return fail("lane from " + peer_ + ": frame " + std::to_string(seq) + ": truncated part", true);
    frames.emplace_back(reinterpret_cast<const char*>(data + at), static_cast<size_t>(len));
    at += len;
  }
  if (at != body) return fail("lane from " + peer_ + ": frame " + std::to_string(seq) + ": trailing bytes", true);
  if (sbody_.capacity() > (size_t{1} << 24)) std::string().swap(sbody_);  // do not pin a huge buffer
  first_ = false;
  for (const auto& f : frames) ready_bytes_ += f.size();
  ready_.push_back(std::move(frames));
  return true;
}

bool LaneSocket::fail(std::string why, bool protocol) {
  if (error_.empty()) {
    error_ = std::move(why);
    protocol_error_ = protocol;
  }
  return false;
}

bool LaneSocket::parse(const char* p, size_t n) {
  if (sealed_) return parse_sealed(p, n);
  if (held_) {
    stash_.append(p, n);
    return true;
  }
  while (n > 0) {
    if (state_ != State::FrameBody) {
      const size_t take = std::min(n, sizeof hdr_ - hdr_have_);
      std::memcpy(hdr_ + hdr_have_, p, take);
      hdr_have_ += take;
      p += take;
      n -= take;
      if (hdr_have_ < sizeof hdr_) return true;
      hdr_have_ = 0;
      if (state_ == State::MsgHeader) {
        if (le32(hdr_) != kLaneMagic) return fail("bad magic on the data lane (not a herd peer?)", true);
        frames_left_ = le32(hdr_ + 4);
        if (frames_left_ == 0 || frames_left_ > kLaneMaxFrames)
          return fail("data lane message announces " + std::to_string(frames_left_) + " frames", true);
        cur_.clear();
        msg_bytes_ = 0;
        state_ = State::FrameLength;
      } else {
        std::memcpy(&body_len_, hdr_, 8);
        msg_bytes_ += body_len_;
        const uint64_t limit = first_ ? std::min(max_message_, first_max_) : max_message_;
        if (body_len_ > limit || msg_bytes_ > limit)
          return fail("data lane message of " + std::to_string(std::max(body_len_, msg_bytes_)) + " bytes or more (more than " +
                          std::to_string(limit) + " bytes)", true);
        cur_.emplace_back();
        body_have_ = 0;
        state_ = State::FrameBody;
      }
    } else {
      std::string& f = cur_.back();
      const size_t take = static_cast<size_t>(std::min<uint64_t>(n, body_len_ - body_have_));
      if (f.size() < body_have_ + take) f.resize(static_cast<size_t>(std::min(body_len_, body_have_ + take + kGrowStep)));
      std::memcpy(f.data() + body_have_, p, take);
      body_have_ += take;
      p += take;
      n -= take;
    }
    if (state_ == State::FrameBody && body_have_ == body_len_) finish_frame();
    if (held_) {  // the first message is in: the rest waits for seal()
      stash_.append(p, n);
      return true;
    }
  }
  return true;
}

void LaneSocket::finish_frame() {
  cur_.back().resize(static_cast<size_t>(body_len_));
  if (--frames_left_ == 0) {
    if (first_ && hold_) held_ = true;
    first_ = false;
    for (const auto& f : cur_) ready_bytes_ += f.size();
    ready_.push_back(std::move(cur_));
    cur_.clear();
    state_ = State::MsgHeader;
  } else {
    state_ = State::FrameLength;
  }
}

bool LaneSocket::pump() {
  if (!ok()) return false;
  if (held_) return true;  // nothing more is read until seal()
  while (true) {
    if (ready_bytes_ >= kLaneMaxBufferedBytes) return true;  // the caller pops first (see send)
    // Large sealed records and frame bodies are read straight into their buffer; everything else
    // through a small one.
    if (sealed_ && in_body_ && sbody_len_ - sbody_have_ >= 65536) {
      const uint64_t want = std::min<uint64_t>(sbody_len_ - sbody_have_, kGrowStep);
      if (sbody_.size() < sbody_have_ + want) sbody_.resize(static_cast<size_t>(sbody_have_ + want));
      const ssize_t got = ::recv(fd_, sbody_.data() + sbody_have_, static_cast<size_t>(want), 0);
      if (got > 0) {
        sbody_have_ += static_cast<uint64_t>(got);
        if (sbody_have_ == sbody_len_ && !open_record()) return false;
        continue;
      }
      if (got == 0) return fail("the peer closed the data lane", false);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      return fail(std::string("data lane: ") + std::strerror(errno), false);
    }
    if (!sealed_ && state_ == State::FrameBody && body_len_ - body_have_ >= 65536) {
      std::string& f = cur_.back();
      const uint64_t want = std::min<uint64_t>(body_len_ - body_have_, kGrowStep);
      if (f.size() < body_have_ + want) f.resize(static_cast<size_t>(body_have_ + want));
      const ssize_t got = ::recv(fd_, f.data() + body_have_, static_cast<size_t>(want), 0);
      if (got > 0) {
        body_have_ += static_cast<uint64_t>(got);
        if (body_have_ == body_len_) finish_frame();
        continue;
      }
      if (got == 0) return fail("the peer closed the data lane", false);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      return fail(std::string("data lane: ") + std::strerror(errno), false);
    }
    char buf[65536];
    const ssize_t got = ::recv(fd_, buf, sizeof buf, 0);
    if (got > 0) {
      if (!parse(buf, static_cast<size_t>(got))) return false;
      if (static_cast<size_t>(got) < sizeof buf) return true;  // drained (saves one EAGAIN syscall)
      continue;
    }
    if (got == 0) return fail("the peer closed the data lane", false);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
    return fail(std::string("data lane: ") + std::strerror(errno), false);
  }
}

std::vector<std::string> LaneSocket::pop() {
  std::vector<std::string> m = std::move(ready_.front());
  ready_.pop_front();
  for (const auto& f : m) ready_bytes_ -= f.size();
  return m;
}

std::string LaneSocket::send(const std::vector<std::string>& frames, int timeout_ms) {
  if (!ok()) return error_;
  if (frames.empty() || frames.size() > kLaneMaxFrames) return "cannot send " + std::to_string(frames.size()) + " frames";
  if (sealed_) return send_sealed(frames, timeout_ms);
  // One gather write of [header, len0, frame0, len1, frame1, ...]; partial writes resume where they stopped.
  char head[8];
  const uint32_t magic = kLaneMagic, nf = static_cast<uint32_t>(frames.size());
  std::memcpy(head, &magic, 4);
  std::memcpy(head + 4, &nf, 4);
  std::vector<uint64_t> lens(frames.size());
  std::vector<iovec> iov;
  iov.reserve(1 + 2 * frames.size());
  iov.push_back({head, 8});
  for (size_t i = 0; i < frames.size(); ++i) {
    lens[i] = frames[i].size();
    iov.push_back({&lens[i], 8});
    if (!frames[i].empty()) iov.push_back({const_cast<char*>(frames[i].data()), frames[i].size()});
  }
  return write_all(iov, timeout_ms);
}

std::string LaneSocket::send_sealed(const std::vector<std::string>& frames, int timeout_ms) {
  uint64_t body = 0;
  for (const auto& f : frames) body += 8 + f.size();
  char head[kLaneSealedHeaderBytes];
  const uint32_t magic = kLaneSealedMagic, nf = static_cast<uint32_t>(frames.size());
  std::memcpy(head, &magic, 4);
  std::memcpy(head + 4, &nf, 4);
  std::memcpy(head + 8, &body, 8);
  sbuf_.resize(static_cast<size_t>(body + kLaneTagBytes));
  char* w = sbuf_.data();
  for (const auto& f : frames) {
    const uint64_t len = f.size();
    std::memcpy(w, &len, 8);
    if (len) std::memcpy(w + 8, f.data(), f.size());
    w += 8 + len;
  }
  unsigned char nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES];
  nonce_of(send_seq_++, nonce);
  auto* data = reinterpret_cast<unsigned char*>(sbuf_.data());
  crypto_aead_chacha20poly1305_ietf_encrypt_detached(data, data + body, nullptr, data, body,
                                                     reinterpret_cast<const unsigned char*>(head), sizeof head,
                                                     nullptr, nonce, send_key_);
  std::vector<iovec> iov{{head, sizeof head}, {sbuf_.data(), sbuf_.size()}};
  std::string err = write_all(iov, timeout_ms);
  if (sbuf_.capacity() > (size_t{1} << 24)) std::string().swap(sbuf_);
  return err;
}

std::string LaneSocket::write_all(std::vector<iovec>& iov, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  size_t first = 0;
  while (first < iov.size()) {
    msghdr mh{};
    mh.msg_iov = iov.data() + first;
    mh.msg_iovlen = iov.size() - first;  // <= 1 + 2 * kLaneMaxFrames, under any IOV_MAX
    const ssize_t put = ::sendmsg(fd_, &mh, MSG_NOSIGNAL);
    if (put >= 0) {
      size_t left = static_cast<size_t>(put);
      while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
      if (left > 0) {
        iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
        iov[first].iov_len -= left;
      }
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      fail(std::string("data lane: ") + std::strerror(errno), false);
      return error_;
    }
    // Reading meanwhile, unless a peer that does not read us has already filled our buffer.
    const bool read_too = ready_bytes_ < kLaneMaxBufferedBytes;
    pollfd p{fd_, static_cast<short>(read_too ? POLLOUT | POLLIN : POLLOUT), 0};
    const int left_ms = remaining_ms(deadline);
    if (left_ms <= 0) {
      // The stream now ends inside a message: nothing more can be sent on it.
      fail("data lane: the peer took nothing for " + std::to_string(timeout_ms) + " ms", false);
      return error_;
    }
    if (::poll(&p, 1, left_ms) < 0 && errno != EINTR) {
      fail(std::string("data lane: poll: ") + std::strerror(errno), false);
      return error_;
    }
    if ((p.revents & POLLIN) && !pump()) return error_;  // (a broken stream cannot carry the rest)
  }
  return {};
}

int lane_listen(const std::string& host, uint16_t* port) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  const std::string h = host.empty() || host == "*" ? "0.0.0.0" : host;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    len = sizeof *v4;
  } else if (::inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    len = sizeof *v6;
  } else {
    throw std::runtime_error("data lane: '" + host + "' is not an IP address");
  }
  const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("data lane: socket: ") + std::strerror(errno));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 64) != 0) {
    const std::string e = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error("data lane: cannot listen on " + h + ": " + e);
  }
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("data lane: getsockname failed");
  }
  *port = ntohs(ss.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
  return fd;
}

int lane_accept(int listen_fd) {
  while (true) {
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0 || errno != EINTR) return fd;
  }
}

int lane_connect(const std::string& host, uint16_t port, int timeout_ms) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0)
    throw std::runtime_error("data lane: cannot resolve " + host + ": " + ::gai_strerror(rc));
  std::string last = "no address";
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (addrinfo* a = res; a; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      rc = ::poll(&p, 1, remaining_ms(deadline)) == 1 ? 0 : -1;
      int err = rc == 0 ? 0 : ETIMEDOUT;
      socklen_t el = sizeof err;
      if (rc == 0) ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
      errno = err;
      rc = err == 0 ? 0 : -1;
    }
    if (rc == 0) {
      ::freeaddrinfo(res);
      return fd;
    }
    last = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  throw std::runtime_error("data lane: cannot connect to " + host + ":" + service + ": " + last);
}

std::string tcp_host_of(const std::string& address) {
  if (address.rfind("tcp://", 0) != 0) return {};
  std::string rest = address.substr(6);
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos) return {};
  std::string host = rest.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.find(';') != std::string::npos) host = host.substr(host.find(';') + 1);  // ZeroMQ's "source;dest"
  return host;
}

}  // namespace herd::transport
