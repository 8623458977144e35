// A split virtqueue seen from the device side (virtio 1.2 §2.7): ring layout
// checks, the bounded descriptor-chain walk, the used ring and notification
// suppression (VIRTIO_RING_F_EVENT_IDX, VRING_AVAIL_F_NO_INTERRUPT).
//
// Not thread-safe by itself: the owner (Device) serialises pop() and
// complete() with a per-queue mutex. No N-API here, so it can be unit-tested
// and fuzzed over plain memory (MemoryTable::fromHostMemory).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "guest_memory.h"

namespace vhba {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "virtio 1.x rings are little endian; this code assumes a little-endian host");

/** Feature bits this code honours (virtio 1.2 §6). */
namespace feature {
constexpr uint64_t kIndirectDesc = 1ull << 28;  // VIRTIO_RING_F_INDIRECT_DESC
constexpr uint64_t kEventIdx = 1ull << 29;      // VIRTIO_RING_F_EVENT_IDX
constexpr uint64_t kVersion1 = 1ull << 32;      // VIRTIO_F_VERSION_1
}  // namespace feature

/** Limits that bound every walk. */
struct QueueLimits {
  uint32_t maxQueueSize = 1024;       // power of two, <= 32768
  uint64_t maxChainBytes = 1u << 24;  // readable + writable bytes of one chain
};

/** Ring addresses as SET_VRING_ADDR gives them (front-end virtual addresses). */
struct RingAddresses {
  uint64_t desc = 0;
  uint64_t avail = 0;
  uint64_t used = 0;
};

/** One buffer of an in-flight chain, already translated to a host pointer. */
struct GuestSegment {
  uint8_t* host;
  uint32_t length;
};
/** A device-writable buffer of an in-flight chain. */
using WritableSegment = GuestSegment;

/** An in-flight chain seen in place (for the native fast path): host
 * pointers to its readable and writable buffers, nothing copied. The vectors
 * belong to the queue's in-flight record and stay valid until the chain is
 * completed; only the thread that popped it may use them. */
struct ChainSegments {
  uint16_t head = 0;
  const std::vector<GuestSegment>* readable = nullptr;
  uint64_t readableLength = 0;
  const std::vector<GuestSegment>* writable = nullptr;
  uint64_t writableLength = 0;
};

/** Copies bytes [skip, skip+n) of `segments` to dst; returns bytes copied
 * (fewer when the segments end first). Each guest byte is read once. */
size_t copyFromSegments(const std::vector<GuestSegment>& segments, uint64_t skip, uint8_t* dst, size_t n);
/** Copies src into the segments starting at byte `skip`; returns bytes copied. */
size_t copyToSegments(const std::vector<GuestSegment>& segments, uint64_t skip, const uint8_t* src, size_t n);

/** What pop() hands out: the chain head, a copy of all device-readable bytes
 * (made once), and the total writable capacity. */
struct PoppedChain {
  uint16_t head = 0;
  std::vector<uint8_t> readable;
  uint64_t writableLength = 0;
};

/** Result of pop(). */
enum class PopStatus { kEmpty, kChain, kViolation };

/** The device side of one split virtqueue. */
class SplitVirtqueue {
 public:
  explicit SplitVirtqueue(QueueLimits limits) : limits_(limits) {}

  /** Sets the queue size (SET_VRING_NUM); throws unless a power of two in
   * [1, maxQueueSize]. */
  void setSize(uint32_t size);
  /** Next avail index to process (SET_VRING_BASE); throws if > 0xffff. */
  void setBase(uint32_t base);
  /** Negotiated device features (for INDIRECT_DESC and EVENT_IDX). */
  void setFeatures(uint64_t features) { features_ = features; }

  /** Translates and checks the rings against `memory` (virtio 1.2 §2.7:
   * descriptor table 16*n bytes aligned 16, avail ring 6+2n aligned 2, used
   * ring 6+8n aligned 4) and reads the used index from guest memory. On
   * success the queue is "mapped" and pop/complete may be used. Throws with
   * the reason on failure (the queue stays unmapped). */
  void map(const RingAddresses& addresses, std::shared_ptr<MemoryTable> memory);
  /** Forgets the ring mapping and every in-flight chain. */
  void unmap();
  /** Drops in-flight chains (SET_VRING_BASE re-seeds the ring). */
  void forgetInFlight();

  /** Pops the next available chain into `out`. kViolation fills `violation`
   * with the reason; the queue must then be stopped. */
  PopStatus pop(PoppedChain& out, std::string& violation);

  /** Pops the next available chain without copying anything: `out` points
   * at its translated buffers (see ChainSegments). Same checks as pop(). */
  PopStatus popSegments(ChainSegments& out, std::string& violation);

  /** Copies the readable bytes of a chain popped with popSegments (for
   * handing it to the owner after all): the PoppedChain pop() would give. */
  static void materialize(const ChainSegments& chain, PoppedChain& out);

  /** Puts an in-flight chain on the used ring with len = `usedLength`, its
   * writable buffers already filled by the device (the fast path). Throws
   * like complete() if the head is not in flight or usedLength exceeds the
   * writable capacity. */
  void completeInPlace(uint16_t head, uint32_t usedLength);

  /** With EVENT_IDX: publishes avail_event = last avail index so the driver
   * kicks for the next buffer, then re-checks the avail index; returns true if
   * more buffers arrived meanwhile (virtio 1.2 §2.7.10). Without EVENT_IDX
   * returns whether buffers are pending. */
  bool enableNotificationAndCheck();

  /** Whether the driver has published buffers not yet popped (a peek for
   * the polling window; changes nothing). */
  bool hasAvailable() const { return mapped() && loadAvailIdx() != lastAvail_; }

  /** Writes `data` into the writable segments of in-flight chain `head` and
   * puts it on the used ring with len = size. Throws std::invalid_argument if
   * the head is not in flight or data exceeds the writable capacity. */
  void complete(uint16_t head, const uint8_t* data, size_t size);

  /** Whether the driver wants an interrupt for what was pushed since the last
   * call that returned true (VRING_AVAIL_F_NO_INTERRUPT / used_event). */
  bool shouldNotify();

  bool mapped() const { return desc_ != nullptr; }
  uint32_t size() const { return size_; }
  uint16_t lastAvail() const { return lastAvail_; }
  uint16_t usedIdx() const { return usedIdx_; }
  uint32_t inFlightCount() const { return inFlightCount_; }

 private:
  struct InFlight {
    bool active = false;
    uint64_t readableLength = 0;
    uint64_t writableLength = 0;
    std::vector<GuestSegment> readable;
    std::vector<GuestSegment> writable;
    std::shared_ptr<MemoryTable> memory;  // keeps the segments' mappings alive
  };
  struct Descriptor {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
  };

  bool walkChain(uint16_t head, InFlight& record, std::string& violation);
  void pushUsed(InFlight& record, uint16_t head, uint32_t usedLength);
  uint16_t loadAvailIdx() const;
  uint16_t* usedEventPtr() const;   // in the avail ring, after ring[size]
  uint16_t* availEventPtr() const;  // in the used ring, after ring[size]

  QueueLimits limits_;
  uint64_t features_ = 0;
  uint32_t size_ = 0;
  uint16_t lastAvail_ = 0;
  uint16_t availShadow_ = 0;  // last avail->idx read; pop re-reads only when caught up
  uint16_t usedIdx_ = 0;
  uint16_t signalledUsed_ = 0;
  bool signalledUsedValid_ = false;

  std::shared_ptr<MemoryTable> memory_;
  uint8_t* desc_ = nullptr;
  uint8_t* avail_ = nullptr;
  uint8_t* used_ = nullptr;

  std::vector<InFlight> inFlight_;
  uint32_t inFlightCount_ = 0;
};

}  // namespace vhba
