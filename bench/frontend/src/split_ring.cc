// Driver-side split virtqueue; see split_ring.h.
#include "split_ring.h"

#include <cerrno>
#include <cstring>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common.h"

namespace vb {

namespace {
constexpr uint16_t kAvailFNoInterrupt = 1;  // virtio 1.2 §2.7.7
constexpr uint16_t kUsedFNoNotify = 1;      // virtio 1.2 §2.7.10

template <typename T>
T loadAcquire(const T* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
template <typename T>
void storeRelease(T* p, T v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/** virtio 1.2 §2.7.10: notify iff event_idx lies in [old, new). */
inline bool needEvent(uint16_t eventIdx, uint16_t newIdx, uint16_t oldIdx) {
  return uint16_t(newIdx - eventIdx - 1) < uint16_t(newIdx - oldIdx);
}
}  // namespace

SplitRing::SplitRing(GuestMemory& mem, uint16_t size, bool eventIdx) : size_(size), eventIdx_(eventIdx) {
  if (size == 0 || (size & (size - 1)) != 0 || size > 32768) fail(format("queue size %u is not a power of two <= 32768", size));
  auto d = mem.alloc(16ull * size, 4096);
  auto a = mem.alloc(6ull + 2ull * size, 4096);
  auto u = mem.alloc(6ull + 8ull * size, 4096);
  desc_ = reinterpret_cast<VringDesc*>(d.host);
  avail_ = a.host;
  used_ = u.host;
  descGpa_ = d.gpa;
  availGpa_ = a.gpa;
  usedGpa_ = u.gpa;
  memset(desc_, 0, 16ull * size);
  memset(avail_, 0, 6ull + 2ull * size);
  memset(used_, 0, 6ull + 8ull * size);
  kickFd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  callFd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (kickFd_ < 0 || callFd_ < 0) fail(format("eventfd: %s", strerror(errno)));
}

SplitRing::~SplitRing() {
  if (kickFd_ >= 0) close(kickFd_);
  if (callFd_ >= 0) close(callFd_);
}

void SplitRing::push(uint16_t head) {
  availRing()[availShadow_ & (size_ - 1)] = head;
  availShadow_++;
}

bool SplitRing::publish() {
  uint16_t oldIdx = availPublished_, newIdx = availShadow_;
  if (oldIdx == newIdx) return false;
  storeRelease(availIdx(), newIdx);
  availPublished_ = newIdx;
  // The idx store must be visible before we read the device's suppression
  // state, or a device going to sleep could miss this batch (§2.7.13.4).
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  bool kick;
  if (eventIdx_) kick = needEvent(loadAcquire(availEvent()), newIdx, oldIdx);
  else kick = !(loadAcquire(usedFlags()) & kUsedFNoNotify);
  if (!kick) {
    kickSkips++;
    return false;
  }
  uint64_t one = 1;
  ssize_t n;
  do n = write(kickFd_, &one, 8);
  while (n < 0 && errno == EINTR);
  if (n != 8) fail(format("kick eventfd write: %s", strerror(errno)));
  kicks++;
  return true;
}

bool SplitRing::popUsed(uint32_t& id, uint32_t& len) {
  if (loadAcquire(usedIdx()) == lastUsed_) return false;
  // The acquire load above orders the element reads after the idx read.
  const uint8_t* elem = usedRing() + 8 * (lastUsed_ & (size_ - 1));
  memcpy(&id, elem, 4);
  memcpy(&len, elem + 4, 4);
  lastUsed_++;
  return true;
}

bool SplitRing::armCall() {
  if (eventIdx_) storeRelease(usedEvent(), lastUsed_);
  else storeRelease(availFlags(), uint16_t(0));
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return loadAcquire(usedIdx()) != lastUsed_;
}

void SplitRing::suppressCalls() {
  // With EVENT_IDX the flag is ignored; an event index just behind what we
  // have consumed is never crossed by the device's next pushes.
  if (eventIdx_) storeRelease(usedEvent(), uint16_t(lastUsed_ - 1));
  else storeRelease(availFlags(), kAvailFNoInterrupt);
}

uint64_t SplitRing::drainCallFd() {
  uint64_t v = 0;
  ssize_t n = read(callFd_, &v, 8);
  if (n == 8) return v;
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
  fail(format("call eventfd read: %s", n < 0 ? strerror(errno) : "short read"));
}

}  // namespace vb
