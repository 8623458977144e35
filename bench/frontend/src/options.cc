// Command-line parsing for the bench front-end.
#include "options.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common.h"

namespace vb {

const char* usage() {
  return R"(vhost-bench: a vhost-user front-end (the driver side) that drives a
vhost-user-scsi or vhost-user-blk back-end and measures it.

  --proto scsi|blk        device personality (default scsi)
  --socket PATH           vhost-user socket; scsi: exactly one; blk: one per
                          export (repeat), each its own connection and target
  --luns N                scsi: target 0, LUNs 0..N-1 (default 1)
  --lun T:L               scsi: add target T, LUN L (repeatable; replaces --luns)
  --rw randread|randwrite|read|write
                          workload (read/write are sequential; default randread)
  --bs SIZE | MIN-MAX     block size, or uniform in [MIN,MAX] in 4 KiB steps
  --qd N                  queue depth per target (default 1)
  --runtime SEC           measure for SEC seconds (default 5)
  --ios N                 or: stop after N I/Os in total
  --warmup SEC            run unmeasured first (default 0)
  --size SIZE             bytes of each target to use (default: its capacity)
  --event-idx             negotiate VIRTIO_F_EVENT_IDX (required if given)
  --indirect              one indirect descriptor per request (needs INDIRECT_DESC)
  --poll                  busy-poll the used rings instead of waiting on call eventfds
  --queue-size N          largest ring size to use (default 1024)
  --scsi-queues N         scsi request queues; targets spread round-robin (default 1)
  --verify write+read|write|read
                          write the pattern over --size of each target and/or
                          read it back and check every byte (ignores --rw/--runtime)
  --seed N                pattern / PRNG seed (default 1); the pattern also
                          depends on each target's position on the command line
  --timeout-ms N          give up when nothing completes for N ms (default 10000)
  --quiet                 no progress messages on stderr
  --cpu-pid PID           report the CPU time PID (the back-end) used during the
                          measured window, from /proc/PID/stat utime+stime

Prints one JSON line on stdout. Exit status: 0 all good, 1 I/O errors or
verify mismatches, 2 setup or protocol failure (JSON carries "error").
Sizes accept k/m/g suffixes (binary).
)";
}

const char* workloadName(Workload w) {
  switch (w) {
    case Workload::RandRead: return "randread";
    case Workload::RandWrite: return "randwrite";
    case Workload::SeqRead: return "read";
    case Workload::SeqWrite: return "write";
  }
  return "?";
}

const char* verifyName(Verify v) {
  switch (v) {
    case Verify::None: return "none";
    case Verify::WriteRead: return "write+read";
    case Verify::WriteOnly: return "write";
    case Verify::ReadOnly: return "read";
  }
  return "?";
}

namespace {

uint64_t parseSize(const std::string& s, const char* what) {
  if (s.empty()) fail(format("%s: empty value", what));
  errno = 0;
  char* end = nullptr;
  unsigned long long v = strtoull(s.c_str(), &end, 10);
  if (errno || end == s.c_str()) fail(format("%s: not a number: %s", what, s.c_str()));
  uint64_t mul = 1;
  std::string suffix(end);
  if (suffix == "" || suffix == "b") mul = 1;
  else if (suffix == "k" || suffix == "K" || suffix == "KiB") mul = 1ull << 10;
  else if (suffix == "m" || suffix == "M" || suffix == "MiB") mul = 1ull << 20;
  else if (suffix == "g" || suffix == "G" || suffix == "GiB") mul = 1ull << 30;
  else fail(format("%s: unknown suffix in %s", what, s.c_str()));
  if (v > UINT64_MAX / mul) fail(format("%s: too large: %s", what, s.c_str()));
  return v * mul;
}

uint64_t parseUint(const std::string& s, const char* what, uint64_t max) {
  errno = 0;
  char* end = nullptr;
  unsigned long long v = strtoull(s.c_str(), &end, 10);
  if (errno || end == s.c_str() || *end || v > max) fail(format("%s: expected an integer <= %llu, got %s", what, (unsigned long long)max, s.c_str()));
  return v;
}

double parseSeconds(const std::string& s, const char* what) {
  char* end = nullptr;
  double v = strtod(s.c_str(), &end);
  if (end == s.c_str() || *end || !(v >= 0) || v > 86400) fail(format("%s: expected seconds, got %s", what, s.c_str()));
  return v;
}

}  // namespace

bool parseOptions(int argc, char** argv, Options& o) {
  uint32_t lunCount = 1;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail(format("%s needs a value (see --help)", a.c_str()));
      return argv[++i];
    };
    if (a == "--help" || a == "-h") return false;
    else if (a == "--proto") {
      std::string v = value();
      if (v == "scsi") o.proto = Proto::Scsi;
      else if (v == "blk") o.proto = Proto::Blk;
      else fail("--proto must be scsi or blk");
    } else if (a == "--socket") o.sockets.push_back(value());
    else if (a == "--luns") lunCount = uint32_t(parseUint(value(), "--luns", 16384));
    else if (a == "--lun") {
      std::string v = value();
      auto colon = v.find(':');
      if (colon == std::string::npos) fail("--lun wants T:L");
      o.luns.emplace_back(uint16_t(parseUint(v.substr(0, colon), "--lun target", 255)),
                          uint16_t(parseUint(v.substr(colon + 1), "--lun lun", 16383)));
    } else if (a == "--rw") {
      std::string v = value();
      if (v == "randread") o.workload = Workload::RandRead;
      else if (v == "randwrite") o.workload = Workload::RandWrite;
      else if (v == "read" || v == "seqread") o.workload = Workload::SeqRead;
      else if (v == "write" || v == "seqwrite") o.workload = Workload::SeqWrite;
      else fail("--rw must be randread, randwrite, read or write");
    } else if (a == "--bs") {
      std::string v = value();
      auto dash = v.find('-');
      if (dash == std::string::npos) o.bsMin = o.bsMax = uint32_t(parseSize(v, "--bs"));
      else {
        o.bsMin = uint32_t(parseSize(v.substr(0, dash), "--bs"));
        o.bsMax = uint32_t(parseSize(v.substr(dash + 1), "--bs"));
      }
    } else if (a == "--qd") o.qd = uint32_t(parseUint(value(), "--qd", 1024));
    else if (a == "--runtime") o.runtimeSec = parseSeconds(value(), "--runtime");
    else if (a == "--ios") o.ios = parseUint(value(), "--ios", UINT64_MAX / 2);
    else if (a == "--warmup") o.warmupSec = parseSeconds(value(), "--warmup");
    else if (a == "--size") o.sizeBytes = parseSize(value(), "--size");
    else if (a == "--event-idx") o.eventIdx = true;
    else if (a == "--indirect") o.indirect = true;
    else if (a == "--poll") o.poll = true;
    else if (a == "--queue-size") o.maxQueueSize = uint32_t(parseUint(value(), "--queue-size", 32768));
    else if (a == "--scsi-queues") o.scsiRequestQueues = uint32_t(parseUint(value(), "--scsi-queues", 64));
    else if (a == "--verify") {
      std::string v = value();
      if (v == "write+read") o.verify = Verify::WriteRead;
      else if (v == "write") o.verify = Verify::WriteOnly;
      else if (v == "read") o.verify = Verify::ReadOnly;
      else fail("--verify must be write+read, write or read");
    } else if (a == "--seed") o.seed = parseUint(value(), "--seed", UINT64_MAX);
    else if (a == "--timeout-ms") o.timeoutMs = int(parseUint(value(), "--timeout-ms", 3600000));
    else if (a == "--quiet") o.quiet = true;
    else if (a == "--cpu-pid") o.cpuPid = int(parseUint(value(), "--cpu-pid", 1u << 22));
    else fail(format("unknown option %s (see --help)", a.c_str()));
  }
  if (o.sockets.empty()) fail("--socket is required");
  if (o.proto == Proto::Scsi) {
    if (o.sockets.size() != 1) fail("--proto scsi takes exactly one --socket (LUNs are addressed inside it)");
    if (o.luns.empty())
      for (uint32_t l = 0; l < lunCount; l++) o.luns.emplace_back(0, uint16_t(l));
    if (o.luns.empty()) fail("--luns must be >= 1");
    if (o.scsiRequestQueues == 0) fail("--scsi-queues must be >= 1");
  } else if (!o.luns.empty() || lunCount != 1) {
    fail("--lun/--luns apply to --proto scsi; for blk give one --socket per export");
  }
  const uint32_t kAlign = 4096;
  if (o.bsMin == 0 || o.bsMin > o.bsMax || o.bsMin % kAlign || o.bsMax % kAlign || o.bsMax > (4u << 20))
    fail("--bs must be multiples of 4 KiB, MIN <= MAX <= 4 MiB");
  if (o.qd == 0) fail("--qd must be >= 1");
  if (o.sizeBytes % kAlign) fail("--size must be a multiple of 4 KiB");
  if (o.maxQueueSize == 0 || (o.maxQueueSize & (o.maxQueueSize - 1))) fail("--queue-size must be a power of two");
  if (o.ios == 0 && o.runtimeSec <= 0 && o.verify == Verify::None) fail("give --runtime > 0 or --ios");
  return true;
}

}  // namespace vb
