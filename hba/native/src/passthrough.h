// Passthrough transports (issue 8): one real SCSI LUN behind our HBA, driven
// either with the SG_IO ioctl (a host block device or /dev/sg* node) or with
// libiscsi (an iSCSI LUN the host kernel does not see). A transport executes
// one command per execute() call or a batch of them in flight together per
// executeBatch() call (several threads may call either at once; the iSCSI
// transport serializes the calls per session) and maps every failure below
// SCSI to a virtio-scsi response code (virtio 1.2 §5.6.6.1). Never blocks
// longer than the commands' timeout (plus one reconnect attempt bounded by it).
//
// No N-API here (passthrough_binding.cc wraps it; scsi_fastpath.cc calls it
// from the queue workers with iovecs straight into guest memory).
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace vhba {

/** virtio 1.2 §5.6.6.1 response codes (VIRTIO_SCSI_S_*). */
struct VirtioScsiResponse {
  static constexpr uint8_t kOk = 0, kOverrun = 1, kAborted = 2, kBadTarget = 3, kReset = 4, kBusy = 5,
                           kTransportFailure = 6, kTargetFailure = 7, kNexusFailure = 8, kFailure = 9;
};

/** The sense buffer size our config space fixes (hba/virtio-scsi/config.ts). */
constexpr size_t kPassthroughSenseMax = 96;

/** Direction of a command's data transfer (bidirectional commands are not supported). */
enum class DataDirection { kNone, kToDevice, kFromDevice };

/** One command to run: the CDB (6..32 bytes) and the data buffers (guest
 * memory or a bounce buffer; `iovCount` may be 0 when dataLength is 0). */
struct PassthroughCommand {
  const uint8_t* cdb = nullptr;
  size_t cdbLength = 0;
  DataDirection direction = DataDirection::kNone;
  const iovec* iov = nullptr;
  size_t iovCount = 0;
  uint32_t dataLength = 0;  // sum of the iov lengths
  uint32_t timeoutMs = 30000;
};

/** What one command produced. `response` != kOk means the command did not
 * complete at the device; status/sense are then meaningless (zero). */
struct PassthroughResult {
  uint8_t response = VirtioScsiResponse::kOk;
  uint8_t status = 0;  // SAM-5 §5.3 status byte
  uint8_t sense[kPassthroughSenseMax] = {};
  uint32_t senseLength = 0;  // <= kPassthroughSenseMax
  uint32_t residual = 0;     // <= dataLength: bytes that were not transferred
  std::string error;         // why response != kOk
};

/** Commands executed natively for registered LUNs using a transport (monotonic). */
struct PassthroughCounters {
  std::atomic<uint64_t> reads{0}, writes{0}, bytesRead{0}, bytesWritten{0}, flushes{0}, errors{0};
};

/** A device reachable with SCSI commands. Thread-safe. */
class PassthroughTransport {
 public:
  virtual ~PassthroughTransport() = default;
  /** Runs one command; fills `result` (never throws). */
  virtual void execute(const PassthroughCommand& command, PassthroughResult& result) = 0;
  /** Runs `count` independent commands that may be in flight at the device
   * together (a queue worker's round; SAM-5 SIMPLE task attributes, so their
   * order is free) and fills results[i] for commands[i]; returns when every
   * command has its result and nothing refers to its buffers any more. The
   * default runs them one after the other. Never throws. */
  virtual void executeBatch(const PassthroughCommand* commands, PassthroughResult* results, size_t count) {
    for (size_t i = 0; i < count; i++) execute(commands[i], results[i]);
  }
  /** e.g. "/dev/sdb (sg 3.5.36)" or "iscsi://127.0.0.1:3260/iqn.../1". */
  const std::string& description() const { return description_; }
  /** Largest data transfer in one command the host path takes; 0 = no host limit. */
  uint64_t maxTransferBytes() const { return maxTransferBytes_; }
  /** Most data buffers one command may use (more: the caller bounces or defers). */
  size_t maxSegments() const { return maxSegments_; }
  /** Native fast-path commands on LUNs using this transport. */
  PassthroughCounters counters;

 protected:
  std::string description_;
  uint64_t maxTransferBytes_ = 0;
  size_t maxSegments_ = 1;
};

/** Opens a block device or sg node for SG_IO (symlinks followed). Throws
 * std::runtime_error saying what is wrong (missing, not a device, not SCSI). */
std::shared_ptr<PassthroughTransport> openSgTransport(const std::string& path);

/** Where an iSCSI LUN is. */
struct IscsiAddress {
  std::string portal;         // host[:port], [v6addr][:port]
  std::string iqn;            // target name
  uint32_t lun = 0;
  std::string initiatorName;  // empty: "iqn.2026-11.io.vhba:" + hostname
};

/** Logs in to an iSCSI LUN (blocks up to timeoutMs). Throws
 * std::runtime_error naming the portal and libiscsi's reason. */
std::shared_ptr<PassthroughTransport> openIscsiTransport(const IscsiAddress& address, uint32_t timeoutMs);

/** Maps SG_IO's host_status / driver_status (Linux include/scsi/scsi_status.h
 * DID_*, DRIVER_*) to a virtio response code; kOk when the command reached
 * the device. Pure, for tests. */
uint8_t responseForSgStatus(uint16_t hostStatus, uint16_t driverStatus);

}  // namespace vhba
