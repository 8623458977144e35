// iscsi-direct: the floor of the bench's passthrough section. Drives an iSCSI
// LUN straight from libiscsi (the initiator library vhba's passthrough LUNs
// and QEMU's iscsi block driver both use), with no vhost-user hop, no engine
// and no virtqueue: READ(16)/WRITE(16) (SBC-3 §5.16, §5.40) at a fixed queue
// depth on one session, with the vhost-user front-end's workload rules
// (bench/frontend/src/bench.cc: 4 KiB-aligned uniform random offsets over the
// capacity rounded down to 4 KiB, or sequential wrapping at the end; same
// PRNG and seed) and latency histogram. Data moves through caller-owned
// buffers (scsi_task_set_iov_in/out), as vhba's iSCSI transport does.
//
//   iscsi-direct --portal HOST:PORT --iqn IQN --lun N [--initiator NAME]
//                [--rw randread|randwrite|read|write] [--bs SIZE] [--qd N]
//                [--runtime SEC] [--warmup SEC] [--seed N] [--timeout-ms N]
//
// Prints one JSON line (the fields bench/lib/native.ts FrontendResult shares);
// exit status 0 all good, 1 I/O errors, 2 setup failure ("error" set).
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <poll.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../frontend/src/common.h"
#include "../frontend/src/histogram.h"

using namespace vb;

namespace {

struct Options {
  std::string portal, iqn, initiator = "iqn.2026-11.io.vhba:bench-direct", rw = "randread";
  int lun = -1;
  uint32_t bs = 4096, qd = 1;
  double runtime = 5, warmup = 0;
  uint64_t seed = 1, timeoutMs = 10000;
};

/** One outstanding command slot: its buffer and issue time. */
struct Slot {
  std::vector<uint8_t> data;
  scsi_iovec iov{};
  uint64_t startNs = 0;
  bool busy = false;
};

struct Run {
  Options o;
  iscsi_context* ctx = nullptr;
  uint64_t usable = 0, cursor = 0;
  uint32_t blockSize = 512;
  Rng rng{0};
  std::vector<Slot> slots;
  Histogram hist;
  bool measuring = false, stopIssuing = false;
  uint64_t ios = 0, errors = 0, bytes = 0, inFlight = 0;
  std::string firstError;
};

uint64_t parseSize(const std::string& s) {
  char* end = nullptr;
  uint64_t v = std::strtoull(s.c_str(), &end, 10);
  if (end == s.c_str()) fail("bad size " + s);
  switch (*end) {
    case 'k': case 'K': return v << 10;
    case 'm': case 'M': return v << 20;
    case 'g': case 'G': return v << 30;
    case '\0': return v;
    default: fail("bad size " + s);
  }
}

Options parseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (i + 1 >= argc) fail("missing value after " + a);
    std::string v = argv[++i];
    if (a == "--portal") o.portal = v;
    else if (a == "--iqn") o.iqn = v;
    else if (a == "--lun") o.lun = std::atoi(v.c_str());
    else if (a == "--initiator") o.initiator = v;
    else if (a == "--rw") o.rw = v;
    else if (a == "--bs") o.bs = uint32_t(parseSize(v));
    else if (a == "--qd") o.qd = uint32_t(std::atoi(v.c_str()));
    else if (a == "--runtime") o.runtime = std::atof(v.c_str());
    else if (a == "--warmup") o.warmup = std::atof(v.c_str());
    else if (a == "--seed") o.seed = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--timeout-ms") o.timeoutMs = std::strtoull(v.c_str(), nullptr, 10);
    else fail("unknown option " + a);
  }
  if (o.portal.empty() || o.iqn.empty() || o.lun < 0) fail("--portal, --iqn and --lun are required");
  if (o.rw != "randread" && o.rw != "randwrite" && o.rw != "read" && o.rw != "write") fail("--rw: randread|randwrite|read|write");
  if (o.bs == 0 || o.bs % 4096 || o.bs > (16u << 20)) fail("--bs must be a multiple of 4 KiB up to 16 MiB");
  if (o.qd < 1 || o.qd > 1024) fail("--qd must be 1..1024");
  if (!(o.runtime > 0) || o.warmup < 0) fail("--runtime must be > 0, --warmup >= 0");
  return o;
}

void connectLun(Run& r) {
  r.ctx = iscsi_create_context(r.o.initiator.c_str());
  if (!r.ctx) fail("iscsi_create_context failed");
  iscsi_set_targetname(r.ctx, r.o.iqn.c_str());
  iscsi_set_session_type(r.ctx, ISCSI_SESSION_NORMAL);
  iscsi_set_header_digest(r.ctx, ISCSI_HEADER_DIGEST_NONE);
  iscsi_set_timeout(r.ctx, int(r.o.timeoutMs / 1000 + 1));
  if (iscsi_full_connect_sync(r.ctx, r.o.portal.c_str(), r.o.lun) != 0)
    fail(format("login to %s %s LUN %d: %s", r.o.portal.c_str(), r.o.iqn.c_str(), r.o.lun, iscsi_get_error(r.ctx)));
  scsi_task* t = iscsi_readcapacity16_sync(r.ctx, r.o.lun);
  if (!t || t->status != SCSI_STATUS_GOOD) fail(format("READ CAPACITY(16): %s", iscsi_get_error(r.ctx)));
  auto* cap = static_cast<scsi_readcapacity16*>(scsi_datain_unmarshall(t));
  if (!cap || cap->block_length == 0 || cap->block_length > 4096 || 4096 % cap->block_length) fail("READ CAPACITY(16): unusable data");
  r.blockSize = cap->block_length;
  r.usable = ((cap->returned_lba + 1) * cap->block_length) & ~4095ull;
  scsi_free_scsi_task(t);
  if (r.usable < r.o.bs) fail("LUN smaller than one block of --bs");
}

void issue(Run& r, Slot& s);

void completed(iscsi_context*, int status, void* commandData, void* privateData) {
  auto* task = static_cast<scsi_task*>(commandData);
  auto* pair = static_cast<std::pair<Run*, Slot*>*>(privateData);
  Run& r = *pair->first;
  Slot& s = *pair->second;
  delete pair;
  s.busy = false;
  r.inFlight--;
  if (r.measuring) {
    if (status == SCSI_STATUS_GOOD) {
      r.ios++;
      r.bytes += r.o.bs;
      r.hist.record(nowNs() - s.startNs);
    } else {
      r.errors++;
      if (r.firstError.empty()) {
        r.firstError = format("status %d: %s", status, iscsi_get_error(r.ctx));
        for (char& c : r.firstError)
          if (c == '"' || c == '\\' || c < ' ') c = '\'';
      }
    }
  }
  if (task) scsi_free_scsi_task(task);
  if (!r.stopIssuing) issue(r, s);
}

void issue(Run& r, Slot& s) {
  const bool random = r.o.rw == "randread" || r.o.rw == "randwrite";
  const bool write = r.o.rw == "randwrite" || r.o.rw == "write";
  uint64_t offset;
  if (random) {
    offset = r.rng.below((r.usable - r.o.bs) / 4096 + 1) * 4096;
  } else {
    if (r.cursor + r.o.bs > r.usable) r.cursor = 0;
    offset = r.cursor;
    r.cursor += r.o.bs;
  }
  scsi_task* task = write ? scsi_cdb_write16(offset / r.blockSize, r.o.bs, int(r.blockSize), 0, 0, 0, 0, 0)
                          : scsi_cdb_read16(offset / r.blockSize, r.o.bs, int(r.blockSize), 0, 0, 0, 0, 0);
  if (!task) fail("scsi_cdb_read16/write16: out of memory");
  s.iov.iov_base = s.data.data();
  s.iov.iov_len = r.o.bs;
  if (write) scsi_task_set_iov_out(task, &s.iov, 1);
  else scsi_task_set_iov_in(task, &s.iov, 1);
  s.busy = true;
  s.startNs = nowNs();
  auto* pair = new std::pair<Run*, Slot*>(&r, &s);
  if (iscsi_scsi_command_async(r.ctx, r.o.lun, task, completed, nullptr, pair) != 0) {
    delete pair;
    scsi_free_scsi_task(task);
    fail(format("cannot queue a command: %s", iscsi_get_error(r.ctx)));
  }
  r.inFlight++;
}

/** Services the connection until `untilNs` (or, with stopIssuing, until nothing is in flight). */
void serviceUntil(Run& r, uint64_t untilNs) {
  uint64_t lastProgress = nowNs(), seen = r.ios + r.errors;
  for (;;) {
    const uint64_t now = nowNs();
    if (r.stopIssuing ? r.inFlight == 0 : now >= untilNs) return;
    if (r.ios + r.errors != seen) seen = r.ios + r.errors, lastProgress = now;
    if (now - lastProgress > r.o.timeoutMs * 1000000ull) fail(format("nothing completed for %llu ms", (unsigned long long)r.o.timeoutMs));
    pollfd p{iscsi_get_fd(r.ctx), short(iscsi_which_events(r.ctx)), 0};
    const int n = ::poll(&p, 1, 100);
    if (n < 0 && errno != EINTR) fail(format("poll: %s", std::strerror(errno)));
    if (iscsi_service(r.ctx, n > 0 ? p.revents : 0) < 0) fail(format("iscsi_service: %s", iscsi_get_error(r.ctx)));
  }
}

void printResult(const Run& r, double seconds) {
  const double us = 1e-3;
  printf("{\"proto\":\"iscsi-direct\",\"rw\":\"%s\",\"ios\":%llu,\"errors\":%llu,\"bytes\":%llu,\"seconds\":%.6f,"
         "\"iops\":%.3f,\"mbps\":%.3f,\"latUs\":{\"p50\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"mean\":%.3f,\"min\":%.3f,\"max\":%.3f},"
         "\"backendCpuUs\":-1,\"frontendCpuUs\":-1,\"totalErrors\":%llu,\"totalMismatches\":0,\"shutdownProblems\":null,"
         "\"firstError\":%s,\"blockSize\":%u,\"usableBytes\":%llu}\n",
         r.o.rw.c_str(), (unsigned long long)r.ios, (unsigned long long)r.errors, (unsigned long long)r.bytes, seconds,
         double(r.ios) / seconds, double(r.bytes) / seconds / 1e6, r.hist.quantile(0.5) * us, r.hist.quantile(0.99) * us,
         r.hist.quantile(0.999) * us, r.hist.mean() * us, double(r.hist.min()) * us, double(r.hist.max()) * us,
         (unsigned long long)r.errors, r.firstError.empty() ? "null" : ("\"" + r.firstError + "\"").c_str(), r.blockSize,
         (unsigned long long)r.usable);
}

}  // namespace

int main(int argc, char** argv) {
  Run r;
  try {
    r.o = parseOptions(argc, argv);
    r.rng = Rng(r.o.seed);
    r.rng.state = splitmix64(r.o.seed);  // the front-end's starting state (bench_setup.cc)
    connectLun(r);
    r.slots.resize(r.o.qd);
    Rng fill(r.o.seed * 7919);
    for (Slot& s : r.slots) {
      s.data.resize(r.o.bs);
      for (size_t i = 0; i + 8 <= s.data.size(); i += 8) {
        const uint64_t v = fill.next();
        std::memcpy(&s.data[i], &v, 8);
      }
    }
    for (Slot& s : r.slots) issue(r, s);
    serviceUntil(r, nowNs() + uint64_t(r.o.warmup * 1e9));
    r.measuring = true;
    const uint64_t start = nowNs();
    serviceUntil(r, start + uint64_t(r.o.runtime * 1e9));
    r.measuring = false;
    const double seconds = double(nowNs() - start) / 1e9;
    r.stopIssuing = true;
    serviceUntil(r, 0);
    printResult(r, seconds);
    iscsi_logout_sync(r.ctx);
    iscsi_destroy_context(r.ctx);
    return r.errors ? 1 : 0;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    for (char& c : msg)
      if (c == '"' || c == '\\' || c < ' ') c = '\'';
    printf("{\"proto\":\"iscsi-direct\",\"error\":\"%s\"}\n", msg.c_str());
    if (r.ctx) iscsi_destroy_context(r.ctx);
    return 2;
  }
}
