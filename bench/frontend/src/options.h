// Command line of the bench front-end (see usage() in options.cc).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace vb {

enum class Proto { Scsi, Blk };
enum class Workload { RandRead, RandWrite, SeqRead, SeqWrite };
enum class Verify { None, WriteRead, WriteOnly, ReadOnly };

struct Options {
  Proto proto = Proto::Scsi;
  std::vector<std::string> sockets;
  /** scsi: (target, lun) pairs behind the one socket. */
  std::vector<std::pair<uint16_t, uint16_t>> luns;
  Workload workload = Workload::RandRead;
  uint32_t bsMin = 4096, bsMax = 4096;
  uint32_t qd = 1;              // per target
  double runtimeSec = 5;        // used when ios == 0
  uint64_t ios = 0;             // total I/O count; 0 = time-based
  double warmupSec = 0;
  uint64_t sizeBytes = 0;       // bytes of each target to use; 0 = whole capacity
  bool eventIdx = false;
  bool poll = false;
  bool indirect = false;
  uint32_t maxQueueSize = 1024;
  uint32_t scsiRequestQueues = 1;
  Verify verify = Verify::None;
  uint64_t seed = 1;
  int timeoutMs = 10000;
  bool quiet = false;
  /** Back-end process whose CPU time (utime+stime) is sampled over the measured window; 0 = none. */
  int cpuPid = 0;
};

/** Parses argv; throws Fatal with a usage hint on any error. Returns false for --help. */
bool parseOptions(int argc, char** argv, Options& out);
/** The --help text. */
const char* usage();
/** Names for JSON output. */
const char* workloadName(Workload w);
const char* verifyName(Verify v);

}  // namespace vb
