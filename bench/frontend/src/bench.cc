// The measuring engine's I/O loop; see bench.h. run() keeps every slot busy
// until the phase ends: frame a request (protocol.h), push it, publish and
// kick per batch, wait on the call eventfds (or poll), check each completion,
// record its latency, and reuse the slot for the next request.
#include "bench.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench_internal.h"
#include "common.h"
#include "pattern.h"
#include "protocol.h"

namespace vb {

namespace {
/** utime+stime of a whole process in seconds (/proc/PID/stat fields 14 and 15, proc(5)). */
double cpuSecondsOf(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE* f = fopen(path, "re");
  if (!f) fail(format("--cpu-pid %d: cannot open %s: %s", pid, path, strerror(errno)));
  char buf[2048];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  // The command name may contain spaces and parentheses: fields resume after the last ')'.
  const char* p = strrchr(buf, ')');
  unsigned long long utime = 0, stime = 0;
  if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
    fail(format("--cpu-pid %d: cannot parse %s", pid, path));
  return double(utime + stime) / double(sysconf(_SC_CLK_TCK));
}

double cpuSecondsSelf() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}
}  // namespace

void Bench::setChain(Slot& s, const Seg* segs, int n) {
  uint32_t writable = 0;
  for (int i = 0; i < n; i++) {
    VringDesc& d = s.chain[i];
    d.addr = segs[i].gpa;
    d.len = segs[i].len;
    d.flags = uint16_t((segs[i].writable ? kDescFWrite : 0) | (i + 1 < n ? kDescFNext : 0));
    d.next = i + 1 < n ? uint16_t(s.chainBase + i + 1) : 0;
    if (segs[i].writable) writable += segs[i].len;
  }
  if (o_.indirect) {
    VringDesc& d = s.q->ring->desc()[s.head];
    d.addr = s.tableGpa;
    d.len = uint32_t(n * sizeof(VringDesc));
    d.flags = kDescFIndirect;
    d.next = 0;
  }
  s.writableLen = writable;
}

void Bench::submit(Slot& s) {
  s.inFlight = true;
  s.done = false;
  s.startNs = nowNs();
  s.q->ring->push(s.head);
  s.q->dirty = true;
  inFlight_++;
}

void Bench::publishAll() {
  for (Queue* q : ioQueues_)
    if (q->dirty) {
      q->ring->publish();
      q->dirty = false;
    }
}

void Bench::runSync(Slot& s) {
  s.kind = Kind::Setup;
  submit(s);
  publishAll();
  lastProgressNs_ = nowNs();
  while (!s.done) waitForCompletions();
  s.kind = Kind::Io;
}

void Bench::waitForCompletions() {
  if (o_.poll) {
    for (Queue* q : ioQueues_) reap(*q);
    static uint32_t spins = 0;
    if (++spins % 4096 != 0) return;
  }
  epoll_event evs[64];
  int n = epoll_wait(epfd_, evs, 64, o_.poll ? 0 : 100);
  if (n < 0 && errno != EINTR) fail(format("epoll_wait: %s", strerror(errno)));
  for (int i = 0; i < n; i++) {
    uint64_t tag = evs[i].data.u64;
    if (tag & kSocketTag)
      fail(format("back-end closed (or wrote unsolicited data on) %s", conns_[tag & ~kSocketTag]->client->path().c_str()));
    Queue* q = ioQueues_[tag];
    if (q->ring->drainCallFd()) calls_++;
    reap(*q);
  }
  uint64_t now = nowNs();
  if (inFlight_ && now - lastProgressNs_ > uint64_t(o_.timeoutMs) * 1000000ull)
    fail(format("no completion for %d ms with %llu requests in flight (back-end hung or lost a notification)", o_.timeoutMs,
                (unsigned long long)inFlight_));
}

void Bench::reap(Queue& q) {
  SplitRing& r = *q.ring;
  do {
    uint32_t id, len;
    uint64_t now = 0;
    while (r.popUsed(id, len)) {
      if (!now) now = nowNs();
      if (id >= r.size() || !q.slotByHead[id] || !q.slotByHead[id]->inFlight)
        fail(format("queue %u: device returned chain head %u that is not in flight", q.vringIndex, id));
      complete(*q.slotByHead[id], len, now);
    }
  } while (!o_.poll && r.armCall());
}

void Bench::noteError(const std::string& what) {
  if (cur_) {
    cur_->errors++;
    if (cur_->firstError.empty()) cur_->firstError = what;
  }
  if (errorsPrinted_ < kMaxPrintedErrors && !o_.quiet) {
    fprintf(stderr, "vhost-bench: %s\n", what.c_str());
    if (++errorsPrinted_ == kMaxPrintedErrors) fprintf(stderr, "vhost-bench: (further errors counted, not printed)\n");
  }
}

void Bench::complete(Slot& s, uint32_t usedLen, uint64_t now) {
  s.inFlight = false;
  inFlight_--;
  lastProgressNs_ = lastCompletionNs_ = now;
  if (usedLen > s.writableLen)
    fail(format("queue %u: device claims %u bytes written into a %u-byte writable buffer", s.q->vringIndex, usedLen, s.writableLen));
  bool ok = true;
  std::string why;
  if (o_.proto == Proto::Scsi) {
    auto r = scsi::parseResponse(s.meta + kRespOffset);
    if (r.response != scsi::kRespOk || r.status != scsi::kStatusGood) {
      ok = false;
      why = scsi::describe(r);
    } else if (s.kind == Kind::Io && r.residual != 0) {
      ok = false;
      why = format("residual %u on a full transfer", r.residual);
    }
  } else {
    uint8_t st = s.meta[kRespOffset];
    if (st != blk::kStatusOk) {
      ok = false;
      why = st == blk::kStatusIoErr ? "status IOERR" : st == blk::kStatusUnsupp ? "status UNSUPP" : format("status byte %u (never written?)", st);
    }
  }
  if (ok && usedLen < s.expectedUsedLen && s.kind == Kind::Io) {
    ok = false;
    why = format("used length %u < %u bytes the request transferred", usedLen, s.expectedUsedLen);
  }
  s.ok = ok;
  if (s.kind == Kind::Setup) {
    s.done = true;
    return;
  }
  if (!ok) noteError(format("%s %s offset %llu len %u: %s", s.write ? "write" : "read", s.t->name.c_str(),
                            (unsigned long long)s.offset, s.len, why.c_str()));
  if (ok && phase_ == Phase::VerifyRead) {
    int64_t bad = checkPattern(s.data, s.len, o_.seed, s.t->index, s.offset);
    cur_->verifiedBytes += s.len;
    if (bad >= 0) {
      cur_->mismatches++;
      std::string where = format("target %s offset %llu (+%lld)", s.t->name.c_str(), (unsigned long long)s.offset, (long long)bad);
      if (cur_->firstMismatch.empty()) cur_->firstMismatch = where;
      if (!o_.quiet && cur_->mismatches <= kMaxPrintedErrors) fprintf(stderr, "vhost-bench: data mismatch at %s\n", where.c_str());
    }
  } else if (ok && phase_ == Phase::VerifyWrite) {
    cur_->verifiedBytes += s.len;
  }
  if (measuring_) {
    cur_->latency.record(now - s.startNs);
    cur_->ios++;
    cur_->bytes += s.len;
    cur_->perTargetIos[s.t->index]++;
  }
  if (nextIo(s, phase_)) submit(s);
}

bool Bench::nextIo(Slot& s, Phase phase) {
  if (stopIssuing_) return false;
  Target& t = *s.t;
  Rng rng(0);
  rng.state = rngState_;
  uint32_t bs = o_.bsMin;
  if (o_.bsMax > o_.bsMin) bs += uint32_t(rng.below((o_.bsMax - o_.bsMin) / 4096 + 1) * 4096);
  uint64_t offset;
  bool write;
  if (phase == Phase::Workload) {
    if (o_.ios && issued_ >= o_.ios) return false;
    write = o_.workload == Workload::RandWrite || o_.workload == Workload::SeqWrite;
    if (o_.workload == Workload::RandRead || o_.workload == Workload::RandWrite) {
      offset = rng.below((t.usable - bs) / 4096 + 1) * 4096;
    } else {
      if (t.cursor + bs > t.usable) t.cursor = 0;
      offset = t.cursor;
      t.cursor += bs;
    }
  } else {
    if (t.cursor >= t.usable) return false;
    offset = t.cursor;
    bs = uint32_t(std::min<uint64_t>(bs, t.usable - t.cursor));
    t.cursor += bs;
    write = phase == Phase::VerifyWrite;
  }
  rngState_ = rng.state;
  issued_++;
  prepareIo(s, write, offset, bs, phase);
  return true;
}

void Bench::prepareIo(Slot& s, bool write, uint64_t offset, uint32_t len, Phase phase) {
  Target& t = *s.t;
  s.write = write;
  s.offset = offset;
  s.len = len;
  s.kind = Kind::Io;
  if (phase == Phase::VerifyWrite) fillPattern(s.data, len, o_.seed, t.index, offset);
  Seg segs[3];
  if (o_.proto == Proto::Scsi) {
    uint8_t cdb[16];
    scsi::cdbReadWrite16(cdb, write, offset / t.blockSize, len / t.blockSize);
    scsi::encodeRequest(s.meta, t.lun, (uint64_t(s.index) << 40) | ++s.seq, cdb, 16);
    // Poison what the device must overwrite, so a response never written is caught.
    memset(s.meta + kRespOffset, 0xff, 12);
    segs[0] = {s.metaGpa, scsi::kReqSize, false};
    if (write) {
      segs[1] = {s.dataGpa, len, false};
      segs[2] = {s.metaGpa + kRespOffset, scsi::kRespSize, true};
      s.expectedUsedLen = scsi::kRespSize;
    } else {
      segs[1] = {s.metaGpa + kRespOffset, scsi::kRespSize, true};
      segs[2] = {s.dataGpa, len, true};
      s.expectedUsedLen = scsi::kRespSize + len;
    }
  } else {
    blk::encodeHeader(s.meta, write ? blk::kTypeOut : blk::kTypeIn, offset / blk::kSectorSize);
    s.meta[kRespOffset] = 0xff;
    segs[0] = {s.metaGpa, blk::kHeaderSize, false};
    segs[1] = {s.dataGpa, len, !write};
    segs[2] = {s.metaGpa + kRespOffset, 1, true};
    s.expectedUsedLen = write ? 1 : len + 1;
  }
  setChain(s, segs, 3);
}

PhaseResult Bench::runPhase(Phase phase) {
  PhaseResult res;
  res.name = phase == Phase::Workload ? workloadName(o_.workload) : phase == Phase::VerifyWrite ? "verify-write" : "verify-read";
  res.perTargetIos.assign(targets_.size(), 0);
  cur_ = &res;
  phase_ = phase;
  stopIssuing_ = false;
  issued_ = 0;
  for (auto& t : targets_) t->cursor = 0;
  const bool timed = phase == Phase::Workload && o_.ios == 0;
  uint64_t phaseStart = nowNs();
  measuring_ = phase != Phase::Workload || o_.warmupSec <= 0;
  uint64_t measureStart = phaseStart;
  uint64_t deadline = measureStart + uint64_t(o_.runtimeSec * 1e9);
  double cpuStart = cpuSecondsSelf();
  double backendStart = o_.cpuPid ? cpuSecondsOf(o_.cpuPid) : 0;
  uint64_t kicks0 = 0, skips0 = 0, calls0 = calls_;
  for (Queue* q : ioQueues_) kicks0 += q->ring->kicks, skips0 += q->ring->kickSkips;
  lastProgressNs_ = lastCompletionNs_ = phaseStart;

  for (auto& s : slots_)
    if (nextIo(*s, phase)) submit(*s);
  publishAll();
  while (inFlight_ > 0) {
    waitForCompletions();
    publishAll();
    uint64_t now = nowNs();
    if (!measuring_ && now - phaseStart >= uint64_t(o_.warmupSec * 1e9)) {
      measuring_ = true;
      measureStart = now;
      deadline = now + uint64_t(o_.runtimeSec * 1e9);
      cpuStart = cpuSecondsSelf();
      if (o_.cpuPid) backendStart = cpuSecondsOf(o_.cpuPid);
      calls0 = calls_;
      kicks0 = skips0 = 0;
      for (Queue* q : ioQueues_) kicks0 += q->ring->kicks, skips0 += q->ring->kickSkips;
    }
    if (timed && measuring_ && now >= deadline) stopIssuing_ = true;
  }
  res.seconds = double(lastCompletionNs_ > measureStart ? lastCompletionNs_ - measureStart : 0) / 1e9;
  res.frontendCpuUs = (cpuSecondsSelf() - cpuStart) * 1e6;
  if (o_.cpuPid) res.backendCpuUs = (cpuSecondsOf(o_.cpuPid) - backendStart) * 1e6;
  for (Queue* q : ioQueues_) res.kicks += q->ring->kicks, res.kickSkips += q->ring->kickSkips;
  res.kicks -= kicks0;
  res.kickSkips -= skips0;
  res.calls = calls_ - calls0;
  cur_ = nullptr;
  return res;
}

std::vector<PhaseResult> Bench::run() {
  std::vector<PhaseResult> out;
  switch (o_.verify) {
    case Verify::None: out.push_back(runPhase(Phase::Workload)); break;
    case Verify::WriteOnly: out.push_back(runPhase(Phase::VerifyWrite)); break;
    case Verify::ReadOnly: out.push_back(runPhase(Phase::VerifyRead)); break;
    case Verify::WriteRead:
      out.push_back(runPhase(Phase::VerifyWrite));
      out.push_back(runPhase(Phase::VerifyRead));
      break;
  }
  return out;
}

}  // namespace vb
