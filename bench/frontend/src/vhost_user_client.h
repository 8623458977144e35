// The front-end (driver) side of the vhost-user protocol (QEMU
// docs/interop/vhost-user.rst): one connected unix socket, request encoding,
// fds sent with SCM_RIGHTS, replies read and checked. Every call either
// succeeds or throws Fatal naming the request and what was wrong.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "guest_memory.h"

namespace vb {

/** vhost-user request codes ("Front-end message types"). */
namespace Req {
constexpr uint32_t GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, SET_MEM_TABLE = 5, SET_VRING_NUM = 8,
                   SET_VRING_ADDR = 9, SET_VRING_BASE = 10, GET_VRING_BASE = 11, SET_VRING_KICK = 12,
                   SET_VRING_CALL = 13, GET_PROTOCOL_FEATURES = 15, SET_PROTOCOL_FEATURES = 16,
                   GET_QUEUE_NUM = 17, SET_VRING_ENABLE = 18, GET_CONFIG = 24;
}

/** Feature bits used by the bench (virtio 1.2 §6; vhost-user.rst). */
namespace Feature {
constexpr int RING_INDIRECT_DESC = 28, RING_EVENT_IDX = 29, PROTOCOL_FEATURES = 30, VERSION_1 = 32;
}

/** Protocol feature bits (vhost-user.rst "Protocol features"). */
namespace ProtoFeature {
constexpr int MQ = 0, REPLY_ACK = 3, CONFIG = 9;
}

class VhostUserClient {
 public:
  /** Connects to `path`; every later read or write gives up after `timeoutMs`. */
  VhostUserClient(const std::string& path, int timeoutMs);
  ~VhostUserClient();
  VhostUserClient(const VhostUserClient&) = delete;
  VhostUserClient& operator=(const VhostUserClient&) = delete;

  /** When on, requests without a reply carry NEED_REPLY and the ack is checked
   * (only valid after REPLY_ACK was negotiated). */
  void setReplyAck(bool on) { replyAck_ = on; }

  uint64_t getFeatures();
  void setFeatures(uint64_t features);
  uint64_t getProtocolFeatures();
  void setProtocolFeatures(uint64_t features);
  uint64_t getQueueNum();
  void setOwner();
  /** One region covering all of `mem`, its fd passed with SCM_RIGHTS. */
  void setMemTable(const GuestMemory& mem);
  void setVringNum(uint32_t index, uint32_t num);
  void setVringBase(uint32_t index, uint32_t base);
  /** Addresses are front-end user addresses (see GuestMemory::userAddr). */
  void setVringAddr(uint32_t index, uint64_t desc, uint64_t used, uint64_t avail);
  void setVringKick(uint32_t index, int fd);
  void setVringCall(uint32_t index, int fd);
  void setVringEnable(uint32_t index, bool enable);
  /** Stops the ring and returns the back-end's next avail index. */
  uint32_t getVringBase(uint32_t index);
  /** Device config space bytes [offset, offset+size) (needs protocol feature CONFIG). */
  std::vector<uint8_t> getConfig(uint32_t offset, uint32_t size);

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

 private:
  void send(uint32_t request, const void* payload, uint32_t size, const int* fds, int nfds, bool needReply);
  /** Reads one reply to `request` whose body must be exactly `size` bytes. */
  std::vector<uint8_t> recvReply(uint32_t request, uint32_t size);
  /** Sends a request that has no reply of its own; waits for the ack if enabled. */
  void sendNoReply(uint32_t request, const void* payload, uint32_t size, const int* fds = nullptr, int nfds = 0);
  uint64_t getU64(uint32_t request);
  void readExact(void* buf, size_t len, const char* what);

  std::string path_;
  int fd_ = -1;
  bool replyAck_ = false;
};

/** Name of a request code, for messages. */
const char* requestName(uint32_t request);

}  // namespace vb
