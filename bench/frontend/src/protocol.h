// Request framing for the two device personalities the bench drives:
// virtio-scsi (virtio 1.2 §5.6.6) with SCSI CDBs (SBC-3 READ(16)/WRITE(16),
// READ CAPACITY(16); SPC-4 TEST UNIT READY), and virtio-blk (virtio 1.2 §5.2.6).
// Encoders write into guest memory; parsers copy the device's answer once.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace vb {
namespace scsi {

/** Default cdb_size / sense_size of the virtio-scsi config (§5.6.4). */
constexpr uint32_t kCdbSize = 32, kSenseSize = 96;
/** struct virtio_scsi_req_cmd, device-readable part: lun[8] id task_attr prio crn cdb[32]. */
constexpr uint32_t kReqSize = 8 + 8 + 3 + kCdbSize;  // 51
/** struct virtio_scsi_resp_cmd: sense_len residual status_qualifier status response sense[96]. */
constexpr uint32_t kRespSize = 4 + 4 + 2 + 1 + 1 + kSenseSize;  // 108

/** virtio_scsi response codes (§5.6.6.1). */
constexpr uint8_t kRespOk = 0;
/** SAM status GOOD / CHECK CONDITION. */
constexpr uint8_t kStatusGood = 0x00, kStatusCheckCondition = 0x02;
constexpr uint8_t kSenseKeyUnitAttention = 0x6;

/** LUN field (§5.6.6.1): byte 0 = 1, byte 1 = target, bytes 2-3 = LUN in
 * SAM flat-space addressing (0x40 | lun >> 8, lun & 0xff), as Linux's
 * virtio_scsi driver encodes every LUN. */
inline void encodeLun(uint8_t out[8], uint16_t target, uint16_t lun) {
  memset(out, 0, 8);
  out[0] = 1;
  out[1] = uint8_t(target);
  out[2] = uint8_t(0x40 | (lun >> 8));
  out[3] = uint8_t(lun & 0xff);
}

/** Writes a virtio_scsi_req_cmd header: SIMPLE task attribute, zero prio/crn. */
inline void encodeRequest(uint8_t* req, const uint8_t lun[8], uint64_t tag, const uint8_t* cdb, uint32_t cdbLen) {
  memset(req, 0, kReqSize);
  memcpy(req, lun, 8);
  memcpy(req + 8, &tag, 8);  // le64 (host is little-endian)
  memcpy(req + 19, cdb, cdbLen);
}

inline void putBe32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24); p[1] = uint8_t(v >> 16); p[2] = uint8_t(v >> 8); p[3] = uint8_t(v);
}
inline void putBe64(uint8_t* p, uint64_t v) {
  putBe32(p, uint32_t(v >> 32));
  putBe32(p + 4, uint32_t(v));
}
inline uint32_t getBe32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
inline uint64_t getBe64(const uint8_t* p) { return uint64_t(getBe32(p)) << 32 | getBe32(p + 4); }

/** READ(16) (0x88) or WRITE(16) (0x8A), SBC-3 §5.16/§5.40: 16-byte CDB. */
inline void cdbReadWrite16(uint8_t cdb[16], bool write, uint64_t lba, uint32_t blocks) {
  memset(cdb, 0, 16);
  cdb[0] = write ? 0x8a : 0x88;
  putBe64(cdb + 2, lba);
  putBe32(cdb + 10, blocks);
}

/** READ CAPACITY(16) (SERVICE ACTION IN 0x9E / 0x10), SBC-3 §5.16, allocation length 32. */
inline void cdbReadCapacity16(uint8_t cdb[16]) {
  memset(cdb, 0, 16);
  cdb[0] = 0x9e;
  cdb[1] = 0x10;
  putBe32(cdb + 10, 32);
}

/** TEST UNIT READY (SPC-4 §6.37): six zero bytes. */
inline void cdbTestUnitReady(uint8_t cdb[6]) { memset(cdb, 0, 6); }

/** The device's answer, copied out of guest memory. */
struct Response {
  uint32_t senseLen, residual;
  uint16_t statusQualifier;
  uint8_t status, response;
  uint8_t sense[kSenseSize];
};

inline Response parseResponse(const uint8_t* p) {
  Response r;
  memcpy(&r.senseLen, p, 4);
  memcpy(&r.residual, p + 4, 4);
  memcpy(&r.statusQualifier, p + 8, 2);
  r.status = p[10];
  r.response = p[11];
  memcpy(r.sense, p + 12, kSenseSize);
  return r;
}

/** Sense key of fixed (0x70/0x71) or descriptor (0x72/0x73) sense data; -1 if none. */
inline int senseKey(const Response& r) {
  if (r.senseLen < 3) return -1;
  uint8_t code = r.sense[0] & 0x7f;
  if (code == 0x70 || code == 0x71) return r.sense[2] & 0xf;
  if (code == 0x72 || code == 0x73) return r.sense[1] & 0xf;
  return -1;
}

/** Human-readable summary of a non-GOOD answer. */
std::string describe(const Response& r);

}  // namespace scsi

namespace blk {
/** struct virtio_blk_outhdr: le32 type, le32 ioprio, le64 sector (§5.2.6). */
constexpr uint32_t kHeaderSize = 16;
constexpr uint32_t kTypeIn = 0, kTypeOut = 1;
constexpr uint8_t kStatusOk = 0, kStatusIoErr = 1, kStatusUnsupp = 2;
/** Sector unit of virtio-blk, independent of the logical block size. */
constexpr uint64_t kSectorSize = 512;

inline void encodeHeader(uint8_t* p, uint32_t type, uint64_t sector) {
  uint32_t ioprio = 0;
  memcpy(p, &type, 4);
  memcpy(p + 4, &ioprio, 4);
  memcpy(p + 8, &sector, 8);
}
}  // namespace blk

}  // namespace vb
