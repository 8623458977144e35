// vhost-user front-end messages; see vhost_user_client.h.
#include "vhost_user_client.h"

#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common.h"

namespace vb {

namespace {
constexpr uint32_t kVersion = 0x1, kReplyFlag = 0x4, kNeedReplyFlag = 0x8;
constexpr uint32_t kHeaderSize = 12;
constexpr uint64_t kNoFdFlag = 1ull << 8;  // VHOST_USER_VRING_NOFD_MASK

struct Header {
  uint32_t request, flags, size;
};
static_assert(sizeof(Header) == kHeaderSize);

struct VringState {
  uint32_t index, num;
};
struct VringAddr {
  uint32_t index, flags;
  uint64_t desc, used, avail, log;
};
static_assert(sizeof(VringAddr) == 40);
struct MemRegion {
  uint64_t guestPhysAddr, size, userAddr, mmapOffset;
};
struct MemTable {
  uint32_t nregions, padding;
  MemRegion regions[1];
};
static_assert(sizeof(MemTable) == 8 + 32);
}  // namespace

const char* requestName(uint32_t r) {
  switch (r) {
    case Req::GET_FEATURES: return "GET_FEATURES";
    case Req::SET_FEATURES: return "SET_FEATURES";
    case Req::SET_OWNER: return "SET_OWNER";
    case Req::SET_MEM_TABLE: return "SET_MEM_TABLE";
    case Req::SET_VRING_NUM: return "SET_VRING_NUM";
    case Req::SET_VRING_ADDR: return "SET_VRING_ADDR";
    case Req::SET_VRING_BASE: return "SET_VRING_BASE";
    case Req::GET_VRING_BASE: return "GET_VRING_BASE";
    case Req::SET_VRING_KICK: return "SET_VRING_KICK";
    case Req::SET_VRING_CALL: return "SET_VRING_CALL";
    case Req::GET_PROTOCOL_FEATURES: return "GET_PROTOCOL_FEATURES";
    case Req::SET_PROTOCOL_FEATURES: return "SET_PROTOCOL_FEATURES";
    case Req::GET_QUEUE_NUM: return "GET_QUEUE_NUM";
    case Req::SET_VRING_ENABLE: return "SET_VRING_ENABLE";
    case Req::GET_CONFIG: return "GET_CONFIG";
    default: return "unknown";
  }
}

VhostUserClient::VhostUserClient(const std::string& path, int timeoutMs) : path_(path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) fail(format("socket path too long: %s", path.c_str()));
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) fail(format("socket: %s", strerror(errno)));
  timeval tv{timeoutMs / 1000, (timeoutMs % 1000) * 1000};
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    fail(format("connect %s: %s", path.c_str(), strerror(errno)));
}

VhostUserClient::~VhostUserClient() {
  if (fd_ >= 0) close(fd_);
}

void VhostUserClient::send(uint32_t request, const void* payload, uint32_t size, const int* fds, int nfds,
                           bool needReply) {
  Header h{request, kVersion | (needReply ? kNeedReplyFlag : 0), size};
  iovec iov[2] = {{&h, sizeof h}, {const_cast<void*>(payload), size}};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = size ? 2 : 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
  if (nfds > 0) {
    if (nfds > 8) fail("at most 8 fds per vhost-user message");
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t want = ssize_t(sizeof h + size);
  ssize_t n;
  do n = sendmsg(fd_, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) fail(format("%s: send to %s: %s", requestName(request), path_.c_str(), strerror(errno)));
  if (n != want) fail(format("%s: short send (%zd of %zd bytes)", requestName(request), n, want));
}

void VhostUserClient::readExact(void* buf, size_t len, const char* what) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t got = 0;
  while (got < len) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
    iovec iov{p + got, len - got};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      fail(format("%s: timed out waiting for the back-end's reply on %s", what, path_.c_str()));
    if (n < 0) fail(format("%s: recv from %s: %s", what, path_.c_str(), strerror(errno)));
    if (n == 0) fail(format("%s: back-end closed %s", what, path_.c_str()));
    // A reply never carries fds for the requests we send: close any that came.
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        int nfd = int((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < nfd; i++) {
          int f;
          memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
          close(f);
        }
        fail(format("%s: back-end sent %d unexpected fds", what, nfd));
      }
    }
    got += size_t(n);
  }
}

std::vector<uint8_t> VhostUserClient::recvReply(uint32_t request, uint32_t size) {
  Header h;
  readExact(&h, sizeof h, requestName(request));
  if (h.request != request)
    fail(format("%s: reply is for request %u instead", requestName(request), h.request));
  if ((h.flags & 0x3) != kVersion || !(h.flags & kReplyFlag))
    fail(format("%s: reply flags 0x%x lack version 1 / reply bit", requestName(request), h.flags));
  if (h.size != size) fail(format("%s: reply body is %u bytes, expected %u", requestName(request), h.size, size));
  std::vector<uint8_t> body(size);
  if (size) readExact(body.data(), size, requestName(request));
  return body;
}

void VhostUserClient::sendNoReply(uint32_t request, const void* payload, uint32_t size, const int* fds, int nfds) {
  send(request, payload, size, fds, nfds, replyAck_);
  if (!replyAck_) return;
  auto body = recvReply(request, 8);
  uint64_t status;
  memcpy(&status, body.data(), 8);
  if (status != 0) fail(format("%s: back-end answered failure (%llu)", requestName(request), (unsigned long long)status));
}

uint64_t VhostUserClient::getU64(uint32_t request) {
  send(request, nullptr, 0, nullptr, 0, false);
  auto body = recvReply(request, 8);
  uint64_t v;
  memcpy(&v, body.data(), 8);
  return v;
}

uint64_t VhostUserClient::getFeatures() { return getU64(Req::GET_FEATURES); }
uint64_t VhostUserClient::getProtocolFeatures() { return getU64(Req::GET_PROTOCOL_FEATURES); }
uint64_t VhostUserClient::getQueueNum() { return getU64(Req::GET_QUEUE_NUM); }

void VhostUserClient::setFeatures(uint64_t f) { sendNoReply(Req::SET_FEATURES, &f, 8); }
void VhostUserClient::setProtocolFeatures(uint64_t f) {
  // Never acked: REPLY_ACK is only in force once this message has been handled.
  send(Req::SET_PROTOCOL_FEATURES, &f, 8, nullptr, 0, false);
}
void VhostUserClient::setOwner() { sendNoReply(Req::SET_OWNER, nullptr, 0); }

void VhostUserClient::setMemTable(const GuestMemory& mem) {
  MemTable t{};
  t.nregions = 1;
  t.regions[0] = MemRegion{GuestMemory::kGuestPhysBase, mem.size(), mem.userAddr(), 0};
  int fd = mem.fd();
  sendNoReply(Req::SET_MEM_TABLE, &t, sizeof t, &fd, 1);
}

void VhostUserClient::setVringNum(uint32_t index, uint32_t num) {
  VringState s{index, num};
  sendNoReply(Req::SET_VRING_NUM, &s, sizeof s);
}
void VhostUserClient::setVringBase(uint32_t index, uint32_t base) {
  VringState s{index, base};
  sendNoReply(Req::SET_VRING_BASE, &s, sizeof s);
}
void VhostUserClient::setVringAddr(uint32_t index, uint64_t desc, uint64_t used, uint64_t avail) {
  VringAddr a{index, 0, desc, used, avail, 0};
  sendNoReply(Req::SET_VRING_ADDR, &a, sizeof a);
}
void VhostUserClient::setVringKick(uint32_t index, int fd) {
  uint64_t v = index;
  if (fd < 0) v |= kNoFdFlag;
  sendNoReply(Req::SET_VRING_KICK, &v, 8, fd >= 0 ? &fd : nullptr, fd >= 0 ? 1 : 0);
}
void VhostUserClient::setVringCall(uint32_t index, int fd) {
  uint64_t v = index;
  if (fd < 0) v |= kNoFdFlag;
  sendNoReply(Req::SET_VRING_CALL, &v, 8, fd >= 0 ? &fd : nullptr, fd >= 0 ? 1 : 0);
}
void VhostUserClient::setVringEnable(uint32_t index, bool enable) {
  VringState s{index, enable ? 1u : 0u};
  sendNoReply(Req::SET_VRING_ENABLE, &s, sizeof s);
}

uint32_t VhostUserClient::getVringBase(uint32_t index) {
  VringState s{index, 0};
  send(Req::GET_VRING_BASE, &s, sizeof s, nullptr, 0, false);
  auto body = recvReply(Req::GET_VRING_BASE, sizeof s);
  VringState r;
  memcpy(&r, body.data(), sizeof r);
  if (r.index != index) fail(format("GET_VRING_BASE: reply names queue %u, asked %u", r.index, index));
  return r.num;
}

std::vector<uint8_t> VhostUserClient::getConfig(uint32_t offset, uint32_t size) {
  if (size > 256) fail("GET_CONFIG: size too large");
  std::vector<uint8_t> req(12 + size, 0);
  uint32_t hdr[3] = {offset, size, 0};
  memcpy(req.data(), hdr, 12);
  send(Req::GET_CONFIG, req.data(), uint32_t(req.size()), nullptr, 0, false);
  auto body = recvReply(Req::GET_CONFIG, uint32_t(req.size()));
  uint32_t rh[3];
  memcpy(rh, body.data(), 12);
  if (rh[0] != offset || rh[1] != size)
    fail(format("GET_CONFIG: reply covers [%u,+%u), asked [%u,+%u) (back-end error?)", rh[0], rh[1], offset, size));
  return std::vector<uint8_t>(body.begin() + 12, body.end());
}

}  // namespace vb
