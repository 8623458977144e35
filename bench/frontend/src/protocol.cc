// Descriptions of failed virtio-scsi answers; see protocol.h.
#include "protocol.h"

#include "common.h"

namespace vb {
namespace scsi {

namespace {
const char* responseName(uint8_t r) {
  // virtio 1.2 §5.6.6.1 response values.
  static const char* const names[] = {"OK", "OVERRUN", "ABORTED", "BAD_TARGET", "RESET", "BUSY",
                                      "TRANSPORT_FAILURE", "TARGET_FAILURE", "NEXUS_FAILURE", "FAILURE"};
  return r < sizeof names / sizeof names[0] ? names[r] : "?";
}
}  // namespace

std::string describe(const Response& r) {
  if (r.response == 0xff && r.status == 0xff) return "response never written by the device";
  if (r.response != kRespOk) return format("virtio-scsi response %u (%s)", r.response, responseName(r.response));
  std::string s = format("SCSI status 0x%02x", r.status);
  if (r.status == kStatusCheckCondition) {
    int key = senseKey(r);
    uint8_t code = r.sense[0] & 0x7f;
    uint8_t asc = 0, ascq = 0;
    if ((code == 0x70 || code == 0x71) && r.senseLen >= 14) asc = r.sense[12], ascq = r.sense[13];
    if ((code == 0x72 || code == 0x73) && r.senseLen >= 4) asc = r.sense[2], ascq = r.sense[3];
    s += format(" CHECK CONDITION sense key 0x%x asc 0x%02x ascq 0x%02x", key < 0 ? 0 : key, asc, ascq);
  }
  return s;
}

}  // namespace scsi
}  // namespace vb
