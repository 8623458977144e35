// Fuzz target for the split virtqueue (virtio 1.2 §2.7) and the guest memory
// table behind it, driven by a list of actions decoded from the input, as a
// hostile guest and front-end would issue them: set/change the memory table
// (also with chains in flight), write descriptors (direct, indirect, garbage;
// addresses inside, spanning or outside regions; zero and huge lengths),
// publish avail entries or jump the avail index, pop (copying or in place),
// complete (valid and bogus heads/lengths), reset, notification checks.
//
// Each guest region is its own heap allocation of exactly its size, so ASan
// reports any access outside the memory the device was given. No N-API.
//
// libFuzzer:  scripts/fuzz.sh builds it with clang -fsanitize=fuzzer,address,undefined
// Without:    g++ -std=c++17 -g -O1 -fsanitize=address,undefined -DVHBA_FUZZ_STANDALONE \
//               -I../src virtqueue_fuzz.cc ../src/virtqueue.cc ../src/guest_memory.cc -o vq_fuzz
//             ./vq_fuzz 200000 2048     (random inputs)   ./vq_fuzz FILE...   (replay)
#include <memory>
#include <stdexcept>
#include <string>

#include "fuzz_input.h"
#include "virtqueue.h"

namespace {

using vhba_fuzz::ByteReader;

constexpr int kRegions = 3;
constexpr uint64_t kRegionSize = 4096;
constexpr uint64_t kUvaBase = 0x7f0000000000;
constexpr uint32_t kMaxQueue = 32;
constexpr uint64_t kMaxChainBytes = 1 << 14;
// Ring offsets inside region 0 (desc 16*32 = 512 bytes, avail 6+64, used 6+256).
constexpr uint64_t kAvailOff = 0x400, kUsedOff = 0x800;

/** The guest's memory as the fuzzer sees it: heap buffers plus their layout. */
struct Guest {
  std::vector<std::unique_ptr<uint8_t[]>> live;     // current regions
  std::vector<std::unique_ptr<uint8_t[]>> retired;  // regions of earlier tables (chains may point here)
  uint64_t gpa[kRegions] = {};
  uint64_t uva[kRegions] = {};
  std::shared_ptr<vhba::MemoryTable> table;

  /** Builds a new table with layout `layout`, copying the old contents into fresh buffers. */
  void setTable(uint8_t layout) {
    std::vector<std::unique_ptr<uint8_t[]>> next;
    for (int i = 0; i < kRegions; i++) {
      next.emplace_back(new uint8_t[kRegionSize]);
      if (live.size() == kRegions) std::memcpy(next[i].get(), live[i].get(), kRegionSize);
      else std::memset(next[i].get(), 0, kRegionSize);
    }
    for (auto& b : live) retired.push_back(std::move(b));
    live = std::move(next);
    // Layouts: contiguous, with gaps, reversed order, high addresses near 2^64.
    for (int i = 0; i < kRegions; i++) {
      switch (layout % 4) {
        case 0: gpa[i] = 0x10000 + i * kRegionSize; break;
        case 1: gpa[i] = 0x100000 * (i + 1); break;
        case 2: gpa[i] = 0x10000 + (kRegions - 1 - i) * kRegionSize; break;
        default: gpa[i] = uint64_t{0} - (kRegions - i + 1) * kRegionSize; break;  // ends below 2^64
      }
      uva[i] = kUvaBase + (layout & 4 ? 0x100000 : kRegionSize) * i;
    }
    std::vector<vhba::MemoryRegionDesc> regions(kRegions);
    std::vector<uint8_t*> hosts;
    for (int i = 0; i < kRegions; i++) {
      regions[i].guestPhysAddr = gpa[i];
      regions[i].userAddr = uva[i];
      regions[i].size = kRegionSize;
      hosts.push_back(live[i].get());
    }
    table = vhba::MemoryTable::fromHostMemory(regions, hosts, 8);
  }

  /** Whether [p, p+len) lies inside one buffer the guest ever gave us. */
  bool owns(const uint8_t* p, uint64_t len) const {
    auto in = [&](const std::unique_ptr<uint8_t[]>& b) {
      return p >= b.get() && len <= kRegionSize && p + len <= b.get() + kRegionSize;
    };
    for (auto& b : live) if (in(b)) return true;
    for (auto& b : retired) if (in(b)) return true;
    return false;
  }

  /** A guest-physical address of the kind `kind` picks. */
  uint64_t address(ByteReader& in) {
    const uint8_t kind = in.u8();
    const int r = kind % kRegions;
    switch ((kind >> 2) % 6) {
      case 0: case 1: return gpa[r] + in.below(kRegionSize);            // inside
      case 2: return gpa[r] + kRegionSize - (in.u8() % 64);               // at the end, spanning
      case 3: return gpa[r] - 1 - (in.u8() % 64);                         // just before
      case 4: return (gpa[r] + 0x100 * (in.u8() % 64)) & ~uint64_t{15};   // aligned (indirect tables)
      default: return in.u64();                                           // anything
    }
  }
};

void writeDescriptor(uint8_t* at, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
  std::memcpy(at, &addr, 8);
  std::memcpy(at + 8, &len, 4);
  std::memcpy(at + 12, &flags, 2);
  std::memcpy(at + 14, &next, 2);
}

uint32_t descriptorLength(ByteReader& in) {
  switch (in.u8() % 5) {
    case 0: return 0;
    case 1: return in.u32();                      // huge
    case 2: return 16 * (1 + in.u8() % 40);       // indirect table sizes
    default: return in.u8() % 160;                // small
  }
}

void runOne(const uint8_t* data, size_t size) {
  ByteReader in(data, size);
  const uint8_t config = in.u8();
  const uint32_t queueSize = 1u << (config % 6);  // 1..32
  const uint64_t features = (config & 0x40 ? vhba::feature::kIndirectDesc : 0) |
                            (config & 0x80 ? vhba::feature::kEventIdx : 0) | vhba::feature::kVersion1;
  Guest guest;
  guest.setTable(config >> 3);
  vhba::SplitVirtqueue vq(vhba::QueueLimits{kMaxQueue, kMaxChainBytes});
  vq.setSize(queueSize);
  vq.setFeatures(features);
  vq.setBase(in.u16());
  auto mapRings = [&]() {
    const uint64_t base = guest.uva[0];
    vq.map(vhba::RingAddresses{base, base + kAvailOff, base + kUsedOff}, guest.table);  // always valid
  };
  mapRings();
  uint16_t availIdx = 0;
  std::vector<uint16_t> inFlight;  // heads popped and not completed
  static const std::vector<uint8_t> response(kMaxChainBytes + 64, 0x5a);  // completion payload

  for (int step = 0; step < 256 && !in.empty(); step++) {
    uint8_t* region0 = guest.live[0].get();
    switch (in.u8() % 12) {
      case 0: {  // SET_MEM_TABLE again (in-flight chains keep the old table)
        guest.setTable(in.u8());
        if (vq.mapped()) mapRings();
        break;
      }
      case 1: {  // a descriptor in the ring's table
        const uint32_t index = in.below(queueSize);
        const uint64_t addr = guest.address(in);
        const uint32_t len = descriptorLength(in);
        writeDescriptor(region0 + 16 * index, addr, len, in.u8() % 8, static_cast<uint16_t>(in.below(queueSize + 2)));
        break;
      }
      case 2: {  // a descriptor in an indirect table somewhere in regions 1..2 (maybe misaligned)
        const int r = 1 + in.below(kRegions - 1);
        const uint32_t offset = in.below(kRegionSize - 16);
        const uint64_t addr = guest.address(in);
        const uint32_t len = descriptorLength(in);
        writeDescriptor(guest.live[r].get() + offset, addr, len, in.u8() % 8, in.u8() % 40);
        break;
      }
      case 3: {  // publish a head
        uint16_t head = static_cast<uint16_t>(in.below(queueSize + 1));
        std::memcpy(region0 + kAvailOff + 4 + 2 * (availIdx % queueSize), &head, 2);
        availIdx++;
        std::memcpy(region0 + kAvailOff + 2, &availIdx, 2);
        break;
      }
      case 4: {  // the avail index jumps anywhere
        availIdx = static_cast<uint16_t>(availIdx + in.u16());
        std::memcpy(region0 + kAvailOff + 2, &availIdx, 2);
        break;
      }
      case 5: case 6: {  // pop, copying or in place
        if (!vq.mapped()) break;
        std::string violation;
        vhba::PopStatus status;
        uint16_t head = 0;
        if (in.u8() & 1) {
          vhba::PoppedChain chain;
          status = vq.pop(chain, violation);
          if (status == vhba::PopStatus::kChain) {
            FUZZ_CHECK(chain.readable.size() + chain.writableLength <= kMaxChainBytes);
            head = chain.head;
          }
        } else {
          vhba::ChainSegments chain;
          status = vq.popSegments(chain, violation);
          if (status == vhba::PopStatus::kChain) {
            FUZZ_CHECK(chain.readableLength + chain.writableLength <= kMaxChainBytes);
            uint64_t total = 0;
            for (auto& s : *chain.readable) { FUZZ_CHECK(guest.owns(s.host, s.length)); total += s.length; }
            FUZZ_CHECK(total == chain.readableLength);
            total = 0;
            for (auto& s : *chain.writable) { FUZZ_CHECK(guest.owns(s.host, s.length)); total += s.length; }
            FUZZ_CHECK(total == chain.writableLength);
            head = chain.head;
          }
        }
        if (status == vhba::PopStatus::kChain) {
          FUZZ_CHECK(head < queueSize);
          for (uint16_t h : inFlight) FUZZ_CHECK(h != head);  // never handed out twice
          inFlight.push_back(head);
        } else if (status == vhba::PopStatus::kViolation) {
          FUZZ_CHECK(!violation.empty());
          vq.unmap();  // the device stops the queue; a later reset maps it again
          inFlight.clear();
        }
        FUZZ_CHECK(vq.inFlightCount() == inFlight.size());
        break;
      }
      case 7: case 8: {  // complete an in-flight chain (or a bogus head), copying or in place
        if (!vq.mapped()) break;
        const bool bogus = inFlight.empty() || in.u8() % 8 == 0;
        const size_t pick = inFlight.empty() ? 0 : in.below(static_cast<uint32_t>(inFlight.size()));
        const uint16_t head = bogus ? in.u16() : inFlight[pick];
        const uint32_t length = in.u8() % 4 == 0 ? in.u32() : in.below(512);
        bool threw = false;
        try {
          if (in.u8() & 1) vq.complete(head, response.data(), std::min<size_t>(length, response.size()));
          else vq.completeInPlace(head, length);
        } catch (const std::invalid_argument&) {
          threw = true;
        }
        if (!threw) {
          bool found = false;
          for (size_t i = 0; i < inFlight.size(); i++)
            if (inFlight[i] == head) { inFlight.erase(inFlight.begin() + i); found = true; break; }
          FUZZ_CHECK(found);  // only in-flight heads complete
        }
        FUZZ_CHECK(vq.inFlightCount() == inFlight.size());
        break;
      }
      case 9: {  // reset: GET_VRING_BASE / SET_VRING_BASE / re-map
        vq.unmap();
        inFlight.clear();
        vq.setBase(in.u16());
        availIdx = static_cast<uint16_t>(in.u16());
        std::memcpy(region0 + kAvailOff + 2, &availIdx, 2);
        mapRings();
        break;
      }
      case 10: {  // notification suppression (flags, used_event, avail_event)
        if (!vq.mapped()) break;
        (void)vq.hasAvailable();
        if (in.u8() & 1) (void)vq.enableNotificationAndCheck();
        else (void)vq.shouldNotify();
        break;
      }
      default: {  // the guest scribbles over its own memory (rings included)
        const int r = in.below(kRegions);
        const uint32_t offset = in.below(kRegionSize);
        uint8_t junk[16];
        const size_t n = in.bytes(junk, std::min<size_t>(1 + in.u8() % 16, kRegionSize - offset));
        std::memcpy(guest.live[r].get() + offset, junk, n);
        break;
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  runOne(data, size);
  return 0;
}
