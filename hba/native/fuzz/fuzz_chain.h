// A virtio-scsi request chain for the fast-path fuzz targets: the request
// header (and data-out) and the response (and data-in) split over a few
// heap buffers the way a guest may scatter them (virtio 1.2 §2.7.5: any
// descriptor boundaries), the writable part pre-filled so a target can tell
// whether anything was written.
#pragma once

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "fuzz_input.h"
#include "virtqueue.h"

namespace vhba_fuzz {

/** A chain and the buffers behind it. */
struct FuzzChain {
  std::vector<std::unique_ptr<uint8_t[]>> owner;
  /** The readable bytes as built (header, then data-out). */
  std::vector<uint8_t> request;
  std::vector<vhba::GuestSegment> readable, writable;
  vhba::ChainSegments chain;

  /** Everything the device wrote into the writable part. */
  std::vector<uint8_t> written() const {
    std::vector<uint8_t> out(chain.writableLength + 1);  // +1: never empty
    vhba::copyFromSegments(writable, 0, out.data(), chain.writableLength);
    out.resize(chain.writableLength);
    return out;
  }
};

/** Splits `total` bytes into 1..maxPieces heap buffers. */
inline std::vector<vhba::GuestSegment> splitIntoSegments(ByteReader& in, uint64_t total, int maxPieces,
                                                         std::vector<std::unique_ptr<uint8_t[]>>& owner) {
  std::vector<vhba::GuestSegment> segments;
  const int pieces = 1 + in.u8() % maxPieces;
  uint64_t left = total;
  for (int i = 0; i < pieces && (left > 0 || segments.empty()); i++) {
    const uint32_t len = i == pieces - 1 ? static_cast<uint32_t>(left)
                                         : static_cast<uint32_t>(std::min<uint64_t>(left, in.u16() % 1200));
    owner.emplace_back(new uint8_t[len ? len : 1]);
    segments.push_back({owner.back().get(), len});
    left -= len;
  }
  return segments;
}

/** Builds a chain: `header` (headerSize bytes, cut short if readableLength
 * is smaller) then a data-out pattern; the writable part filled with `fill`. */
inline std::unique_ptr<FuzzChain> buildChain(ByteReader& in, const uint8_t* header, uint64_t headerSize,
                                             uint64_t readableLength, uint64_t writableLength, int maxPieces,
                                             uint8_t fill) {
  auto c = std::make_unique<FuzzChain>();
  c->readable = splitIntoSegments(in, readableLength, maxPieces, c->owner);
  c->writable = splitIntoSegments(in, writableLength, maxPieces, c->owner);
  std::vector<uint8_t>& request = c->request;
  request.assign(readableLength + 1, 0);  // +1: never empty (memcpy from a null pointer is UB)
  std::memcpy(request.data(), header, std::min(headerSize, readableLength));
  for (uint64_t i = headerSize; i < readableLength; i++) request[i] = static_cast<uint8_t>(i ^ 0x3c);
  vhba::copyToSegments(c->readable, 0, request.data(), readableLength);
  for (auto& s : c->writable) std::memset(s.host, fill, s.length);
  c->chain.readable = &c->readable;
  c->chain.readableLength = readableLength;
  c->chain.writable = &c->writable;
  c->chain.writableLength = writableLength;
  return c;
}

}  // namespace vhba_fuzz
