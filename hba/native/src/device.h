// One virtio device behind one vhost-user connection: the guest memory table,
// N split virtqueues, and a worker thread per started queue that waits on the
// queue's kick eventfd, drains the avail ring and hands each wake-up's chains
// to the owner in one batch (DeviceSink). Completions come back on the owner's
// thread through complete().
//
// Ring life cycle (vhost-user.rst, "Starting and stopping rings"): a ring is
// started once it has a kick fd, a size, addresses and guest memory, and is
// enabled. Without VHOST_USER_F_PROTOCOL_FEATURES a ring is enabled from the
// start; with it, only after SET_VRING_ENABLE(1). GET_VRING_BASE stops it until
// the next SET_VRING_KICK.
//
// Guest violations found by a worker stop that queue and are reported through
// DeviceSink::reportViolation; nothing aborts and nothing throws across
// threads. No N-API here.
//
// On virtio-scsi request queues (index >= 2) a worker first offers each chain
// to the native fast path (scsi_fastpath.h): READ/WRITE/SYNCHRONIZE CACHE on
// file LUNs registered in luns() are executed on the worker thread, a round's
// commands for passthrough LUNs are run together per device, and all are
// completed in batches; only the rest is handed to the owner.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fd_util.h"
#include "guest_memory.h"
#include "scsi_fastpath.h"
#include "virtqueue.h"

namespace vhba {

/** Receives what worker threads produce. Called from worker threads. */
class DeviceSink {
 public:
  virtual ~DeviceSink() = default;
  /** The chains popped from `queue` in one wake-up (never empty). */
  virtual void deliverChains(uint32_t queue, std::vector<PoppedChain>&& chains) = 0;
  /** The guest violated the protocol on `queue`; the queue has stopped. */
  virtual void reportViolation(uint32_t queue, std::string reason) = 0;
};

/** Limits of one device (see DeviceOptions in index.ts). */
struct DeviceConfig {
  uint32_t numQueues = 1;
  QueueLimits limits;
  size_t maxRegions = 8;
  /** Most chains a worker pops before executing them and publishing their
   * completions with one notification (see runWorker for the measurement). */
  uint32_t completionBatch = 32;
  /** After a queue runs dry, how long the worker keeps polling the avail
   * ring before sleeping on the kick eventfd (0 = sleep at once). */
  uint32_t pollMicros = 0;
};

/** Diagnostics for one queue. */
struct QueueState {
  bool started;
  uint32_t size;
  uint16_t lastAvail;
  uint16_t usedIdx;
  uint32_t inFlight;
};

/** vhost-user feature bit: protocol features negotiated (vhost-user.rst). */
constexpr uint64_t kVhostUserFProtocolFeatures = 1ull << 30;

/** The device. All methods except the sink callbacks run on the owner's
 * thread; setters throw std::exception with a clear message on bad input. */
class Device {
 public:
  Device(DeviceConfig config, DeviceSink* sink);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  void setFeatures(uint64_t features);
  /** Takes ownership of every region fd (closed even on error). */
  void setMemTable(const std::vector<MemoryRegionDesc>& regions);
  void setVringNum(uint32_t queue, uint32_t num);
  void setVringAddr(uint32_t queue, const RingAddresses& addresses);
  void setVringBase(uint32_t queue, uint32_t base);
  /** Stops the queue (joins its worker) and returns the next avail index. */
  uint32_t getVringBase(uint32_t queue);
  /** Takes ownership of fd; -1 (polling mode) is refused. */
  void setVringKick(uint32_t queue, int fd);
  /** Takes ownership of fd; -1 means no call notifications. */
  void setVringCall(uint32_t queue, int fd);
  /** Takes ownership of fd; -1 means none. Signalled on a guest violation. */
  void setVringErr(uint32_t queue, int fd);
  void setVringEnable(uint32_t queue, bool enable);
  /** Writes data into in-flight chain `head`, pushes it on the used ring and
   * signals the call fd if the driver wants it. Throws if not in flight. */
  void complete(uint32_t queue, uint16_t head, const uint8_t* data, size_t size);
  /** Stops all queues, drops memory, closes fds; the device can be set up again. */
  void reset();
  QueueState queueState(uint32_t queue);
  /** The LUNs the fast path serves (thread-safe; shared with the workers). */
  LunTable& luns() { return luns_; }

 private:
  struct Queue {
    explicit Queue(QueueLimits limits) : vq(limits) {}
    std::mutex mutex;  // guards vq, call and err against the worker / complete()
    SplitVirtqueue vq;
    RingAddresses addresses;
    bool hasAddresses = false;
    bool enabled = false;
    bool stoppedByGetBase = false;
    std::atomic<bool> broken{false};
    std::atomic<bool> running{false};
    std::atomic<bool> stopRequested{false};  // ends a polling window early
    UniqueFd kick, call, err;
    UniqueFd stopEvent;
    std::thread worker;
  };

  Queue& queueAt(uint32_t queue);
  void startIfReady(uint32_t index);
  void stopWorker(Queue& q);
  void runWorker(uint32_t index, int epollFd, int kickFd, int stopFd);
  /** The polling window: true if buffers arrived within pollMicros. */
  bool pollForMore(Queue& q);

  DeviceConfig config_;
  DeviceSink* sink_;
  uint64_t features_ = 0;
  std::shared_ptr<MemoryTable> memory_;
  std::vector<std::unique_ptr<Queue>> queues_;
  LunTable luns_;
};

}  // namespace vhba
