// Fuzz target for the passthrough half of the native fast path
// (scsi_fastpath.cc executePassthrough; issue 8): a request chain built from
// the input (header + data-out over 1..6 readable heap buffers, response +
// data-in over 1..6 writable ones, arbitrary LUN addressing and CDB bytes,
// fuzzed opcode bitmaps and eligibility) against a passthrough LUN whose
// transport is a fake answering with fuzzed response code, status, sense of
// up to 255 bytes and residuals beyond the transfer.
// Checked: deferred chains leave the writable buffers untouched; the fake
// sees a CDB of 6..32 bytes whose length the group code gives, iovecs that
// add up to dataLength within the chain's buffers (ASan), at most
// maxSegments of them, never both directions; completed chains report
// usedLength within [108, writable capacity], sense_len <= 96, resid <= the
// transfer, data-in bytes the fake wrote, refused opcodes never reaching the
// device, the LUN released afterwards. No N-API, no libiscsi.
#include <memory>
#include <stdexcept>

#include "fuzz_chain.h"
#include "scsi_fastpath.h"

namespace {

using vhba_fuzz::ByteReader;
constexpr size_t kReqHeader = 51, kRespHeader = 108, kCdbOffset = 19;
constexpr uint8_t kFill = 0xee;

/** A device that answers from the fuzzer's bytes. */
class FakeTransport : public vhba::PassthroughTransport {
 public:
  FakeTransport(ByteReader& in, size_t maxSegments) : in_(in) { maxSegments_ = maxSegments; }
  void execute(const vhba::PassthroughCommand& c, vhba::PassthroughResult& r) override {
    calls++;
    FUZZ_CHECK(c.cdbLength >= 6 && c.cdbLength <= 32);
    FUZZ_CHECK(c.cdbLength == vhba::cdbLengthOf(c.cdb, 32));
    FUZZ_CHECK(c.iovCount <= maxSegments_);
    uint64_t sum = 0;
    for (size_t i = 0; i < c.iovCount; i++) sum += c.iov[i].iov_len;
    FUZZ_CHECK(sum == c.dataLength);
    FUZZ_CHECK((c.direction == vhba::DataDirection::kNone) == (c.dataLength == 0));
    if (c.direction == vhba::DataDirection::kToDevice)  // every byte readable (ASan checks the range)
      for (size_t i = 0; i < c.iovCount; i++) checksum += static_cast<const uint8_t*>(c.iov[i].iov_base)[c.iov[i].iov_len - 1];
    if (c.direction == vhba::DataDirection::kFromDevice)
      for (size_t i = 0; i < c.iovCount; i++) std::memset(c.iov[i].iov_base, 0x5a, c.iov[i].iov_len);
    r = vhba::PassthroughResult{};
    r.response = in_.u8() % 4 == 0 ? in_.u8() % 10 : 0;
    r.status = in_.u8();
    r.senseLength = std::min<uint32_t>(in_.u8(), vhba::kPassthroughSenseMax);  // transports cap it
    for (uint32_t i = 0; i < r.senseLength; i++) r.sense[i] = in_.u8();
    r.residual = in_.u8() % 2 ? in_.u32() : in_.u8();
    if (r.response != 0) r.error = "fake failure";
  }
  int calls = 0;
  uint8_t checksum = 0;

 private:
  ByteReader& in_;
};

void runOne(const uint8_t* data, size_t size) {
  ByteReader in(data, size);
  const uint8_t flags = in.u8();
  auto transport = std::make_shared<FakeTransport>(in, 1 + in.u8() % 8);
  vhba::NativePassthroughLunConfig config;
  config.transport = transport;
  for (auto& b : config.refusedOpcodes) b = flags & 1 ? in.u8() : 0;
  for (auto& b : config.deferredOpcodes) b = flags & 2 ? in.u8() : 0;
  config.timeoutMs = 1 + in.u8();
  config.eligible = !(flags & 4 && flags & 8);
  vhba::LunTable table;
  table.add(0, 1, config);
  // However the chain ends, the LUN is not left held (the prepare step hands
  // its hold to the finish step, or lets go): waitIdle returns at once.
  struct IdleCheck {
    vhba::LunTable& table;
    ~IdleCheck() { table.remove(0, 1)->waitIdle(); }
  } idleCheck{table};

  uint8_t header[kReqHeader] = {};
  header[0] = flags & 0x10 ? in.u8() : 1;
  header[1] = flags & 0x20 ? in.u8() % 2 : 0;
  header[2] = 0x40;
  header[3] = flags & 0x40 ? in.u8() % 3 : 1;
  in.bytes(header + kCdbOffset, 32);  // any CDB, any opcode

  const uint64_t readableLength = in.u8() % 8 == 0 ? in.u8() % kReqHeader : kReqHeader + (in.u8() % 2 ? 0 : in.u16() % 9000);
  const uint64_t writableLength = in.u8() % 8 == 0 ? in.u8() % kRespHeader : kRespHeader + (in.u8() % 2 ? 0 : in.u16() % 9000);
  const auto built = buildChain(in, header, kReqHeader, readableLength, writableLength, 6, kFill);
  const vhba::ChainSegments& chain = built->chain;

  uint32_t usedLength = 0;
  const auto result = vhba::tryExecuteScsiRequest(chain, table, usedLength);
  const std::vector<uint8_t> out = built->written();
  const uint8_t opcode = header[kCdbOffset];
  const bool refused = (config.refusedOpcodes[opcode >> 3] >> (opcode & 7)) & 1;
  if (result == vhba::FastPathResult::kDeferred) {
    FUZZ_CHECK(transport->calls == 0);
    for (uint8_t b : out) FUZZ_CHECK(b == kFill);
    return;
  }
  FUZZ_CHECK(readableLength >= kReqHeader && writableLength >= kRespHeader);
  FUZZ_CHECK(usedLength >= kRespHeader && usedLength <= writableLength);
  uint32_t senseLength, resid;
  std::memcpy(&senseLength, out.data(), 4);
  std::memcpy(&resid, out.data() + 4, 4);
  FUZZ_CHECK(senseLength <= 96);
  const uint64_t transfer = std::max(readableLength - kReqHeader, writableLength - kRespHeader);
  FUZZ_CHECK(resid <= transfer);
  if (refused) {
    FUZZ_CHECK(transport->calls == 0);
    FUZZ_CHECK(out[10] == 2 && out[11] == 0 && senseLength == 18 && out[12 + 12] == 0x20);
    return;
  }
  FUZZ_CHECK(!(readableLength > kReqHeader && writableLength > kRespHeader));  // bidirectional is deferred
  FUZZ_CHECK(transport->calls == 1);
  if (writableLength > kRespHeader) {
    FUZZ_CHECK(usedLength == kRespHeader + (writableLength - kRespHeader - resid));
    for (uint64_t i = kRespHeader; i < usedLength; i++) FUZZ_CHECK(out[i] == 0x5a);
  } else {
    FUZZ_CHECK(usedLength == kRespHeader);
  }
  if (out[11] != 0) FUZZ_CHECK(senseLength == 0 && out[10] == 0 && resid == transfer);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  runOne(data, size);
  return 0;
}
