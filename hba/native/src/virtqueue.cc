// Split virtqueue, device side (virtio 1.2 §2.7).
#include "virtqueue.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace vhba {
namespace {

// Descriptor flags (virtio 1.2 §2.7.5).
constexpr uint16_t kDescNext = 1;
constexpr uint16_t kDescWrite = 2;
constexpr uint16_t kDescIndirect = 4;
// Avail ring flags (virtio 1.2 §2.7.7).
constexpr uint16_t kAvailNoInterrupt = 1;

constexpr uint64_t kDescSize = 16;

template <typename T>
T loadRelaxed(const uint8_t* p) {
  return __atomic_load_n(reinterpret_cast<const T*>(p), __ATOMIC_RELAXED);
}
template <typename T>
void storeRelaxed(uint8_t* p, T value) {
  __atomic_store_n(reinterpret_cast<T*>(p), value, __ATOMIC_RELAXED);
}

/** Copies `n` bytes out of guest memory exactly once: the compiler barrier
 * stops the compiler from re-reading the source instead of the copy. */
inline void copyOnce(void* dst, const uint8_t* src, size_t n) {
  std::memcpy(dst, src, n);
  asm volatile("" ::: "memory");
}

/** vring_need_event (virtio 1.2 §2.7.10): true if event_idx lies in
 * (old, new]. */
inline bool vringNeedEvent(uint16_t eventIdx, uint16_t newIdx, uint16_t oldIdx) {
  return static_cast<uint16_t>(newIdx - eventIdx - 1) < static_cast<uint16_t>(newIdx - oldIdx);
}

std::string hex(uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

void SplitVirtqueue::setSize(uint32_t size) {
  if (size == 0 || (size & (size - 1)) != 0 || size > limits_.maxQueueSize)
    throw std::invalid_argument("queue size " + std::to_string(size) + " is not a power of two in [1, " +
                                std::to_string(limits_.maxQueueSize) + "]");
  if (mapped()) throw std::invalid_argument("queue size changed while the queue is mapped");
  size_ = size;
}

void SplitVirtqueue::setBase(uint32_t base) {
  if (base > 0xffff) throw std::invalid_argument("vring base " + std::to_string(base) + " exceeds 0xffff");
  lastAvail_ = static_cast<uint16_t>(base);
  availShadow_ = lastAvail_;
  forgetInFlight();
}

void SplitVirtqueue::map(const RingAddresses& addresses, std::shared_ptr<MemoryTable> memory) {
  if (size_ == 0) throw std::invalid_argument("vring size not set (SET_VRING_NUM missing)");
  if (!memory) throw std::invalid_argument("no memory table (SET_MEM_TABLE missing)");
  const uint64_t n = size_;
  struct Ring {
    const char* name;
    uint64_t addr, bytes, align;
  } rings[] = {{"descriptor table", addresses.desc, kDescSize * n, 16},
               {"avail ring", addresses.avail, 6 + 2 * n, 2},
               {"used ring", addresses.used, 6 + 8 * n, 4}};
  uint8_t* host[3];
  for (int i = 0; i < 3; i++) {
    const Ring& r = rings[i];
    if (r.addr % r.align != 0)
      throw std::invalid_argument(std::string(r.name) + " address " + hex(r.addr) + " is not aligned to " +
                                  std::to_string(r.align));
    host[i] = memory->translateUva(r.addr, r.bytes);
    if (host[i] == nullptr)
      throw std::invalid_argument(std::string(r.name) + " [" + hex(r.addr) + ", +" + std::to_string(r.bytes) +
                                  ") is not inside one guest memory region");
    if (reinterpret_cast<uintptr_t>(host[i]) % r.align != 0)
      throw std::invalid_argument(std::string(r.name) + " maps to a misaligned host address");
  }
  const bool remap = mapped();
  desc_ = host[0];
  avail_ = host[1];
  used_ = host[2];
  memory_ = std::move(memory);
  if (!remap || inFlight_.size() != size_) {
    inFlight_.clear();
    inFlight_.resize(size_);
    inFlightCount_ = 0;
  }
  // The used index lives in guest memory; continue from there (as after
  // SET_VRING_BASE the front-end has set up the rings).
  usedIdx_ = loadRelaxed<uint16_t>(used_ + 2);
  availShadow_ = lastAvail_;
  signalledUsedValid_ = false;
}

void SplitVirtqueue::unmap() {
  desc_ = avail_ = used_ = nullptr;
  memory_.reset();
  inFlight_.clear();
  inFlightCount_ = 0;
}

void SplitVirtqueue::forgetInFlight() {
  for (auto& r : inFlight_) {
    r.active = false;
    r.memory.reset();
  }
  inFlightCount_ = 0;
}

uint16_t SplitVirtqueue::loadAvailIdx() const {
  // Acquire: ring entries and descriptors are read after the index.
  return __atomic_load_n(reinterpret_cast<const uint16_t*>(avail_ + 2), __ATOMIC_ACQUIRE);
}

uint16_t* SplitVirtqueue::usedEventPtr() const { return reinterpret_cast<uint16_t*>(avail_ + 4 + 2 * size_); }
uint16_t* SplitVirtqueue::availEventPtr() const { return reinterpret_cast<uint16_t*>(used_ + 4 + 8 * size_); }

PopStatus SplitVirtqueue::pop(PoppedChain& out, std::string& violation) {
  ChainSegments chain;
  const PopStatus status = popSegments(chain, violation);
  if (status == PopStatus::kChain) materialize(chain, out);
  return status;
}

void SplitVirtqueue::materialize(const ChainSegments& chain, PoppedChain& out) {
  out.head = chain.head;
  out.writableLength = chain.writableLength;
  out.readable.resize(chain.readableLength);  // <= maxChainBytes, checked by the walk
  copyFromSegments(*chain.readable, 0, out.readable.data(), out.readable.size());
}

PopStatus SplitVirtqueue::popSegments(ChainSegments& out, std::string& violation) {
  if (!mapped()) return PopStatus::kEmpty;
  if (lastAvail_ == availShadow_) {
    availShadow_ = loadAvailIdx();
    const uint16_t pending = static_cast<uint16_t>(availShadow_ - lastAvail_);
    // virtio 1.2 §2.7.6: the driver can have at most queue-size buffers
    // outstanding; an index further ahead is corrupt.
    if (pending > size_) {
      violation = "avail index " + std::to_string(availShadow_) + " is " + std::to_string(pending) +
                  " ahead of last avail " + std::to_string(lastAvail_) + " (queue size " + std::to_string(size_) +
                  ")";
      availShadow_ = lastAvail_;
      return PopStatus::kViolation;
    }
    if (pending == 0) return PopStatus::kEmpty;
  }
  const uint32_t slot = lastAvail_ & (size_ - 1);
  const uint16_t head = loadRelaxed<uint16_t>(avail_ + 4 + 2 * slot);
  if (head >= size_) {
    violation = "avail ring entry " + std::to_string(slot) + " names descriptor " + std::to_string(head) +
                " beyond queue size " + std::to_string(size_);
    return PopStatus::kViolation;
  }
  InFlight& record = inFlight_[head];
  if (record.active) {
    violation = "chain head " + std::to_string(head) + " made available while already in flight";
    return PopStatus::kViolation;
  }
  record.readable.clear();
  record.writable.clear();
  record.readableLength = 0;
  record.writableLength = 0;
  if (!walkChain(head, record, violation)) return PopStatus::kViolation;
  out.head = head;
  out.readable = &record.readable;
  out.readableLength = record.readableLength;
  out.writable = &record.writable;
  out.writableLength = record.writableLength;
  record.active = true;
  record.memory = memory_;
  inFlightCount_++;
  lastAvail_++;
  return PopStatus::kChain;
}

bool SplitVirtqueue::walkChain(uint16_t head, InFlight& record, std::string& violation) {
  const bool indirectAllowed = (features_ & feature::kIndirectDesc) != 0;
  const uint8_t* table = desc_;
  uint32_t tableSize = size_;
  // A chain visits each descriptor of its table at most once, so a walk
  // longer than the table has a loop (virtio 1.2 §2.7.5.3.1 / §2.7.13).
  uint32_t budget = size_;
  bool inIndirect = false;
  bool seenWritable = false;
  uint64_t totalBytes = 0;
  uint32_t index = head;
  for (;;) {
    if (budget == 0) {
      violation = std::string("descriptor chain from head ") + std::to_string(head) +
                  (inIndirect ? " is longer than its indirect table (loop?)" : " is longer than the queue (loop?)");
      return false;
    }
    budget--;
    Descriptor d;
    copyOnce(&d, table + kDescSize * index, sizeof d);
    if (d.flags & kDescIndirect) {
      // virtio 1.2 §2.7.5.3.1: one level only, never with NEXT, len a
      // non-zero multiple of 16.
      if (!indirectAllowed) {
        violation = "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC";
        return false;
      }
      if (inIndirect) {
        violation = "nested indirect descriptor table";
        return false;
      }
      if (d.flags & kDescNext) {
        violation = "indirect descriptor has NEXT set";
        return false;
      }
      if (d.len == 0 || d.len % kDescSize != 0) {
        violation = "indirect table length " + std::to_string(d.len) + " is not a non-zero multiple of 16";
        return false;
      }
      const uint8_t* indirect = memory_->translateGpa(d.addr, d.len);
      if (indirect == nullptr) {
        violation = "indirect table [" + hex(d.addr) + ", +" + std::to_string(d.len) +
                    ") is not inside one guest memory region";
        return false;
      }
      table = indirect;
      tableSize = d.len / kDescSize;
      budget = tableSize;
      inIndirect = true;
      index = 0;
      continue;
    }
    if (d.len == 0) {
      violation = "zero-length descriptor " + std::to_string(index) + " in chain " + std::to_string(head);
      return false;
    }
    totalBytes += d.len;  // u64 += u32 cannot overflow: totalBytes <= maxChainBytes before
    if (totalBytes > limits_.maxChainBytes) {
      violation = "descriptor chain " + std::to_string(head) + " exceeds " + std::to_string(limits_.maxChainBytes) +
                  " bytes";
      return false;
    }
    uint8_t* host = memory_->translateGpa(d.addr, d.len);
    if (host == nullptr) {
      violation = "descriptor buffer [" + hex(d.addr) + ", +" + std::to_string(d.len) +
                  ") is not inside one guest memory region";
      return false;
    }
    if (d.flags & kDescWrite) {
      seenWritable = true;
      record.writable.push_back(GuestSegment{host, d.len});
      record.writableLength += d.len;
    } else {
      // virtio 1.2 §2.7.4.2: device-readable descriptors precede writable ones.
      if (seenWritable) {
        violation = "device-readable descriptor after a device-writable one in chain " + std::to_string(head);
        return false;
      }
      record.readable.push_back(GuestSegment{host, d.len});
      record.readableLength += d.len;
    }
    if (!(d.flags & kDescNext)) return true;
    index = d.next;
    if (index >= tableSize) {
      violation = "descriptor next index " + std::to_string(index) + " beyond table size " +
                  std::to_string(tableSize);
      return false;
    }
  }
}

bool SplitVirtqueue::enableNotificationAndCheck() {
  if (!mapped()) return false;
  if (features_ & feature::kEventIdx) {
    __atomic_store_n(availEventPtr(), lastAvail_, __ATOMIC_RELAXED);
    // The avail_event store must be visible before we re-read avail->idx,
    // or a buffer published in between would get no kick.
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
  }
  return loadAvailIdx() != lastAvail_;
}

void SplitVirtqueue::complete(uint16_t head, const uint8_t* data, size_t size) {
  if (!mapped() || head >= inFlight_.size() || !inFlight_[head].active)
    throw std::invalid_argument("chain " + std::to_string(head) + " is not in flight");
  InFlight& record = inFlight_[head];
  if (size > record.writableLength)
    throw std::invalid_argument("completion of chain " + std::to_string(head) + " has " + std::to_string(size) +
                                " bytes but only " + std::to_string(record.writableLength) + " are writable");
  copyToSegments(record.writable, 0, data, size);
  pushUsed(record, head, static_cast<uint32_t>(size));
}

void SplitVirtqueue::completeInPlace(uint16_t head, uint32_t usedLength) {
  if (!mapped() || head >= inFlight_.size() || !inFlight_[head].active)
    throw std::invalid_argument("chain " + std::to_string(head) + " is not in flight");
  InFlight& record = inFlight_[head];
  if (usedLength > record.writableLength)
    throw std::invalid_argument("completion of chain " + std::to_string(head) + " claims " +
                                std::to_string(usedLength) + " bytes but only " +
                                std::to_string(record.writableLength) + " are writable");
  pushUsed(record, head, usedLength);
}

void SplitVirtqueue::pushUsed(InFlight& record, uint16_t head, uint32_t usedLength) {
  const uint32_t slot = usedIdx_ & (size_ - 1);
  storeRelaxed<uint32_t>(used_ + 4 + 8 * slot, head);
  storeRelaxed<uint32_t>(used_ + 8 + 8 * slot, usedLength);
  usedIdx_++;
  // Release: the element and the written data are visible before the index
  // (virtio 1.2 §2.7.8).
  __atomic_store_n(reinterpret_cast<uint16_t*>(used_ + 2), usedIdx_, __ATOMIC_RELEASE);
  record.active = false;
  record.memory.reset();
  inFlightCount_--;
}

size_t copyFromSegments(const std::vector<GuestSegment>& segments, uint64_t skip, uint8_t* dst, size_t n) {
  size_t done = 0;
  for (const auto& seg : segments) {
    if (done == n) break;
    if (skip >= seg.length) {
      skip -= seg.length;
      continue;
    }
    const size_t take = std::min<uint64_t>(seg.length - skip, n - done);
    copyOnce(dst + done, seg.host + skip, take);
    done += take;
    skip = 0;
  }
  return done;
}

size_t copyToSegments(const std::vector<GuestSegment>& segments, uint64_t skip, const uint8_t* src, size_t n) {
  size_t done = 0;
  for (const auto& seg : segments) {
    if (done == n) break;
    if (skip >= seg.length) {
      skip -= seg.length;
      continue;
    }
    const size_t take = std::min<uint64_t>(seg.length - skip, n - done);
    std::memcpy(seg.host + skip, src + done, take);
    done += take;
    skip = 0;
  }
  return done;
}

bool SplitVirtqueue::shouldNotify() {
  if (!mapped()) return false;
  // The used index store must be visible before we read the driver's
  // suppression state (virtio 1.2 §2.7.10).
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (features_ & feature::kEventIdx) {
    const uint16_t usedEvent = __atomic_load_n(usedEventPtr(), __ATOMIC_RELAXED);
    const bool need = !signalledUsedValid_ || vringNeedEvent(usedEvent, usedIdx_, signalledUsed_);
    signalledUsed_ = usedIdx_;
    signalledUsedValid_ = true;
    return need;
  }
  return (loadRelaxed<uint16_t>(avail_) & kAvailNoInterrupt) == 0;
}

}  // namespace vhba
