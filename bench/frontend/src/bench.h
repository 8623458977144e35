// The measuring engine: connections, queues, request slots, the completion
// loop and the statistics of one phase. Personality (virtio-scsi or
// virtio-blk) only changes how a slot's request is framed and checked.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "guest_memory.h"
#include "histogram.h"
#include "options.h"
#include "split_ring.h"
#include "vhost_user_client.h"

namespace vb {

/** What one phase measured. */
struct PhaseResult {
  std::string name;
  uint64_t ios = 0, bytes = 0, errors = 0;
  uint64_t verifiedBytes = 0, mismatches = 0;
  std::string firstMismatch;  // "target 1 offset 4096 (+17)" or empty
  std::string firstError;
  double seconds = 0;
  double frontendCpuUs = 0;
  double backendCpuUs = -1;  // -1 when no --cpu-pid
  uint64_t kicks = 0, kickSkips = 0, calls = 0;
  Histogram latency;
  std::vector<uint64_t> perTargetIos;
};

/** What setup learned, for the JSON line. */
struct DeviceInfo {
  std::vector<uint64_t> features, protocolFeatures, queueNums;
  std::vector<uint64_t> capacity;  // per target, bytes
  std::vector<uint32_t> blockSize;  // per target
  std::vector<uint32_t> ringSizes;
};

class Bench {
 public:
  explicit Bench(const Options& opts);
  ~Bench();
  /** Connects, negotiates, sets up memory and rings, prepares every target. */
  void setup();
  /** Runs the workload of the options (or the verify phases) once. */
  std::vector<PhaseResult> run();
  /** Stops every ring (GET_VRING_BASE), checks the back-end consumed all we
   * published, and disconnects. Returns a problem description or "". */
  std::string shutdown();
  const DeviceInfo& info() const { return info_; }

  struct Connection;
  struct Queue;
  struct Target;
  struct Slot;

 private:
  enum class Phase { Workload, VerifyWrite, VerifyRead };
  enum class Kind { Io, Setup };
  struct Seg {
    uint64_t gpa;
    uint32_t len;
    bool writable;
  };

  void connect(Connection& c, uint32_t queuesWanted);
  void startQueues(Connection& c);
  void prepareScsiTarget(Target& t);
  void prepareBlkTarget(Target& t, Connection& c);
  void runSync(Slot& s);
  PhaseResult runPhase(Phase phase);
  bool nextIo(Slot& s, Phase phase);
  void prepareIo(Slot& s, bool write, uint64_t offset, uint32_t len, Phase phase);
  void setChain(Slot& s, const Seg* segs, int n);
  void submit(Slot& s);
  void publishAll();
  void waitForCompletions();
  void reap(Queue& q);
  void complete(Slot& s, uint32_t usedLen, uint64_t now);
  void noteError(const std::string& what);

  const Options& o_;
  std::unique_ptr<GuestMemory> mem_;
  std::vector<std::unique_ptr<Connection>> conns_;
  std::vector<std::unique_ptr<Target>> targets_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Queue*> ioQueues_;
  int epfd_ = -1;
  DeviceInfo info_;

  // State of the running phase.
  PhaseResult* cur_ = nullptr;
  Phase phase_ = Phase::Workload;
  bool measuring_ = false, stopIssuing_ = false;
  uint64_t issued_ = 0, inFlight_ = 0, lastProgressNs_ = 0, lastCompletionNs_ = 0;
  uint64_t calls_ = 0, errorsPrinted_ = 0;
  uint64_t rngState_;
};

}  // namespace vb
