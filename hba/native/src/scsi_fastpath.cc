// The virtio-scsi READ/WRITE/SYNCHRONIZE CACHE fast path (see scsi_fastpath.h).
#include "scsi_fastpath.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace vhba {
namespace {

// virtio 1.2 §5.6.6.1 with the cdb_size (32) and sense_size (96) our config
// space fixes (hba/virtio-scsi/config.ts; the driver cannot change them).
constexpr size_t kCdbSize = 32;
constexpr size_t kSenseSize = 96;
constexpr size_t kRequestHeaderSize = 8 + 8 + 1 + 1 + 1 + kCdbSize;          // 51
constexpr size_t kResponseHeaderSize = 4 + 4 + 2 + 1 + 1 + kSenseSize;       // 108
constexpr size_t kCdbOffset = 19;
constexpr uint32_t kMaxLun = 16383;

// SAM-5 §5.3 status codes; virtio response code OK.
constexpr uint8_t kStatusGood = 0x00;
constexpr uint8_t kStatusCheckCondition = 0x02;

// Opcodes handled here (SBC-3 §5.11, §5.12, §5.22, §5.23, §5.35, §5.36).
constexpr uint8_t kRead10 = 0x28, kRead16 = 0x88, kWrite10 = 0x2a, kWrite16 = 0x8a;
constexpr uint8_t kSyncCache10 = 0x35, kSyncCache16 = 0x91;

/** A sense key with ASC/ASCQ (the same codes as hba/scsi/sense.ts). */
struct Sense {
  uint8_t key, asc, ascq;
};
constexpr Sense kLbaOutOfRange{0x05, 0x21, 0x00};
constexpr Sense kWriteProtected{0x07, 0x27, 0x00};
constexpr Sense kMediumErrorRead{0x03, 0x11, 0x00};
constexpr Sense kMediumErrorWrite{0x03, 0x0c, 0x00};
constexpr Sense kInvalidOpcode{0x05, 0x20, 0x00};  // ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE

// SBC-3 §5.22, §5.23: counted as flushes on a passthrough LUN.
constexpr uint8_t kSyncCacheOpcodes[] = {0x35, 0x91};

bool bitSet(const uint8_t* bitmap, uint8_t opcode) { return (bitmap[opcode >> 3] >> (opcode & 7)) & 1; }

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}
uint64_t be64(const uint8_t* p) { return (uint64_t(be32(p)) << 32) | be32(p + 4); }

/** hba/virtio-scsi/framing.ts decodeLun: byte 0 = 1, byte 1 = target, bytes
 * 2-3 peripheral (bus 0) or flat space addressing, bytes 4-7 zero. */
bool decodeLun(const uint8_t* field, uint32_t& target, uint32_t& lun) {
  if (field[0] != 1) return false;
  if (field[4] | field[5] | field[6] | field[7]) return false;
  target = field[1];
  const uint8_t b2 = field[2], b3 = field[3];
  if (b2 == 0)
    lun = b3;
  else if ((b2 & 0xc0) == 0x40)
    lun = (uint32_t(b2 & 0x3f) << 8) | b3;
  else
    return false;
  return lun <= kMaxLun;
}

/** SBC-3 §4.5, by subtraction so lba + count never wraps at 2^64. */
bool lbaRangeValid(uint64_t lba, uint64_t count, uint64_t blockCount) {
  return count <= blockCount && lba <= blockCount - count;
}

/** Moves `length` bytes between `fd` at `offset` and the segments from byte
 * `skip` on, in IOV_MAX pieces, resuming after short transfers. A read that
 * meets end of file zero-fills the rest (a read-only image smaller than its
 * capacity, as FileBackend.read does). Returns 0 or an errno. */
/* Touches every page of a write's source buffers before pwritev. The kernel
 * copies a buffered write page by page and checks for a fatal signal between
 * attempts; a copy that faults on a not-yet-mapped source page is cut short
 * at that page boundary, so a SIGKILL arriving then leaves a destination
 * sector half new, half old (found by test/e2e/crash-kill-cycles.test.ts).
 * With the source mapped first, each page copy is whole: an interrupted write
 * leaves every sector old or new. One load per 4 KiB of data. */
static void prefaultSource(const std::vector<iovec>& iov) {
  constexpr uintptr_t kPage = 4096;
  for (const auto& v : iov) {
    if (v.iov_len == 0) continue;
    const auto* base = static_cast<const volatile uint8_t*>(v.iov_base);
    const uintptr_t start = reinterpret_cast<uintptr_t>(v.iov_base);
    (void)base[0];
    for (uintptr_t page = (start & ~(kPage - 1)) + kPage; page < start + v.iov_len; page += kPage) {
      (void)base[page - start];
    }
  }
}

int transferAll(int fd, bool write, const std::vector<GuestSegment>& segments, uint64_t skip, uint64_t length,
                uint64_t offset) {
  thread_local std::vector<iovec> iov;
  iov.clear();
  uint64_t gathered = 0;
  for (const auto& seg : segments) {
    if (gathered == length) break;
    if (skip >= seg.length) {
      skip -= seg.length;
      continue;
    }
    const uint64_t take = std::min<uint64_t>(seg.length - skip, length - gathered);
    iov.push_back(iovec{seg.host + skip, static_cast<size_t>(take)});
    gathered += take;
    skip = 0;
  }
  if (gathered != length) return EINVAL;  // callers checked the buffer sizes
  if (write) prefaultSource(iov);
  size_t first = 0;
  uint64_t done = 0;
  while (done < length) {
    const int count = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
    const off_t at = static_cast<off_t>(offset + done);
    const ssize_t n = write ? ::pwritev(fd, &iov[first], count, at) : ::preadv(fd, &iov[first], count, at);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) {
      if (write) return EIO;
      for (size_t i = first; i < iov.size(); i++) std::memset(iov[i].iov_base, 0, iov[i].iov_len);
      return 0;
    }
    done += static_cast<uint64_t>(n);
    for (size_t left = static_cast<size_t>(n); left > 0;) {
      iovec& v = iov[first];
      if (left >= v.iov_len) {
        left -= v.iov_len;
        first++;
      } else {
        v.iov_base = static_cast<uint8_t*>(v.iov_base) + left;
        v.iov_len -= left;
        left = 0;
      }
    }
  }
  return 0;
}

/** Writes virtio_scsi_cmd_resp (virtio 1.2 §5.6.6.1): sense_len, resid,
 * status_qualifier 0, status, response, then `senseLength` (<= 96) sense bytes. */
void writeRawResponse(const ChainSegments& chain, uint8_t status, uint32_t resid, uint8_t response,
                      const uint8_t* senseBytes, uint32_t senseLength) {
  uint8_t resp[kResponseHeaderSize] = {};
  senseLength = std::min<uint32_t>(senseLength, kSenseSize);
  if (senseLength > 0) std::memcpy(resp + 12, senseBytes, senseLength);
  std::memcpy(resp + 0, &senseLength, 4);  // little endian (virtqueue.h asserts the host is)
  std::memcpy(resp + 4, &resid, 4);
  resp[10] = status;
  resp[11] = response;
  copyToSegments(*chain.writable, 0, resp, sizeof resp);
}

/** Writes the response with fixed-format sense (SPC-4 §4.5.3, response code
 * 70h, 18 bytes) when `sense` is given; response VIRTIO_SCSI_S_OK. */
void writeResponse(const ChainSegments& chain, uint8_t status, uint32_t resid, const Sense* sense) {
  uint8_t s[18] = {};
  uint32_t senseLength = 0;
  if (sense != nullptr) {
    s[0] = 0x70;
    s[2] = sense->key & 0x0f;
    s[7] = 10;  // ADDITIONAL SENSE LENGTH
    s[12] = sense->asc;
    s[13] = sense->ascq;
    senseLength = 18;
  }
  writeRawResponse(chain, status, resid, VirtioScsiResponse::kOk, s, senseLength);
}

/** Releases a LUN taken with tryEnter at scope exit. */
class LunHold {
 public:
  explicit LunHold(NativeLun& lun) : lun_(lun) {}
  ~LunHold() { lun_.exit(); }
  LunHold(const LunHold&) = delete;
  LunHold& operator=(const LunHold&) = delete;

 private:
  NativeLun& lun_;
};

}  // namespace

NativeLun::NativeLun(const NativeLunConfig& config) {
  if (config.blockSize != 512 && config.blockSize != 4096)
    throw std::invalid_argument("blockSize must be 512 or 4096");
  fd_.reset(::fcntl(config.fd, F_DUPFD_CLOEXEC, 0));
  if (!fd_.valid()) throwErrno("dup(fd)");
  if (config.dsyncFd >= 0) {
    dsyncFd_.reset(::fcntl(config.dsyncFd, F_DUPFD_CLOEXEC, 0));
    if (!dsyncFd_.valid()) throwErrno("dup(dsyncFd)");
  }
  eligible_ = config.eligible;
  snapshot_ = Snapshot{config.blockCount, config.blockSize, config.maxTransferBlocks, config.readOnly,
                       config.writeCacheEnabled};
}

NativeLun::NativeLun(const NativePassthroughLunConfig& config) {
  if (!config.transport) throw std::invalid_argument("a passthrough LUN needs an open device");
  if (config.timeoutMs == 0) throw std::invalid_argument("timeoutMs must be > 0");
  passthrough_ = std::make_unique<Passthrough>();
  passthrough_->transport = config.transport;
  std::memcpy(passthrough_->refused, config.refusedOpcodes, 32);
  std::memcpy(passthrough_->deferred, config.deferredOpcodes, 32);
  passthrough_->timeoutMs = config.timeoutMs;
  eligible_ = config.eligible;
}

bool NativeLun::tryEnter() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!eligible_) return false;
  users_++;
  return true;
}

void NativeLun::exit() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (--users_ == 0) idle_.notify_all();
}

void NativeLun::waitIdle() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_.wait(lock, [this] { return users_ == 0; });
}

void NativeLun::update(const NativeLunUpdate& u) {
  if (passthrough_ && (u.hasBlockCount || u.hasReadOnly || u.hasWriteCache))
    throw std::invalid_argument("a passthrough LUN takes only eligible (its capacity and flags are the device's)");
  std::lock_guard<std::mutex> lock(mutex_);
  if (u.hasBlockCount) snapshot_.blockCount = u.blockCount;
  if (u.hasReadOnly) snapshot_.readOnly = u.readOnly;
  if (u.hasWriteCache) snapshot_.writeCacheEnabled = u.writeCacheEnabled;
  if (u.hasEligible) eligible_ = u.eligible;
}

NativeLunCounters NativeLun::counters() const {
  NativeLunCounters c;
  c.reads = reads.load(std::memory_order_relaxed);
  c.writes = writes.load(std::memory_order_relaxed);
  c.bytesRead = bytesRead.load(std::memory_order_relaxed);
  c.bytesWritten = bytesWritten.load(std::memory_order_relaxed);
  c.flushes = flushes.load(std::memory_order_relaxed);
  c.errors = errors.load(std::memory_order_relaxed);
  return c;
}

void LunTable::add(uint32_t target, uint32_t lun, const NativeLunConfig& config) {
  if (target > 255 || lun > kMaxLun) throw std::invalid_argument("target must be 0..255 and lun 0..16383");
  if (!config.readOnly && config.dsyncFd < 0) throw std::invalid_argument("a writable LUN needs dsyncFd");
  insert(target, lun, std::make_shared<NativeLun>(config));  // dups the fds
}

void LunTable::add(uint32_t target, uint32_t lun, const NativePassthroughLunConfig& config) {
  if (target > 255 || lun > kMaxLun) throw std::invalid_argument("target must be 0..255 and lun 0..16383");
  insert(target, lun, std::make_shared<NativeLun>(config));
}

void LunTable::insert(uint32_t target, uint32_t lun, std::shared_ptr<NativeLun> entry) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!luns_.emplace(key(target, lun), std::move(entry)).second)
    throw std::invalid_argument("target " + std::to_string(target) + " lun " + std::to_string(lun) +
                                " is already registered");
  count_.store(luns_.size(), std::memory_order_relaxed);
}

void LunTable::update(uint32_t target, uint32_t lun, const NativeLunUpdate& u) {
  auto entry = find(target, lun);
  if (!entry)
    throw std::invalid_argument("target " + std::to_string(target) + " lun " + std::to_string(lun) +
                                " is not registered");
  entry->update(u);
}

std::shared_ptr<NativeLun> LunTable::remove(uint32_t target, uint32_t lun) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = luns_.find(key(target, lun));
  if (it == luns_.end()) return nullptr;
  auto entry = std::move(it->second);
  luns_.erase(it);
  count_.store(luns_.size(), std::memory_order_relaxed);
  return entry;
}

std::shared_ptr<NativeLun> LunTable::find(uint32_t target, uint32_t lun) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = luns_.find(key(target, lun));
  return it == luns_.end() ? nullptr : it->second;
}

size_t cdbLengthOf(const uint8_t* cdb, size_t available) {
  size_t length = 0;
  switch (cdb[0] >> 5) {  // GROUP CODE (SPC-4 §4.2.5.1, table 8)
    case 0: length = 6; break;
    case 1: case 2: length = 10; break;
    case 4: length = 16; break;
    case 5: length = 12; break;
    case 3:
      // 7Fh: variable length CDB (SPC-4 §4.2.4), ADDITIONAL CDB LENGTH in byte 7.
      if (cdb[0] == 0x7f && available >= 8) length = size_t{cdb[7]} + 8;
      break;
    default: break;  // 6, 7: vendor specific; their lengths are unknown here
  }
  return length <= available ? length : 0;
}

PassthroughTransport* PreparedPassthrough::transport() const {
  return lun_ ? lun_->passthrough()->transport.get() : nullptr;
}

void PreparedPassthrough::release() {
  if (lun_) lun_->exit();
  lun_.reset();
  chain_ = nullptr;
}

namespace {

/** The passthrough half of prepareScsiRequest (its LUN held by the caller):
 * `req` is the request header and CDB already copied out of the chain; fills
 * `command`, `iov` and `cdbCopy` (32 bytes) when it returns kPrepared. */
PrepareResult preparePassthrough(const ChainSegments& chain, const uint8_t* req, uint32_t& usedLength,
                                 const NativeLun::Passthrough& pt, PassthroughCommand& command,
                                 std::vector<iovec>& iov, uint8_t* cdbCopy) {
  const uint8_t* cdb = req + kCdbOffset;
  const uint8_t opcode = cdb[0];
  if (bitSet(pt.deferred, opcode)) return PrepareResult::kDeferred;
  const uint64_t dataOutLength = chain.readableLength - kRequestHeaderSize;
  const uint64_t dataInLength = chain.writableLength - kResponseHeaderSize;
  if (bitSet(pt.refused, opcode)) {
    // Residual as framing.ts computes it when no data moved.
    const uint64_t resid = dataInLength > 0 ? dataInLength : dataOutLength;
    writeResponse(chain, kStatusCheckCondition, static_cast<uint32_t>(std::min<uint64_t>(resid, UINT32_MAX)), &kInvalidOpcode);
    usedLength = kResponseHeaderSize;
    return PrepareResult::kCompleted;
  }
  // Bidirectional: JS refuses it (INVALID FIELD IN CDB). Unknown CDB length:
  // JS decides. Lengths beyond what SG_IO / iSCSI describe: JS.
  if (dataOutLength > 0 && dataInLength > 0) return PrepareResult::kDeferred;
  const size_t cdbLength = cdbLengthOf(cdb, kCdbSize);
  if (cdbLength == 0) return PrepareResult::kDeferred;
  const bool toDevice = dataOutLength > 0;
  const uint64_t dataLength = toDevice ? dataOutLength : dataInLength;
  if (dataLength > UINT32_MAX - kResponseHeaderSize) return PrepareResult::kDeferred;

  // The data buffers, straight into guest memory (skipping the headers).
  iov.clear();
  const std::vector<GuestSegment>& segments = toDevice ? *chain.readable : *chain.writable;
  uint64_t skip = toDevice ? kRequestHeaderSize : kResponseHeaderSize;
  uint64_t gathered = 0;
  for (const GuestSegment& seg : segments) {
    if (skip >= seg.length) {
      skip -= seg.length;
      continue;
    }
    const uint64_t take = seg.length - skip;
    iov.push_back(iovec{seg.host + skip, static_cast<size_t>(take)});
    gathered += take;
    skip = 0;
    if (iov.size() > pt.transport->maxSegments()) return PrepareResult::kDeferred;  // JS bounces it
  }
  if (gathered != dataLength) return PrepareResult::kDeferred;  // cannot happen: lengths are the chain's

  std::memcpy(cdbCopy, cdb, kCdbSize);  // the request copy is the caller's stack
  command = PassthroughCommand{};
  command.cdb = cdbCopy;
  command.cdbLength = cdbLength;
  command.direction = dataLength == 0 ? DataDirection::kNone : toDevice ? DataDirection::kToDevice : DataDirection::kFromDevice;
  command.iov = iov.data();
  command.iovCount = iov.size();
  command.dataLength = static_cast<uint32_t>(dataLength);
  command.timeoutMs = pt.timeoutMs;
  return PrepareResult::kPrepared;
}

}  // namespace

uint32_t finishPassthrough(PreparedPassthrough& prepared, const PassthroughResult& result) {
  const ChainSegments& chain = *prepared.chain_;
  NativeLun& lun = *prepared.lun_;
  const PassthroughCommand& command = prepared.command_;
  const uint8_t opcode = prepared.cdb_[0];
  const bool toDevice = command.direction == DataDirection::kToDevice;
  const bool ok = result.response == VirtioScsiResponse::kOk;
  const uint32_t resid = ok ? std::min<uint32_t>(result.residual, command.dataLength) : command.dataLength;
  const uint32_t transferred = command.dataLength - resid;
  writeRawResponse(chain, ok ? result.status : 0, resid, result.response, result.sense, ok ? result.senseLength : 0);
  const auto usedLength = static_cast<uint32_t>(kResponseHeaderSize + (toDevice ? 0 : transferred));

  PassthroughCounters& device = lun.passthrough()->transport->counters;
  if (!ok) {
    lun.errors.fetch_add(1, std::memory_order_relaxed);
    device.errors.fetch_add(1, std::memory_order_relaxed);
  } else if (result.status == kStatusGood && command.direction == DataDirection::kFromDevice) {
    lun.reads.fetch_add(1, std::memory_order_relaxed);
    lun.bytesRead.fetch_add(transferred, std::memory_order_relaxed);
    device.reads.fetch_add(1, std::memory_order_relaxed);
    device.bytesRead.fetch_add(transferred, std::memory_order_relaxed);
  } else if (result.status == kStatusGood && command.direction == DataDirection::kToDevice) {
    lun.writes.fetch_add(1, std::memory_order_relaxed);
    lun.bytesWritten.fetch_add(transferred, std::memory_order_relaxed);
    device.writes.fetch_add(1, std::memory_order_relaxed);
    device.bytesWritten.fetch_add(transferred, std::memory_order_relaxed);
  } else if (result.status == kStatusGood && (opcode == kSyncCacheOpcodes[0] || opcode == kSyncCacheOpcodes[1])) {
    lun.flushes.fetch_add(1, std::memory_order_relaxed);
    device.flushes.fetch_add(1, std::memory_order_relaxed);
  }
  prepared.release();
  return usedLength;
}

void executePreparedPassthrough(PreparedPassthrough* prepared, size_t count, uint32_t* usedLengths) {
  // Scratch reused by this thread (a queue worker): commands and results of
  // one transport's batch, contiguous as executeBatch takes them.
  thread_local std::vector<PassthroughCommand> commands;
  thread_local std::vector<PassthroughResult> results;
  thread_local std::vector<size_t> members;
  thread_local std::vector<bool> grouped;
  grouped.assign(count, false);
  for (size_t first = 0; first < count; first++) {
    if (grouped[first]) continue;
    PassthroughTransport* transport = prepared[first].transport();
    commands.clear();
    members.clear();
    for (size_t i = first; i < count; i++) {
      if (grouped[i] || prepared[i].transport() != transport) continue;
      grouped[i] = true;
      members.push_back(i);
      commands.push_back(prepared[i].command());
    }
    if (results.size() < members.size()) results.resize(members.size());
    transport->executeBatch(commands.data(), results.data(), members.size());
    for (size_t k = 0; k < members.size(); k++) usedLengths[members[k]] = finishPassthrough(prepared[members[k]], results[k]);
  }
}

FastPathResult tryExecuteScsiRequest(const ChainSegments& chain, const LunTable& table, uint32_t& usedLength) {
  thread_local PreparedPassthrough prepared;  // its iovec array is reused
  switch (prepareScsiRequest(chain, table, usedLength, prepared)) {
    case PrepareResult::kPrepared:
      executePreparedPassthrough(&prepared, 1, &usedLength);
      return FastPathResult::kCompleted;
    case PrepareResult::kCompleted:
      return FastPathResult::kCompleted;
    case PrepareResult::kDeferred:
      break;
  }
  return FastPathResult::kDeferred;
}

PrepareResult prepareScsiRequest(const ChainSegments& chain, const LunTable& table, uint32_t& usedLength,
                                 PreparedPassthrough& prepared) {
  prepared.release();
  if (table.empty()) return PrepareResult::kDeferred;
  // Too short to frame: the JS path reports the violation.
  if (chain.readableLength < kRequestHeaderSize || chain.writableLength < kResponseHeaderSize)
    return PrepareResult::kDeferred;
  uint8_t req[kRequestHeaderSize];  // header and CDB, copied once
  copyFromSegments(*chain.readable, 0, req, sizeof req);
  uint32_t target = 0, lunNumber = 0;
  if (!decodeLun(req, target, lunNumber)) return PrepareResult::kDeferred;
  std::shared_ptr<NativeLun> lun = table.find(target, lunNumber);
  if (!lun) return PrepareResult::kDeferred;  // unknown: JS answers
  if (lun->passthrough() != nullptr) {
    if (!lun->tryEnter()) return PrepareResult::kDeferred;  // not eligible: a unit attention of ours pending
    prepared.lun_ = lun;  // held from here; released below unless prepared
    prepared.chain_ = &chain;
    const PrepareResult outcome =
        preparePassthrough(chain, req, usedLength, *lun->passthrough(), prepared.command_, prepared.iov_, prepared.cdb_);
    if (outcome != PrepareResult::kPrepared) prepared.release();
    return outcome;
  }

  const uint8_t* cdb = req + kCdbOffset;
  const uint8_t opcode = cdb[0];
  const bool isRead = opcode == kRead10 || opcode == kRead16;
  const bool isWrite = opcode == kWrite10 || opcode == kWrite16;
  const bool isSync = opcode == kSyncCache10 || opcode == kSyncCache16;
  if (!isRead && !isWrite && !isSync) return PrepareResult::kDeferred;
  const bool long16 = opcode == kRead16 || opcode == kWrite16 || opcode == kSyncCache16;
  // CDB fields (SBC-3 tables for READ/WRITE(10/16), SYNCHRONIZE CACHE(10/16)).
  // Anything the SCSI layer would refuse as INVALID FIELD IN CDB is deferred
  // to it: RDPROTECT/WRPROTECT (byte 1 bits 7..5), SYNC CACHE reserved bits,
  // NACA in the CONTROL byte (SAM-5 §5.2).
  const uint8_t flags = cdb[1];
  if (isSync ? (flags & 0xf9) != 0 : (flags & 0xe0) != 0) return PrepareResult::kDeferred;
  if (cdb[long16 ? 15 : 9] & 0x04) return PrepareResult::kDeferred;
  const uint64_t lba = long16 ? be64(cdb + 2) : be32(cdb + 2);
  const uint64_t blocks = long16 ? be32(cdb + 10) : be16(cdb + 7);
  const bool fua = !isSync && (flags & 0x08) != 0;

  if (!lun->tryEnter()) return PrepareResult::kDeferred;  // a unit attention pending
  LunHold hold(*lun);
  const NativeLun::Snapshot unit = lun->snapshot();

  const uint64_t dataInCapacity = chain.writableLength - kResponseHeaderSize;
  const uint64_t dataOutLength = chain.readableLength - kRequestHeaderSize;
  // Residual as hba/virtio-scsi/framing.ts encodeScsiResult computes it when
  // no data-in was returned: the whole data-in capacity if there is one, else
  // the data-out bytes not consumed.
  auto residNoData = [&](uint64_t consumed) -> uint32_t {
    if (dataInCapacity > 0) return static_cast<uint32_t>(dataInCapacity);
    return static_cast<uint32_t>(dataOutLength - std::min(consumed, dataOutLength));
  };
  auto fail = [&](const Sense& sense) {
    writeResponse(chain, kStatusCheckCondition, residNoData(dataOutLength), &sense);
    usedLength = kResponseHeaderSize;
    return PrepareResult::kCompleted;
  };

  if (isSync) {
    // SBC-3 §5.22: blocks = 0 means "to the end of the medium"; the range
    // only narrows what must be flushed, so fdatasync of the file is correct.
    if (!lbaRangeValid(lba, blocks, unit.blockCount)) return fail(kLbaOutOfRange);
    if (::fdatasync(lun->fd()) != 0) {
      lun->errors.fetch_add(1, std::memory_order_relaxed);
      return fail(kMediumErrorWrite);
    }
    lun->flushes.fetch_add(1, std::memory_order_relaxed);
    writeResponse(chain, kStatusGood, residNoData(dataOutLength), nullptr);
    usedLength = kResponseHeaderSize;
    return PrepareResult::kCompleted;
  }

  // Same order of checks as read-write.ts: write protection, transfer
  // length, LBA range, then buffers.
  if (isWrite && unit.readOnly) return fail(kWriteProtected);
  if (blocks == 0 || blocks > unit.maxTransferBlocks) return PrepareResult::kDeferred;
  if (!lbaRangeValid(lba, blocks, unit.blockCount)) return fail(kLbaOutOfRange);
  const uint64_t length = blocks * unit.blockSize;  // <= 2^32 * 4096: no overflow
  const uint64_t offset = lba * unit.blockSize;     // lba < blockCount, a capacity in bytes / blockSize
  if (isRead) {
    if (dataInCapacity < length) return PrepareResult::kDeferred;  // read-write.ts truncates; let it
    if (transferAll(lun->fd(), false, *chain.writable, kResponseHeaderSize, length, offset) != 0) {
      lun->errors.fetch_add(1, std::memory_order_relaxed);
      return fail(kMediumErrorRead);
    }
    lun->reads.fetch_add(1, std::memory_order_relaxed);
    lun->bytesRead.fetch_add(length, std::memory_order_relaxed);
    writeResponse(chain, kStatusGood, static_cast<uint32_t>(dataInCapacity - length), nullptr);
    usedLength = static_cast<uint32_t>(kResponseHeaderSize + length);
    return PrepareResult::kCompleted;
  }
  if (dataOutLength < length) return PrepareResult::kDeferred;  // INVALID FIELD IN CDB, from JS
  // SBC-3 §4.15: durable before GOOD with FUA or with the write cache off.
  const bool durable = fua || !unit.writeCacheEnabled;
  const int fd = durable && lun->dsyncFd() >= 0 ? lun->dsyncFd() : lun->fd();
  int err = transferAll(fd, true, *chain.readable, kRequestHeaderSize, length, offset);
  if (err == 0 && durable && fd == lun->fd() && ::fdatasync(fd) != 0) err = errno;
  if (err != 0) {
    lun->errors.fetch_add(1, std::memory_order_relaxed);
    return fail(kMediumErrorWrite);
  }
  lun->writes.fetch_add(1, std::memory_order_relaxed);
  lun->bytesWritten.fetch_add(length, std::memory_order_relaxed);
  writeResponse(chain, kStatusGood, residNoData(length), nullptr);
  usedLength = kResponseHeaderSize;
  return PrepareResult::kCompleted;
}

}  // namespace vhba
