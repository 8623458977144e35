// The driver side of a split virtqueue (virtio 1.2 §2.7): descriptor table,
// available ring and used ring in guest memory, kick and call eventfds, and
// notification suppression with or without VIRTIO_F_EVENT_IDX (§2.7.7, §2.7.10).
// The front-end owns the descriptor table; the device only reads it.
#pragma once

#include <cstdint>

#include "guest_memory.h"

namespace vb {

/** One descriptor (virtio 1.2 §2.7.5). */
struct VringDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VringDesc) == 16);

constexpr uint16_t kDescFNext = 1, kDescFWrite = 2, kDescFIndirect = 4;

class SplitRing {
 public:
  /** Lays out a ring of `size` entries (a power of two) in `mem` and creates its eventfds. */
  SplitRing(GuestMemory& mem, uint16_t size, bool eventIdx);
  ~SplitRing();
  SplitRing(const SplitRing&) = delete;
  SplitRing& operator=(const SplitRing&) = delete;

  uint16_t size() const { return size_; }
  VringDesc* desc() const { return desc_; }
  uint64_t descGpa() const { return descGpa_; }
  uint64_t availGpa() const { return availGpa_; }
  uint64_t usedGpa() const { return usedGpa_; }
  int kickFd() const { return kickFd_; }
  int callFd() const { return callFd_; }

  /** Queues a chain head in the available ring; visible to the device after publish(). */
  void push(uint16_t head);
  /** Publishes pushed heads (avail idx store with release) and kicks the device
   * unless it asked not to be notified. Returns whether it kicked. */
  bool publish();
  /** Pops one used element; false when the used ring holds nothing new. */
  bool popUsed(uint32_t& id, uint32_t& len);
  /** Re-arms the call notification after draining: with EVENT_IDX writes
   * used_event; returns true when more used entries arrived meanwhile. */
  bool armCall();
  /** Poll mode: asks the device not to signal the call eventfd at all. */
  void suppressCalls();
  /** Reads and clears the call eventfd (non-blocking); returns the count read. */
  uint64_t drainCallFd();
  /** Entries pushed but not yet published + published but not used. */
  uint16_t inFlight() const { return uint16_t(availShadow_ - lastUsed_); }

  uint64_t kicks = 0;      // eventfd writes done
  uint64_t kickSkips = 0;  // publishes where the device asked for no kick

 private:
  uint16_t* availFlags() const { return reinterpret_cast<uint16_t*>(avail_); }
  uint16_t* availIdx() const { return reinterpret_cast<uint16_t*>(avail_ + 2); }
  uint16_t* availRing() const { return reinterpret_cast<uint16_t*>(avail_ + 4); }
  uint16_t* usedEvent() const { return reinterpret_cast<uint16_t*>(avail_ + 4 + 2 * size_); }
  uint16_t* usedFlags() const { return reinterpret_cast<uint16_t*>(used_); }
  uint16_t* usedIdx() const { return reinterpret_cast<uint16_t*>(used_ + 2); }
  uint8_t* usedRing() const { return used_ + 4; }
  uint16_t* availEvent() const { return reinterpret_cast<uint16_t*>(used_ + 4 + 8 * size_); }

  uint16_t size_;
  bool eventIdx_;
  VringDesc* desc_;
  uint8_t* avail_;
  uint8_t* used_;
  uint64_t descGpa_, availGpa_, usedGpa_;
  uint16_t availShadow_ = 0;     // next avail idx to write
  uint16_t availPublished_ = 0;  // avail idx at the last publish
  uint16_t lastUsed_ = 0;        // next used idx to consume
  int kickFd_ = -1, callFd_ = -1;
};

}  // namespace vb
