// Private to the bench engine (bench.cc, bench_setup.cc): the state behind
// Bench's forward-declared types, and the guest-memory layout of a slot.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bench.h"

namespace vb {

struct Bench::Connection {
  std::unique_ptr<VhostUserClient> client;
  uint64_t features = 0, protocolFeatures = 0, queueNum = 0;
  std::vector<std::unique_ptr<Queue>> queues;
};

struct Bench::Queue {
  Connection* conn = nullptr;
  uint32_t vringIndex = 0;
  std::unique_ptr<SplitRing> ring;
  std::vector<Slot*> slotByHead;  // chain head → slot
  bool dirty = false;             // pushed heads not yet published
};

struct Bench::Target {
  uint32_t index = 0;
  std::string name;
  Connection* conn = nullptr;
  Queue* queue = nullptr;
  uint8_t lun[8] = {};
  uint64_t capacity = 0, usable = 0;
  uint32_t blockSize = 512;
  uint64_t cursor = 0;
};

struct Bench::Slot {
  uint32_t index = 0;
  Queue* q = nullptr;
  Target* t = nullptr;
  uint16_t head = 0;
  VringDesc* chain = nullptr;  // where the request's descriptors live
  uint16_t chainBase = 0;      // index of chain[0] in its table (for `next`)
  uint64_t tableGpa = 0;       // indirect table address (indirect mode)
  uint8_t* meta = nullptr;     // request header at +0, response/status at +64
  uint64_t metaGpa = 0;
  uint8_t* data = nullptr;
  uint64_t dataGpa = 0;
  bool inFlight = false, write = false, done = false, ok = false;
  Kind kind = Kind::Io;
  uint64_t offset = 0, startNs = 0, seq = 0;
  uint32_t len = 0, expectedUsedLen = 0, writableLen = 0;
};


/** Slot metadata layout: request header at +0, response (virtio-scsi
 * resp_cmd or virtio-blk status byte) at +64, indirect table at +192. */
inline constexpr uint32_t kMetaSize = 256, kRespOffset = 64, kIndirectOffset = 192;
inline constexpr uint16_t kSmallRing = 64;  // scsi control and event queues
inline constexpr int kMaxPrintedErrors = 5;
inline constexpr uint64_t kSocketTag = 1ull << 63;  // epoll data: socket of conns_[i] vs. ioQueues_[i]

}  // namespace vb
