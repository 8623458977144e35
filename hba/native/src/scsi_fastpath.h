// The virtio-scsi READ/WRITE/SYNCHRONIZE CACHE fast path (issue 4): a request
// queue worker executes these commands itself, with preadv/pwritev between
// the LUN's backing file and the guest's data buffers (no copy, no JS call),
// when the addressed LUN is registered here and eligible. Everything else is
// "deferred": the chain goes to TypeScript exactly as before.
//
// The TypeScript side (hba/fastpath.ts) keeps this table in agreement with
// the SCSI layer: a LUN is eligible only while its LogicalUnit has no pending
// unit attention, so the JS path answers the command that must report it.
// Semantics follow hba/scsi/read-write.ts and sync.ts; anything those would
// answer with a sense this code does not build (INVALID FIELD IN CDB, short
// buffers, zero-length transfers, READ/WRITE(6/12)) is deferred to them.
//
// A LUN may instead be a passthrough LUN (issue 8): then every command for it
// is forwarded to its PassthroughTransport (SG_IO or libiscsi) with the
// guest's data buffers, except opcodes refused (answered here with ILLEGAL
// REQUEST) or deferred (to JS) by the LUN's two opcode bitmaps.
//
// No N-API here, so it can be unit-tested and fuzzed without Node.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "fd_util.h"
#include "passthrough.h"
#include "virtqueue.h"

namespace vhba {

/** virtio 1.2 §5.6.2: queue 0 is the controlq, 1 the eventq, 2.. request queues. */
constexpr uint32_t kFirstRequestQueue = 2;

/** What JS registers for one LUN (the fds are duplicated; JS keeps its own). */
struct NativeLunConfig {
  int fd = -1;       // reads, cached writes, fdatasync
  int dsyncFd = -1;  // O_DSYNC: FUA writes and writes with WCE=0; -1 on a read-only LUN
  uint32_t blockSize = 512;
  uint64_t blockCount = 0;
  uint32_t maxTransferBlocks = 0;  // VPD B0h MAXIMUM TRANSFER LENGTH; longer → deferred
  bool readOnly = true;
  bool writeCacheEnabled = true;
  bool eligible = false;
};

/** What JS registers for a passthrough LUN. Bitmaps: bit (opcode & 7) of
 * byte (opcode >> 3). */
struct NativePassthroughLunConfig {
  std::shared_ptr<PassthroughTransport> transport;  // shared with the PassthroughDevice handle
  uint8_t refusedOpcodes[32] = {};   // answered CHECK CONDITION 20h/00h, device untouched
  uint8_t deferredOpcodes[32] = {};  // sent to JS
  uint32_t timeoutMs = 30000;        // per command, > 0
  bool eligible = false;
};

/** The mutable part of a LUN's state (each field optional). */
struct NativeLunUpdate {
  bool hasBlockCount = false, hasReadOnly = false, hasWriteCache = false, hasEligible = false;
  uint64_t blockCount = 0;
  bool readOnly = false, writeCacheEnabled = false, eligible = false;
};

/** I/O done natively on one LUN (monotonic). */
struct NativeLunCounters {
  uint64_t reads = 0, writes = 0, bytesRead = 0, bytesWritten = 0, flushes = 0, errors = 0;
};

/** One registered LUN. Shared by the table and the workers using it; the fds
 * close when the last reference drops. */
class NativeLun {
 public:
  explicit NativeLun(const NativeLunConfig& config);  // dups the fds; throws on failure
  /** A passthrough LUN; throws std::invalid_argument without a transport or timeout. */
  explicit NativeLun(const NativePassthroughLunConfig& config);

  /** A passthrough LUN's fixed part (never changes after registration). */
  struct Passthrough {
    std::shared_ptr<PassthroughTransport> transport;
    uint8_t refused[32];
    uint8_t deferred[32];
    uint32_t timeoutMs;
  };
  /** The passthrough part, or nullptr for a file LUN. */
  const Passthrough* passthrough() const { return passthrough_.get(); }

  /** Worker: takes the LUN for one command if it is eligible. */
  bool tryEnter();
  /** Worker: the command is done. */
  void exit();
  /** Owner: blocks until no command holds the LUN. */
  void waitIdle();
  /** Throws std::invalid_argument when a passthrough LUN gets more than `eligible`. */
  void update(const NativeLunUpdate& u);
  NativeLunCounters counters() const;

  /** Parameters a command reads once, under the lock (see tryEnter). */
  struct Snapshot {
    uint64_t blockCount;
    uint32_t blockSize;
    uint32_t maxTransferBlocks;
    bool readOnly;
    bool writeCacheEnabled;
  };
  Snapshot snapshot() const { return snapshot_; }

  int fd() const { return fd_.get(); }
  int dsyncFd() const { return dsyncFd_.get(); }

  std::atomic<uint64_t> reads{0}, writes{0}, bytesRead{0}, bytesWritten{0}, flushes{0}, errors{0};

 private:
  UniqueFd fd_, dsyncFd_;
  std::unique_ptr<Passthrough> passthrough_;
  mutable std::mutex mutex_;
  std::condition_variable idle_;
  uint32_t users_ = 0;
  bool eligible_ = false;
  Snapshot snapshot_{};
};

/** target/lun → NativeLun, shared by the device's workers. */
class LunTable {
 public:
  /** Throws std::invalid_argument if the address is taken or the config is invalid. */
  void add(uint32_t target, uint32_t lun, const NativeLunConfig& config);
  void add(uint32_t target, uint32_t lun, const NativePassthroughLunConfig& config);
  /** Throws std::invalid_argument if absent. */
  void update(uint32_t target, uint32_t lun, const NativeLunUpdate& u);
  /** Removes and returns the entry (nullptr if absent); commands already
   * holding it finish (NativeLun::waitIdle). */
  std::shared_ptr<NativeLun> remove(uint32_t target, uint32_t lun);
  std::shared_ptr<NativeLun> find(uint32_t target, uint32_t lun) const;
  /** Cheap check for the workers: is anything registered at all? */
  bool empty() const { return count_.load(std::memory_order_relaxed) == 0; }

 private:
  void insert(uint32_t target, uint32_t lun, std::shared_ptr<NativeLun> entry);
  static uint32_t key(uint32_t target, uint32_t lun) { return (target << 16) | lun; }
  mutable std::mutex mutex_;
  std::unordered_map<uint32_t, std::shared_ptr<NativeLun>> luns_;
  std::atomic<size_t> count_{0};
};

/** Result of tryExecuteScsiRequest. */
enum class FastPathResult { kDeferred, kCompleted };

/** Result of prepareScsiRequest: kPrepared = a passthrough command is ready
 * in the PreparedPassthrough given, to run with executePreparedPassthrough. */
enum class PrepareResult { kDeferred, kCompleted, kPrepared };

/** A passthrough command that passed every check and has not run yet: it
 * holds its LUN (NativeLun::tryEnter) until finished, so the LUN cannot be
 * drained away under it. Filled by prepareScsiRequest; reusable; neither
 * copyable nor movable (its command points into it). */
class PreparedPassthrough {
 public:
  PreparedPassthrough() = default;
  ~PreparedPassthrough() { release(); }
  PreparedPassthrough(const PreparedPassthrough&) = delete;
  PreparedPassthrough& operator=(const PreparedPassthrough&) = delete;

  /** The command for the transport: CDB copied here, iovecs into guest memory. */
  const PassthroughCommand& command() const { return command_; }
  /** The transport of the LUN held. */
  PassthroughTransport* transport() const;

 private:
  friend PrepareResult prepareScsiRequest(const ChainSegments&, const LunTable&, uint32_t&, PreparedPassthrough&);
  friend uint32_t finishPassthrough(PreparedPassthrough&, const PassthroughResult&);
  /** Lets go of the LUN (if held). */
  void release();

  std::shared_ptr<NativeLun> lun_;  // held while set
  const ChainSegments* chain_ = nullptr;
  uint8_t cdb_[32] = {};
  std::vector<iovec> iov_;
  PassthroughCommand command_;
};

/** Examines one request-queue chain (virtio 1.2 §5.6.6.1). If it is a READ(10/16),
 * WRITE(10/16) or SYNCHRONIZE CACHE(10/16) for an eligible file LUN of
 * `table`, or any command the native path takes for an eligible passthrough
 * LUN, executes it, writes the response header (and data) into the chain's
 * writable buffers, sets `usedLength` and returns kCompleted; the caller puts
 * it on the used ring. Otherwise nothing was written and the chain must go to
 * JS (kDeferred). Blocking: does the file or device I/O on the calling thread
 * (a passthrough command for at most its timeout, plus one reconnect). */
FastPathResult tryExecuteScsiRequest(const ChainSegments& chain, const LunTable& table, uint32_t& usedLength);

/** tryExecuteScsiRequest in two steps: everything it does except running a
 * passthrough command at its device. File LUN commands, refused passthrough
 * opcodes and answers the checks give are executed now (kCompleted, with
 * `usedLength`); a passthrough command to forward is checked (eligibility
 * with the LUN held, deferred opcodes, direction, CDB length, iovecs over the
 * chain's buffers) and left in `prepared` (kPrepared), still holding its LUN;
 * kDeferred: nothing written, the chain goes to JS. The chain must stay
 * valid until the prepared command is finished. */
PrepareResult prepareScsiRequest(const ChainSegments& chain, const LunTable& table, uint32_t& usedLength,
                                 PreparedPassthrough& prepared);

/** Writes the response for a prepared command's `result` into its chain,
 * counts it (LUN and device counters), releases the LUN and returns the
 * chain's used length. */
uint32_t finishPassthrough(PreparedPassthrough& prepared, const PassthroughResult& result);

/** Runs `count` prepared commands, one PassthroughTransport::executeBatch per
 * transport (in order of first appearance), and finishes each: usedLengths[i]
 * is prepared[i]'s. Blocks until all are finished (each within its timeout,
 * plus one reconnect). */
void executePreparedPassthrough(PreparedPassthrough* prepared, size_t count, uint32_t* usedLengths);

/** The CDB length an opcode's group code gives (SPC-4 §4.2.5.1): 6, 10, 12 or
 * 16 bytes; 7Fh variable length: cdb[7] + 8. 0 when unknown (reserved group
 * 3, vendor-specific groups 6 and 7) or longer than `available`. */
size_t cdbLengthOf(const uint8_t* cdb, size_t available);

}  // namespace vhba
