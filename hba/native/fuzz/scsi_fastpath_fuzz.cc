// Fuzz target for the native virtio-scsi fast path (scsi_fastpath.cc,
// virtio 1.2 §5.6.6.1; SBC-3 READ/WRITE/SYNCHRONIZE CACHE (10/16)): a request
// chain built from the input — header and data-out split over 1..4 readable
// buffers, 1..4 writable buffers of arbitrary sizes (each its own heap block,
// so ASan sees any access past a buffer), a CDB with edge-case LBAs and
// lengths (2^64 wrap, 0, > capacity), arbitrary LUN addressing — executed
// against a LUN table whose LUN is a memfd with fuzzed block size, capacity,
// transfer limit, read-only and write-cache flags.
// Checked: deferred requests leave the writable buffers untouched; completed
// ones report usedLength within [108, writable capacity], status GOOD or
// CHECK CONDITION with well-formed fixed sense, GOOD reads return the file's
// bytes, GOOD writes put the data-out bytes into the file. No N-API.
#include <sys/mman.h>
#include <unistd.h>

#include <stdexcept>

#include "fuzz_chain.h"
#include "scsi_fastpath.h"

namespace {

using vhba_fuzz::ByteReader;
constexpr size_t kReqHeader = 51, kRespHeader = 108, kCdbOffset = 19;
constexpr uint8_t kFill = 0xee;

int backingFile() {
  static int fd = [] {
    int f = ::memfd_create("vhba-fuzz-lun", MFD_CLOEXEC);
    std::vector<uint8_t> pattern(1 << 16);
    for (size_t i = 0; i < pattern.size(); i++) pattern[i] = static_cast<uint8_t>(i * 31 + (i >> 8));
    (void)!::pwrite(f, pattern.data(), pattern.size(), 0);
    return f;
  }();
  return fd;
}

void putBe(uint8_t* p, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; i--, v >>= 8) p[i] = static_cast<uint8_t>(v);
}

uint64_t edgy(ByteReader& in, uint64_t capacity) {
  switch (in.u8() % 6) {
    case 0: return in.u8() % 8;
    case 1: return capacity - in.u8() % 4;
    case 2: return UINT64_MAX - in.u8() % 4;
    case 3: return uint64_t{1} << (in.u8() % 64);
    case 4: return capacity + in.u8() % 4;
    default: return in.u64();
  }
}

void runOne(const uint8_t* data, size_t size) {
  ByteReader in(data, size);
  // The LUN.
  const uint8_t lunFlags = in.u8();
  vhba::NativeLunConfig config;
  config.fd = backingFile();
  config.dsyncFd = lunFlags & 1 && lunFlags & 0x10 ? -1 : backingFile();  // read-only LUNs may omit it
  config.blockSize = lunFlags & 2 ? 4096 : 512;
  config.blockCount = lunFlags & 4 ? (uint64_t{1} << 20) : 1 + in.u8() % 64;
  config.maxTransferBlocks = lunFlags & 8 ? UINT32_MAX : in.u8() % 16;
  config.readOnly = lunFlags & 0x10;
  config.writeCacheEnabled = lunFlags & 0x20;
  config.eligible = !(lunFlags & 0x40 && lunFlags & 0x80);
  if (::ftruncate(backingFile(), std::min<uint64_t>(config.blockCount * config.blockSize, 1 << 16)) != 0) return;
  vhba::LunTable table;
  const uint8_t target = in.u8() % 2, lunNumber = in.u8() % 300 == 0 ? 0 : in.u8() % 3;
  try {
    table.add(target, lunNumber, config);  // documented to refuse invalid configs
  } catch (const std::invalid_argument&) {
    return;
  }

  // The request header (virtio_scsi_cmd_req) and CDB.
  uint8_t header[kReqHeader] = {};
  const uint8_t addressing = in.u8();
  header[0] = addressing % 16 == 0 ? in.u8() : 1;
  header[1] = addressing & 0x10 ? in.u8() : target;
  const uint32_t lunAddress = addressing & 0x20 ? in.u16() : (addressing & 0x40 ? 0x4000 | lunNumber : lunNumber);
  header[2] = static_cast<uint8_t>(lunAddress >> 8);
  header[3] = static_cast<uint8_t>(lunAddress);
  if (addressing == 0xff) header[5] = 1;
  uint8_t* cdb = header + kCdbOffset;
  static const uint8_t kOpcodes[] = {0x28, 0x88, 0x2a, 0x8a, 0x35, 0x91};
  const uint8_t opSel = in.u8();
  cdb[0] = opSel < 240 ? kOpcodes[opSel % 6] : opSel;
  const bool long16 = cdb[0] == 0x88 || cdb[0] == 0x8a || cdb[0] == 0x91;
  cdb[1] = in.u8() % 3 == 0 ? in.u8() : (in.u8() & 0x08);  // FUA mostly, sometimes junk
  // What the CDB can hold: READ(10) has a 32-bit LBA and 16-bit length, (16) 64 and 32.
  const uint64_t lba = edgy(in, config.blockCount) & (long16 ? UINT64_MAX : UINT32_MAX);
  const uint64_t blocks = (in.u8() % 2 ? in.u8() % 20 : edgy(in, config.blockCount)) & (long16 ? UINT32_MAX : UINT16_MAX);
  if (long16) { putBe(cdb + 2, lba, 8); putBe(cdb + 10, blocks, 4); cdb[15] = in.u8() % 8 == 0 ? in.u8() : 0; }
  else { putBe(cdb + 2, lba, 4); putBe(cdb + 7, blocks, 2); cdb[9] = in.u8() % 8 == 0 ? in.u8() : 0; }

  // The chain: readable = header + data-out, writable = response + data-in.
  const uint64_t readableLength = in.u8() % 8 == 0 ? in.u8() % kReqHeader : kReqHeader + in.u16() % 20000;
  const uint64_t writableLength = in.u8() % 8 == 0 ? in.u8() % kRespHeader : kRespHeader + in.u16() % 20000;
  const auto built = buildChain(in, header, kReqHeader, readableLength, writableLength, 4, kFill);
  const vhba::ChainSegments& chain = built->chain;

  uint32_t usedLength = 0;
  const auto result = vhba::tryExecuteScsiRequest(chain, table, usedLength);
  const std::vector<uint8_t> out = built->written();
  if (result == vhba::FastPathResult::kDeferred) {
    for (uint8_t b : out) FUZZ_CHECK(b == kFill);  // nothing written for JS to redo
    return;
  }
  FUZZ_CHECK(usedLength >= kRespHeader && usedLength <= writableLength);
  uint32_t senseLength, resid;
  std::memcpy(&senseLength, out.data(), 4);
  std::memcpy(&resid, out.data() + 4, 4);
  const uint8_t status = out[10];
  FUZZ_CHECK(out[11] == 0);                 // VIRTIO_SCSI_S_OK
  FUZZ_CHECK(status == 0 || status == 2);   // GOOD or CHECK CONDITION
  FUZZ_CHECK(resid <= std::max(writableLength - kRespHeader, readableLength - kReqHeader));
  if (status == 2) {
    FUZZ_CHECK(senseLength == 18 && out[12] == 0x70 && out[12 + 7] == 10);
    FUZZ_CHECK(usedLength == kRespHeader);
    return;
  }
  FUZZ_CHECK(senseLength == 0);
  const bool isRead = cdb[0] == 0x28 || cdb[0] == 0x88, isWrite = cdb[0] == 0x2a || cdb[0] == 0x8a;
  FUZZ_CHECK(isRead || isWrite || cdb[0] == 0x35 || cdb[0] == 0x91);
  if (!isRead && !isWrite) return;
  const uint64_t length = blocks * config.blockSize;
  FUZZ_CHECK(blocks > 0 && lba < config.blockCount && blocks <= config.blockCount - lba);
  if (isWrite) FUZZ_CHECK(!config.readOnly && readableLength - kReqHeader >= length);
  if (isRead) FUZZ_CHECK(usedLength == kRespHeader + length);
  // Compare with the file (only the part a memfd of 64 KiB holds).
  const uint64_t offset = lba * config.blockSize;
  if (offset >= (1 << 16)) return;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(length, (1 << 16) - offset));
  std::vector<uint8_t> file(n);
  const ssize_t got = ::pread(backingFile(), file.data(), n, static_cast<off_t>(offset));
  FUZZ_CHECK(got >= 0);
  for (size_t i = static_cast<size_t>(got); i < n; i++) file[i] = 0;  // past EOF reads as zeros
  const uint8_t* expect = isRead ? out.data() + kRespHeader : built->request.data() + kReqHeader;
  FUZZ_CHECK(std::memcmp(file.data(), expect, n) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  runOne(data, size);
  return 0;
}
