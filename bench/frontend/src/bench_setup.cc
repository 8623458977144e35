// Bench setup and teardown; see bench.h. setup() connects and negotiates the
// way QEMU does (GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
// SET_OWNER, [GET_CONFIG], SET_FEATURES, SET_MEM_TABLE, then per ring NUM,
// BASE, ADDR, KICK, CALL, and ENABLE), lays out slots in guest memory and
// readies every target (virtio-scsi: TEST UNIT READY, READ CAPACITY(16);
// virtio-blk: config space). shutdown() stops the rings with GET_VRING_BASE.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sys/epoll.h>
#include <unistd.h>

#include "bench_internal.h"
#include "common.h"
#include "protocol.h"

namespace vb {

namespace {
uint32_t nextPow2(uint32_t v) {
  uint32_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

}  // namespace

Bench::Bench(const Options& opts) : o_(opts), rngState_(splitmix64(opts.seed)) {}

Bench::~Bench() {
  // Connections (and their rings) close before the guest memory unmaps.
  conns_.clear();
  if (epfd_ >= 0) close(epfd_);
}


void Bench::setup() {
  const bool scsi = o_.proto == Proto::Scsi;
  // Targets and their connections.
  if (scsi) {
    conns_.push_back(std::make_unique<Connection>());
    for (size_t i = 0; i < o_.luns.size(); i++) {
      auto t = std::make_unique<Target>();
      t->index = uint32_t(i);
      t->conn = conns_[0].get();
      scsi::encodeLun(t->lun, o_.luns[i].first, o_.luns[i].second);
      t->name = format("%u:%u", o_.luns[i].first, o_.luns[i].second);
      targets_.push_back(std::move(t));
    }
  } else {
    for (size_t i = 0; i < o_.sockets.size(); i++) {
      conns_.push_back(std::make_unique<Connection>());
      auto t = std::make_unique<Target>();
      t->index = uint32_t(i);
      t->conn = conns_.back().get();
      t->name = o_.sockets[i];
      targets_.push_back(std::move(t));
    }
  }
  const uint32_t requestQueues = scsi ? std::min<uint32_t>(o_.scsiRequestQueues, uint32_t(targets_.size())) : 1;

  // Guest memory: rings plus, per slot, metadata and a data buffer of the largest block.
  const uint64_t slotsTotal = uint64_t(targets_.size()) * o_.qd;
  uint64_t need = (slotsTotal + 4) * (kMetaSize + o_.bsMax + 4096);
  need += uint64_t(conns_.size() + requestQueues + 2) * (3 * 4096 + 26ull * 32768);
  mem_ = std::make_unique<GuestMemory>(need + (4ull << 20));

  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) fail(format("epoll_create1: %s", strerror(errno)));

  for (size_t ci = 0; ci < conns_.size(); ci++) {
    Connection& c = *conns_[ci];
    const std::string& path = o_.sockets[ci];
    c.client = std::make_unique<VhostUserClient>(path, o_.timeoutMs);
    connect(c, scsi ? 2 + requestQueues : 1);
    // Queues: scsi 0 control, 1 event, 2.. request (virtio 1.2 §5.6.2); blk 0.
    uint32_t first = scsi ? 2 : 0;
    for (uint32_t qi = 0; qi < first + requestQueues; qi++) {
      auto q = std::make_unique<Queue>();
      q->conn = &c;
      q->vringIndex = qi;
      c.queues.push_back(std::move(q));
    }
    for (uint32_t qi = first; qi < first + requestQueues; qi++) ioQueues_.push_back(c.queues[qi].get());
  }
  // Targets → request queues (scsi: round-robin; blk: its own connection's queue 0).
  for (auto& t : targets_) t->queue = scsi ? ioQueues_[t->index % requestQueues] : t->conn->queues[0].get();

  // Rings, sized for the slots they carry, then slots.
  for (auto& c : conns_) {
    for (auto& q : c->queues) {
      uint32_t slots = 0;
      for (auto& t : targets_)
        if (t->queue == q.get()) slots += o_.qd;
      uint32_t descs = o_.indirect ? slots : 3 * slots;
      uint32_t size = slots ? std::max<uint32_t>(nextPow2(descs), 4) : kSmallRing;
      if (size > o_.maxQueueSize)
        fail(format("queue %u needs %u descriptors (%u requests in flight) > --queue-size %u; use --indirect, a lower --qd or more --scsi-queues",
                    q->vringIndex, descs, slots, o_.maxQueueSize));
      q->ring = std::make_unique<SplitRing>(*mem_, uint16_t(size), (c->features >> Feature::RING_EVENT_IDX) & 1);
      q->slotByHead.assign(size, nullptr);
      info_.ringSizes.push_back(size);
    }
  }
  for (auto& t : targets_) {
    Queue& q = *t->queue;
    uint16_t used = 0;
    for (Slot* s : q.slotByHead) used += s ? 1 : 0;
    for (uint32_t k = 0; k < o_.qd; k++) {
      auto s = std::make_unique<Slot>();
      s->index = uint32_t(slots_.size());
      s->q = &q;
      s->t = t.get();
      auto meta = mem_->alloc(kMetaSize, kMetaSize);
      auto data = mem_->alloc(o_.bsMax, 4096);
      s->meta = meta.host;
      s->metaGpa = meta.gpa;
      s->data = data.host;
      s->dataGpa = data.gpa;
      // Data buffers start with pseudo-random bytes so writes carry real data.
      Rng fill(o_.seed * 7919 + s->index);
      for (uint32_t w = 0; w + 8 <= o_.bsMax; w += 8) {
        uint64_t v = fill.next();
        memcpy(s->data + w, &v, 8);
      }
      uint16_t pos = uint16_t(used + k);
      if (o_.indirect) {
        s->head = pos;
        s->chain = reinterpret_cast<VringDesc*>(s->meta + kIndirectOffset);
        s->chainBase = 0;
        s->tableGpa = s->metaGpa + kIndirectOffset;
      } else {
        s->head = uint16_t(pos * 3);
        s->chain = q.ring->desc() + s->head;
        s->chainBase = s->head;
      }
      q.slotByHead[s->head] = s.get();
      slots_.push_back(std::move(s));
    }
  }

  for (auto& c : conns_) startQueues(*c);
  auto queueTag = [&](Queue* q) { return uint64_t(std::find(ioQueues_.begin(), ioQueues_.end(), q) - ioQueues_.begin()); };
  for (auto& q : ioQueues_) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = queueTag(q);
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, q->ring->callFd(), &ev) != 0) fail(format("epoll_ctl: %s", strerror(errno)));
    if (o_.poll) q->ring->suppressCalls();
  }
  // The vhost-user sockets are watched too: the back-end never speaks first,
  // so anything readable there (EOF included) means it dropped us.
  for (auto& c : conns_) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = kSocketTag | uint64_t(&c - &conns_[0]);
    epoll_ctl(epfd_, EPOLL_CTL_ADD, c->client->fd(), &ev);
  }

  for (auto& t : targets_) {
    if (scsi) prepareScsiTarget(*t);
    else prepareBlkTarget(*t, *t->conn);
    t->usable = o_.sizeBytes ? o_.sizeBytes : (t->capacity & ~4095ull);
    if (t->usable > t->capacity)
      fail(format("target %s: --size %llu exceeds its capacity %llu", t->name.c_str(), (unsigned long long)o_.sizeBytes,
                  (unsigned long long)t->capacity));
    if (t->usable < o_.bsMax) fail(format("target %s: %llu usable bytes < block size %u", t->name.c_str(), (unsigned long long)t->usable, o_.bsMax));
    info_.capacity.push_back(t->capacity);
    info_.blockSize.push_back(t->blockSize);
  }
}

void Bench::connect(Connection& c, uint32_t queuesWanted) {
  VhostUserClient& cl = *c.client;
  uint64_t offered = cl.getFeatures();
  if (!((offered >> Feature::VERSION_1) & 1)) fail(format("%s: back-end does not offer VIRTIO_F_VERSION_1", cl.path().c_str()));
  uint64_t want = 1ull << Feature::VERSION_1;
  if ((offered >> Feature::PROTOCOL_FEATURES) & 1) want |= 1ull << Feature::PROTOCOL_FEATURES;
  if (o_.eventIdx) {
    if (!((offered >> Feature::RING_EVENT_IDX) & 1)) fail(format("%s: --event-idx given but VIRTIO_RING_F_EVENT_IDX not offered", cl.path().c_str()));
    want |= 1ull << Feature::RING_EVENT_IDX;
  }
  if (o_.indirect) {
    if (!((offered >> Feature::RING_INDIRECT_DESC) & 1)) fail(format("%s: --indirect given but VIRTIO_RING_F_INDIRECT_DESC not offered", cl.path().c_str()));
    want |= 1ull << Feature::RING_INDIRECT_DESC;
  }
  // virtio-blk: keep VIRTIO_BLK_F_BLK_SIZE (6) if offered, so blk_size in config is meaningful.
  if (o_.proto == Proto::Blk && ((offered >> 6) & 1)) want |= 1ull << 6;
  c.features = want;
  info_.features.push_back(want);

  if ((want >> Feature::PROTOCOL_FEATURES) & 1) {
    uint64_t pOffered = cl.getProtocolFeatures();
    uint64_t pWant = pOffered & ((1ull << ProtoFeature::MQ) | (1ull << ProtoFeature::REPLY_ACK) | (1ull << ProtoFeature::CONFIG));
    cl.setProtocolFeatures(pWant);
    c.protocolFeatures = pWant;
    if ((pWant >> ProtoFeature::REPLY_ACK) & 1) cl.setReplyAck(true);
    if ((pWant >> ProtoFeature::MQ) & 1) {
      c.queueNum = cl.getQueueNum();
      if (c.queueNum < queuesWanted)
        fail(format("%s: back-end has %llu queues, the bench needs %u", cl.path().c_str(), (unsigned long long)c.queueNum, queuesWanted));
    }
  }
  info_.protocolFeatures.push_back(c.protocolFeatures);
  info_.queueNums.push_back(c.queueNum);
  cl.setOwner();
}

void Bench::startQueues(Connection& c) {
  VhostUserClient& cl = *c.client;
  cl.setFeatures(c.features);
  cl.setMemTable(*mem_);
  for (auto& q : c.queues) {
    SplitRing& r = *q->ring;
    cl.setVringNum(q->vringIndex, r.size());
    cl.setVringBase(q->vringIndex, 0);
    cl.setVringAddr(q->vringIndex, mem_->userAddrOf(r.descGpa()), mem_->userAddrOf(r.usedGpa()), mem_->userAddrOf(r.availGpa()));
    cl.setVringKick(q->vringIndex, r.kickFd());
    cl.setVringCall(q->vringIndex, r.callFd());
  }
  // Rings start disabled when VHOST_USER_F_PROTOCOL_FEATURES is negotiated (vhost-user.rst "Ring states").
  if ((c.features >> Feature::PROTOCOL_FEATURES) & 1)
    for (auto& q : c.queues) cl.setVringEnable(q->vringIndex, true);
}

void Bench::prepareScsiTarget(Target& t) {
  Slot& s = *[&]() {
    for (auto& sl : slots_)
      if (sl->t == &t) return sl.get();
    fail("no slot for target");
  }();
  // TEST UNIT READY until GOOD: the first command may meet a unit attention
  // (power on / reset, SPC-4 §5.14), which a real initiator also consumes.
  uint8_t cdb[16];
  bool ready = false;
  std::string last;
  for (int attempt = 0; attempt < 8 && !ready; attempt++) {
    scsi::cdbTestUnitReady(cdb);
    scsi::encodeRequest(s.meta, t.lun, ++s.seq, cdb, 6);
    memset(s.meta + kRespOffset, 0xff, scsi::kRespSize);
    Seg segs[2] = {{s.metaGpa, scsi::kReqSize, false}, {s.metaGpa + kRespOffset, scsi::kRespSize, true}};
    setChain(s, segs, 2);
    s.expectedUsedLen = scsi::kRespSize;
    runSync(s);
    auto r = scsi::parseResponse(s.meta + kRespOffset);
    if (r.response == scsi::kRespOk && r.status == scsi::kStatusGood) ready = true;
    else if (r.response == scsi::kRespOk && r.status == scsi::kStatusCheckCondition && scsi::senseKey(r) == scsi::kSenseKeyUnitAttention)
      last = scsi::describe(r);
    else fail(format("LUN %s: TEST UNIT READY failed: %s", t.name.c_str(), scsi::describe(r).c_str()));
  }
  if (!ready) fail(format("LUN %s: still not ready after 8 TEST UNIT READY (%s)", t.name.c_str(), last.c_str()));

  scsi::cdbReadCapacity16(cdb);
  scsi::encodeRequest(s.meta, t.lun, ++s.seq, cdb, 16);
  memset(s.meta + kRespOffset, 0xff, scsi::kRespSize);
  memset(s.data, 0, 32);
  Seg segs[3] = {{s.metaGpa, scsi::kReqSize, false}, {s.metaGpa + kRespOffset, scsi::kRespSize, true}, {s.dataGpa, 32, true}};
  setChain(s, segs, 3);
  s.expectedUsedLen = scsi::kRespSize + 32;
  runSync(s);
  auto r = scsi::parseResponse(s.meta + kRespOffset);
  if (r.response != scsi::kRespOk || r.status != scsi::kStatusGood)
    fail(format("LUN %s: READ CAPACITY(16) failed: %s", t.name.c_str(), scsi::describe(r).c_str()));
  if (r.residual > 32 - 12) fail(format("LUN %s: READ CAPACITY(16) returned only %u bytes", t.name.c_str(), 32 - r.residual));
  uint64_t lastLba = scsi::getBe64(s.data);
  uint32_t lbs = scsi::getBe32(s.data + 8);
  if (lbs == 0 || lbs > 4096 || 4096 % lbs != 0)
    fail(format("LUN %s: logical block size %u; the bench needs one dividing 4096", t.name.c_str(), lbs));
  if (lastLba >= (UINT64_MAX / lbs)) fail(format("LUN %s: capacity overflows", t.name.c_str()));
  t.blockSize = lbs;
  t.capacity = (lastLba + 1) * lbs;
  if (!o_.quiet) fprintf(stderr, "vhost-bench: LUN %s: %llu bytes, %u-byte blocks\n", t.name.c_str(), (unsigned long long)t.capacity, lbs);
}

void Bench::prepareBlkTarget(Target& t, Connection& c) {
  if (!((c.protocolFeatures >> ProtoFeature::CONFIG) & 1)) {
    if (!o_.sizeBytes) fail(format("%s: back-end lacks the CONFIG protocol feature; give --size", t.name.c_str()));
    t.capacity = o_.sizeBytes;
    return;
  }
  // struct virtio_blk_config (§5.2.4): le64 capacity (512-byte sectors) at 0, le32 blk_size at 20.
  auto cfg = c.client->getConfig(0, 24);
  uint64_t sectors;
  uint32_t blkSize;
  memcpy(&sectors, cfg.data(), 8);
  memcpy(&blkSize, cfg.data() + 20, 4);
  if (!((c.features >> 6) & 1)) blkSize = 512;
  if (blkSize == 0 || blkSize > 4096 || 4096 % blkSize != 0)
    fail(format("%s: blk_size %u; the bench needs one dividing 4096", t.name.c_str(), blkSize));
  if (sectors > UINT64_MAX / 512) fail(format("%s: capacity overflows", t.name.c_str()));
  t.capacity = sectors * 512;
  t.blockSize = blkSize;
  if (!o_.quiet) fprintf(stderr, "vhost-bench: export %s: %llu bytes, %u-byte blocks\n", t.name.c_str(), (unsigned long long)t.capacity, blkSize);
}


std::string Bench::shutdown() {
  std::string problems;
  for (auto& c : conns_) {
    for (auto& q : c->queues) {
      uint32_t base = c->client->getVringBase(q->vringIndex);
      bool carriesIo = false;
      for (Queue* io : ioQueues_) carriesIo |= io == q.get();
      if (carriesIo) {
        // Every head we published was used, so the device's next avail index
        // must equal our avail idx.
        uint16_t availIdx;
        memcpy(&availIdx, mem_->base() + (q->ring->availGpa() - GuestMemory::kGuestPhysBase) + 2, 2);
        if (uint16_t(base) != availIdx)
          problems += format("%s queue %u: GET_VRING_BASE says %u, we published %u; ", c->client->path().c_str(), q->vringIndex, base, availIdx);
      } else if (base != 0) {
        problems += format("%s queue %u: GET_VRING_BASE %u on an unused queue; ", c->client->path().c_str(), q->vringIndex, base);
      }
    }
  }
  ioQueues_.clear();
  conns_.clear();
  return problems;
}

}  // namespace vb
