// Passthrough transports: SG_IO and libiscsi (see passthrough.h).
#include "passthrough.h"

#include <fcntl.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <linux/fs.h>
#include <limits.h>
#include <poll.h>
#include <scsi/sg.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include "fd_util.h"

namespace vhba {
namespace {

using Clock = std::chrono::steady_clock;
using R = VirtioScsiResponse;

// Linux include/scsi/scsi_status.h host bytes (DID_*) and driver byte values.
constexpr uint16_t kDidOk = 0x00, kDidNoConnect = 0x01, kDidBusBusy = 0x02, kDidTimeOut = 0x03,
                   kDidBadTarget = 0x04, kDidAbort = 0x05, kDidReset = 0x08, kDidSoftError = 0x0b,
                   kDidImmRetry = 0x0c, kDidRequeue = 0x0d, kDidTransportDisrupted = 0x0e,
                   kDidTransportFailfast = 0x0f, kDidTargetFailure = 0x10, kDidNexusFailure = 0x11,
                   kDidTransportMarginal = 0x14;
constexpr uint16_t kDriverTimeout = 0x06, kDriverSense = 0x08;

// ---------------------------------------------------------------- SG_IO ---

/** SG_IO on a block device (sd) or sg node; the kernel maps the iovecs.
 *
 * Batches run in parallel on a small pool of threads owned by the transport,
 * each issuing the same blocking SG_IO (the calling thread takes part too).
 * Why not the sg driver's asynchronous write()/read() interface: it exists
 * only on /dev/sg* nodes, while a hostDevice is normally a block device
 * (/dev/disk/by-id/… → /dev/sdX), where SG_IO is the only entry; one
 * mechanism for both keeps the error mapping and the iovec rules in one
 * place. The threads are created when a batch first needs them, at most
 * kMaxThreads, and live until the transport goes (joined in the destructor). */
class SgTransport : public PassthroughTransport {
 public:
  /** Threads issuing SG_IO for batches, besides the caller's. */
  static constexpr size_t kMaxThreads = 8;

  explicit SgTransport(const std::string& path) {
    fd_.reset(::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));  // follows symlinks
    if (!fd_.valid()) {
      const int err = errno;
      if (err == ENOENT) throw std::runtime_error(path + ": no such file");
      throwErrno("open " + path, err);
    }
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) throwErrno("fstat " + path);
    const bool block = S_ISBLK(st.st_mode);
    if (!block && !S_ISCHR(st.st_mode))
      throw std::runtime_error(path + " is not a block device or an sg character device");
    int version = 0;
    if (::ioctl(fd_.get(), SG_GET_VERSION_NUM, &version) != 0 || version < 30000)
      throw std::runtime_error(path +
                               " is not a SCSI device: SG_IO not supported (virtio-blk and NVMe disks cannot be "
                               "passed through; use deviceType disk)");
    // BLKSECTGET: block/ioctl.c answers an unsigned short count of 512-byte
    // sectors; drivers/scsi/sg.c answers an int count of bytes
    // (max_sectors_bytes). Either way the answer is the queue's max_sectors.
    int answer = 0;
    if (::ioctl(fd_.get(), BLKSECTGET, &answer) == 0) {
      maxTransferBytes_ = block ? uint64_t{static_cast<uint16_t>(answer)} * 512 : static_cast<uint64_t>(std::max(answer, 0));
    }
    maxSegments_ = 1024;  // UIO_MAXIOV: the block layer's limit on iovec_count (block/scsi_ioctl.c)
    char resolved[PATH_MAX];
    const std::string real = ::realpath(path.c_str(), resolved) != nullptr ? resolved : path;
    description_ = real + " (sg " + std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) +
                   "." + std::to_string(version % 100) + ")";
  }

  void execute(const PassthroughCommand& c, PassthroughResult& r) override {
    r = PassthroughResult{};
    sg_io_hdr_t h{};
    h.interface_id = 'S';
    h.cmd_len = static_cast<unsigned char>(c.cdbLength);
    h.cmdp = const_cast<unsigned char*>(c.cdb);
    h.mx_sb_len = kPassthroughSenseMax;
    h.sbp = r.sense;
    h.timeout = c.timeoutMs;  // ms; the mid layer aborts the command after it (DID_TIME_OUT)
    h.dxfer_direction = c.direction == DataDirection::kToDevice     ? SG_DXFER_TO_DEV
                        : c.direction == DataDirection::kFromDevice ? SG_DXFER_FROM_DEV
                                                                    : SG_DXFER_NONE;
    if (c.direction != DataDirection::kNone && c.dataLength > 0) {
      h.dxfer_len = c.dataLength;
      if (c.iovCount == 1) {
        h.dxferp = c.iov[0].iov_base;
      } else {
        // sg_iovec_t has struct iovec's layout; the kernel imports the array.
        h.iovec_count = static_cast<unsigned short>(c.iovCount);
        h.dxferp = const_cast<iovec*>(c.iov);
      }
    }
    if (::ioctl(fd_.get(), SG_IO, &h) != 0) {
      const int err = errno;
      // The device went away (hot unplug, deleted sg node): BAD_TARGET.
      r.response = err == ENODEV || err == ENXIO || err == EBADF ? R::kBadTarget : R::kFailure;
      r.residual = c.dataLength;
      r.error = errnoMessage("SG_IO on " + description_, err);
      return;
    }
    r.response = responseForSgStatus(h.host_status, h.driver_status);
    if (r.response != R::kOk) {
      r.residual = c.dataLength;
      r.error = "SG_IO on " + description_ + ": host_status " + std::to_string(h.host_status) + ", driver_status " +
                std::to_string(h.driver_status);
      std::memset(r.sense, 0, sizeof r.sense);
      return;
    }
    r.status = h.status;
    r.senseLength = std::min<uint32_t>(h.sb_len_wr, kPassthroughSenseMax);
    r.residual = h.resid > 0 ? std::min<uint32_t>(static_cast<uint32_t>(h.resid), c.dataLength) : 0;
  }

  ~SgTransport() override {
    {
      std::lock_guard<std::mutex> lock(poolMutex_);
      stopping_ = true;
    }
    work_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void executeBatch(const PassthroughCommand* commands, PassthroughResult* results, size_t count) override {
    if (count <= 1) {
      if (count == 1) execute(commands[0], results[0]);
      return;
    }
    Batch batch{commands, results, count};
    {
      std::lock_guard<std::mutex> lock(poolMutex_);
      pending_.push_back(&batch);
      // Enough threads for this batch (the caller runs one command itself).
      while (threads_.size() < std::min(kMaxThreads, count - 1)) {
        try {
          threads_.emplace_back(&SgTransport::serve, this);
        } catch (const std::system_error&) {
          break;  // no more threads: the ones there (and the caller) do the work
        }
      }
    }
    work_.notify_all();
    // The caller works too, then waits for the commands others took.
    for (;;) {
      size_t i = 0;
      {
        std::lock_guard<std::mutex> lock(poolMutex_);
        if (!take(batch, i)) break;
      }
      execute(commands[i], results[i]);
      std::lock_guard<std::mutex> lock(poolMutex_);
      batch.finished++;
    }
    std::unique_lock<std::mutex> lock(poolMutex_);
    finished_.wait(lock, [&] { return batch.finished == batch.count; });
  }

 private:
  /** A batch being executed; lives on its caller's stack until every command finished. */
  struct Batch {
    const PassthroughCommand* commands;
    PassthroughResult* results;
    size_t count;
    size_t next = 0;      // the next command nobody took yet
    size_t finished = 0;  // commands done (counted under poolMutex_)
  };

  /** Under poolMutex_: takes the batch's next command; unlists the batch when
   * that was its last. False when none is left. */
  bool take(Batch& b, size_t& index) {
    if (b.next >= b.count) return false;
    index = b.next++;
    if (b.next == b.count) pending_.erase(std::find(pending_.begin(), pending_.end(), &b));
    return true;
  }

  /** A pool thread: runs commands of pending batches until the transport goes. */
  void serve() {
    std::unique_lock<std::mutex> lock(poolMutex_);
    for (;;) {
      work_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
      if (stopping_) return;
      Batch& b = *pending_.front();
      size_t i = 0;
      if (!take(b, i)) continue;
      lock.unlock();
      execute(b.commands[i], b.results[i]);
      lock.lock();
      // The last touch of `b`: its caller returns once finished == count.
      if (++b.finished == b.count) finished_.notify_all();
    }
  }

  UniqueFd fd_;
  std::mutex poolMutex_;
  std::condition_variable work_, finished_;
  std::vector<Batch*> pending_;  // batches with commands nobody took yet
  std::vector<std::thread> threads_;
  bool stopping_ = false;
};

// --------------------------------------------------------------- libiscsi ---

/** What an async libiscsi callback reports into; outlives every callback
 * that may reach it (see IscsiTransport::run). */
struct Waiter {
  bool finished = false;
  int status = 0;
  scsi_task* task = nullptr;
};

void waiterCallback(iscsi_context*, int status, void* commandData, void* privateData) {
  auto* w = static_cast<Waiter*>(privateData);
  w->finished = true;
  w->status = status;
  w->task = static_cast<scsi_task*>(commandData);
}

std::string defaultInitiatorName() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') std::strcpy(host, "localhost");
  return std::string("iqn.2026-11.io.vhba:") + host;
}

/** An iSCSI LUN through one libiscsi context (one session, one connection).
 *
 * Why the async API with our own poll loop instead of iscsi_*_sync: in
 * libiscsi 1.19 (lib/sync.c event_loop) a sync call that fails in poll() or
 * iscsi_service() returns while its PDU is still queued with a callback
 * pointing at the sync call's stack frame, and its timeouts are only checked
 * once per second (iscsi_set_timeout is in whole seconds, scanned from
 * iscsi_service). Here the caller's Waiter lives until the context is
 * destroyed or the callback ran (iscsi_destroy_context cancels every PDU,
 * calling its callback: lib/init.c), and the deadline is in ms.
 *
 * A batch (a queue worker's round) is queued whole, then serviced together:
 * the guest's queue depth reaches the target instead of one command at a
 * time. The same guarantee holds per command: every Waiter lives in the
 * batch's slots until after the context let go of its PDU, and a task (with
 * the iovecs into guest memory) is freed only then. */
class IscsiTransport : public PassthroughTransport {
 public:
  IscsiTransport(const IscsiAddress& address, uint32_t timeoutMs) : address_(address) {
    if (address_.initiatorName.empty()) address_.initiatorName = defaultInitiatorName();
    description_ = "iscsi://" + address_.portal + "/" + address_.iqn + "/" + std::to_string(address_.lun);
    maxTransferBytes_ = 0;
    maxSegments_ = 1 << 16;
    std::string error;
    if (!connect(timeoutMs, error)) throw std::runtime_error(error);
  }

  ~IscsiTransport() override {
    std::lock_guard<std::mutex> lock(mutex_);
    drop();
  }

  void execute(const PassthroughCommand& c, PassthroughResult& r) override { executeBatch(&c, &r, 1); }

  /** Under the session mutex: queues every command with the async API (so
   * they are in flight at the target together, up to its CmdSN window; RFC
   * 7143 §4.2.2.1), then services the context until all have finished, the
   * earliest deadline passed or the connection failed. */
  void executeBatch(const PassthroughCommand* commands, PassthroughResult* results, size_t count) override {
    if (count == 0) return;
    uint32_t shortest = UINT32_MAX, longest = 0;
    for (size_t i = 0; i < count; i++) {
      results[i] = PassthroughResult{};
      results[i].residual = commands[i].dataLength;
      shortest = std::min(shortest, commands[i].timeoutMs);
      longest = std::max(longest, commands[i].timeoutMs);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    const auto started = Clock::now();
    if (ctx_ == nullptr) {
      // Broken by an earlier failure: reconnect once, bounded by the
      // commands' timeout; after a failed attempt, fail fast for 1 s.
      if (haveFailure_ && started - lastFailure_ < std::chrono::seconds(1)) {
        for (size_t i = 0; i < count; i++) fail(results[i], R::kBadTarget, lastError_);
        return;
      }
      std::string error;
      if (!connect(shortest, error)) {
        haveFailure_ = true;
        lastFailure_ = Clock::now();
        lastError_ = error;
        for (size_t i = 0; i < count; i++) fail(results[i], R::kBadTarget, error);
        return;
      }
    }
    // The PDUs' own timeout (whole seconds, set at creation; iscsi.h
    // "Timeout Handling") backs up our ms deadlines.
    iscsi_set_timeout(ctx_, static_cast<int>(longest / 1000 + 2));
    // Every slot's Waiter stays put (no reallocation after this) until the
    // context is gone or its callback ran: see the class comment.
    std::vector<Slot> slots(count);
    std::string queueError;
    for (size_t i = 0; i < count && queueError.empty(); i++) {
      const PassthroughCommand& c = commands[i];
      slots[i].deadline = started + std::chrono::milliseconds(c.timeoutMs);
      const int xfer = c.direction == DataDirection::kToDevice     ? SCSI_XFER_WRITE
                       : c.direction == DataDirection::kFromDevice ? SCSI_XFER_READ
                                                                   : SCSI_XFER_NONE;
      uint8_t cdb[32];
      std::memcpy(cdb, c.cdb, std::min(c.cdbLength, sizeof cdb));
      scsi_task* task = scsi_create_task(static_cast<int>(c.cdbLength), cdb, xfer, static_cast<int>(c.dataLength));
      if (task == nullptr) {
        fail(results[i], R::kFailure, "scsi_create_task: out of memory");
        slots[i].settled = true;
        continue;
      }
      // scsi_iovec "follows the POSIX struct iovec definition and *MUST* never
      // change" (scsi-lowlevel.h): the array is used in place until the task ends.
      if (c.dataLength > 0 && xfer == SCSI_XFER_READ)
        scsi_task_set_iov_in(task, reinterpret_cast<scsi_iovec*>(const_cast<iovec*>(c.iov)), static_cast<int>(c.iovCount));
      if (c.dataLength > 0 && xfer == SCSI_XFER_WRITE)
        scsi_task_set_iov_out(task, reinterpret_cast<scsi_iovec*>(const_cast<iovec*>(c.iov)), static_cast<int>(c.iovCount));
      if (iscsi_scsi_command_async(ctx_, static_cast<int>(address_.lun), task, waiterCallback, nullptr, &slots[i].w) != 0) {
        queueError = "iSCSI " + description_ + ": cannot queue the command: " + iscsi_get_error(ctx_);
        scsi_free_scsi_task(task);
        break;
      }
      slots[i].task = task;
    }
    // 0: all finished; 1: a deadline passed; 2: the connection failed; 3: queueing failed.
    const int outcome = queueError.empty() ? run(slots) : 3;
    const auto now = Clock::now();
    bool broken = outcome != 0;
    for (size_t i = 0; i < count; i++) {
      Slot& slot = slots[i];
      if (slot.settled) continue;
      PassthroughResult& r = results[i];
      if (slot.task != nullptr && slot.w.finished) {
        if (!complete(slot.w, slot.task, commands[i], r)) broken = true;
      } else if (outcome == 1) {
        fail(r, R::kAborted,
             "iSCSI " + description_ + ": " +
                 (now >= slot.deadline ? "timed out after " + std::to_string(commands[i].timeoutMs) + " ms"
                                       : std::string("aborted: the session was dropped when a command queued with "
                                                     "it timed out")));
      } else if (outcome == 2) {
        fail(r, R::kTransportFailure, "iSCSI " + description_ + ": connection failed: " + iscsi_get_error(ctx_));
      } else {
        fail(r, R::kTransportFailure, queueError);
      }
    }
    if (broken) {
      // A deadline passed or the connection failed: destroying the context
      // cancels every unfinished PDU (its callback reaches its slot's Waiter,
      // still alive), so nothing writes into the data buffers after we
      // return. The target aborts the tasks when the session goes (RFC 7143
      // §6.3). The next command reconnects at once.
      drop();
      haveFailure_ = false;
    }
    for (Slot& slot : slots)
      if (slot.task != nullptr) scsi_free_scsi_task(slot.task);
  }

 private:
  /** One command of a batch. */
  struct Slot {
    Waiter w;
    scsi_task* task = nullptr;  // queued (ours to free after the context let go of it)
    Clock::time_point deadline{};
    bool settled = false;  // its result is final without the device (not queued)
  };

  static void fail(PassthroughResult& r, uint8_t response, std::string error) {
    r.response = response;
    r.status = 0;
    r.senseLength = 0;
    r.error = std::move(error);  // r.residual stays the whole transfer
  }

  /** Polls the context until `w` finished (0), the deadline passed (1) or
   * iscsi_service failed (2). */
  int run(Waiter& w, Clock::time_point deadline) {
    while (!w.finished) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return 1;
      if (!serviceOnce(left)) return 2;
    }
    return 0;
  }

  /** Polls the context until every queued slot finished (0), the earliest
   * deadline among the unfinished passed (1) or iscsi_service failed (2). */
  int run(std::vector<Slot>& slots) {
    for (;;) {
      bool pending = false;
      Clock::time_point earliest = Clock::time_point::max();
      for (const Slot& slot : slots) {
        if (slot.task == nullptr || slot.w.finished) continue;
        pending = true;
        earliest = std::min(earliest, slot.deadline);
      }
      if (!pending) return 0;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(earliest - Clock::now()).count();
      if (left <= 0) return 1;
      if (!serviceOnce(left)) return 2;
    }
  }

  /** One poll (at most `leftMs`, capped at 1 s) and iscsi_service; false when either failed. */
  bool serviceOnce(long long leftMs) {
    pollfd p{iscsi_get_fd(ctx_), static_cast<short>(iscsi_which_events(ctx_)), 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(leftMs, 1000)));
    if (n < 0 && errno != EINTR) return false;
    return iscsi_service(ctx_, n > 0 ? p.revents : 0) >= 0;
  }

  /** Maps a finished task (libiscsi lib/iscsi-command.c
   * iscsi_process_scsi_reply); false when the context must be dropped. */
  bool complete(const Waiter& w, scsi_task* task, const PassthroughCommand& c, PassthroughResult& r) {
    switch (w.status) {
      case SCSI_STATUS_GOOD:
      case SCSI_STATUS_CHECK_CONDITION:
      case SCSI_STATUS_CONDITION_MET:
      case SCSI_STATUS_BUSY:
      case SCSI_STATUS_RESERVATION_CONFLICT:
      case SCSI_STATUS_TASK_SET_FULL:
      case SCSI_STATUS_ACA_ACTIVE:
      case SCSI_STATUS_TASK_ABORTED:
        break;
      case SCSI_STATUS_TIMEOUT:  // libiscsi's own PDU timeout (pdu.c iscsi_timeout_scan)
        fail(r, R::kAborted, "iSCSI " + description_ + ": command timed out");
        return false;
      case SCSI_STATUS_CANCELLED:
        // Not from us (we only destroy the context after run() gave up):
        // libiscsi cancels every PDU when the connection drops and
        // reconnecting is off (connect.c iscsi_reconnect → iscsi_defer_reconnect).
      default:  // SCSI_STATUS_ERROR: protocol error or unknown status byte
        fail(r, R::kTransportFailure,
             "iSCSI " + description_ + ": connection lost or protocol error: " + iscsi_get_error(ctx_));
        return false;
    }
    r.status = static_cast<uint8_t>(w.status);
    // Residual: the SCSI Response PDU's residual count, valid with the
    // underflow/overflow flags (RFC 7143 §11.4.5). Overflow means the target
    // had more than the buffer: everything we asked for was transferred.
    r.residual = task->residual_status == SCSI_RESIDUAL_UNDERFLOW
                     ? static_cast<uint32_t>(std::min<size_t>(task->residual, c.dataLength))
                     : 0;
    if (c.direction == DataDirection::kNone) r.residual = 0;
    if (w.status == SCSI_STATUS_CHECK_CONDITION && task->datain.data != nullptr && task->datain.size >= 2) {
      // On CHECK CONDITION libiscsi keeps the response's data segment in
      // task->datain: SenseLength (2 bytes, big endian) + sense data
      // (RFC 7143 §11.4.7.2; iscsi_process_scsi_reply parses &datain.data[2]).
      const uint32_t announced = (uint32_t(task->datain.data[0]) << 8) | task->datain.data[1];
      const uint32_t present = static_cast<uint32_t>(task->datain.size - 2);
      r.senseLength = std::min({announced, present, static_cast<uint32_t>(kPassthroughSenseMax)});
      std::memcpy(r.sense, task->datain.data + 2, r.senseLength);
    }
    return true;
  }

  void drop() {
    if (ctx_ != nullptr) iscsi_destroy_context(ctx_);
    ctx_ = nullptr;
  }

  /** Creates a context and logs in (iscsi_full_connect_async: TCP connect,
   * login, TEST UNIT READY consuming the power-on unit attentions). */
  bool connect(uint32_t timeoutMs, std::string& error) {
    drop();
    const std::string where = "iSCSI " + address_.portal + " target " + address_.iqn + " lun " + std::to_string(address_.lun);
    iscsi_context* ctx = iscsi_create_context(address_.initiatorName.c_str());
    if (ctx == nullptr) {
      error = where + ": iscsi_create_context failed (invalid initiator name?)";
      return false;
    }
    ctx_ = ctx;
    if (iscsi_set_targetname(ctx, address_.iqn.c_str()) != 0 ||
        iscsi_set_session_type(ctx, ISCSI_SESSION_NORMAL) != 0 ||
        iscsi_set_header_digest(ctx, ISCSI_HEADER_DIGEST_NONE_CRC32C) != 0) {
      error = where + ": " + iscsi_get_error(ctx);
      drop();
      return false;
    }
    iscsi_set_noautoreconnect(ctx, 1);  // we reconnect ourselves, bounded (connect.c iscsi_reconnect)
    iscsi_set_timeout(ctx, static_cast<int>(timeoutMs / 1000 + 2));
    Waiter w;
    if (iscsi_full_connect_async(ctx, address_.portal.c_str(), static_cast<int>(address_.lun), waiterCallback, &w) != 0) {
      error = where + ": cannot connect: " + iscsi_get_error(ctx);
      drop();
      return false;
    }
    const int outcome = run(w, Clock::now() + std::chrono::milliseconds(timeoutMs));
    if (outcome == 0 && w.status == SCSI_STATUS_GOOD) return true;
    error = where + ": " +
            (outcome == 1 ? "no login within " + std::to_string(timeoutMs) + " ms"
                          : std::string("login failed: ") + iscsi_get_error(ctx));
    drop();  // cancels what is left; callbacks reach `w`, still alive
    return false;
  }

  IscsiAddress address_;
  std::mutex mutex_;
  iscsi_context* ctx_ = nullptr;  // nullptr: broken, reconnect on the next command
  bool haveFailure_ = false;
  Clock::time_point lastFailure_{};
  std::string lastError_;
};

}  // namespace

uint8_t responseForSgStatus(uint16_t hostStatus, uint16_t driverStatus) {
  switch (hostStatus & 0xff) {
    case kDidOk:
      break;
    case kDidNoConnect:
    case kDidBadTarget:
      return R::kBadTarget;
    case kDidBusBusy:
    case kDidSoftError:
    case kDidImmRetry:
    case kDidRequeue:
      return R::kBusy;
    case kDidTimeOut:
    case kDidAbort:
      return R::kAborted;
    case kDidReset:
      return R::kReset;
    case kDidTransportDisrupted:
    case kDidTransportFailfast:
    case kDidTransportMarginal:
      return R::kTransportFailure;
    case kDidTargetFailure:
      return R::kTargetFailure;
    case kDidNexusFailure:
      return R::kNexusFailure;
    default:
      return R::kFailure;
  }
  const uint16_t driver = driverStatus & 0x0f;  // the suggestion bits (high nibble) carry nothing for us
  if (driver == 0 || driver == kDriverSense) return R::kOk;
  if (driver == kDriverTimeout) return R::kAborted;
  return R::kFailure;
}

std::shared_ptr<PassthroughTransport> openSgTransport(const std::string& path) {
  return std::make_shared<SgTransport>(path);
}

std::shared_ptr<PassthroughTransport> openIscsiTransport(const IscsiAddress& address, uint32_t timeoutMs) {
  return std::make_shared<IscsiTransport>(address, timeoutMs);
}

}  // namespace vhba
