// The data pattern of verify mode: every 512-byte sector carries its own
// identity (seed, target index, byte offset) followed by pseudo-random words
// derived from it, so a sector read from the wrong place, a stale sector or a
// flipped bit are all detected and located.
#pragma once

#include <cstdint>
#include <cstring>

#include "common.h"

namespace vb {

constexpr uint64_t kPatternSector = 512;
constexpr uint64_t kPatternMagic = 0x48434e4542414856ull;  // "VHABENCH"

/** Fills one sector as written at `offset` of target `target`. */
inline void patternSector(uint64_t* words, uint64_t seed, uint32_t target, uint64_t offset) {
  words[0] = kPatternMagic;
  words[1] = seed;
  words[2] = target;
  words[3] = offset;
  Rng rng(seed ^ splitmix64(offset ^ (uint64_t(target) << 48)));
  for (int i = 4; i < 64; i++) words[i] = rng.next();
}

/** Fills `len` bytes (a multiple of 512) destined for byte `offset` of `target`. */
inline void fillPattern(uint8_t* buf, uint64_t len, uint64_t seed, uint32_t target, uint64_t offset) {
  for (uint64_t s = 0; s < len; s += kPatternSector) {
    uint64_t words[64];
    patternSector(words, seed, target, offset + s);
    memcpy(buf + s, words, kPatternSector);
  }
}

/** Returns the index of the first byte in `buf` that differs from the pattern, or -1. */
inline int64_t checkPattern(const uint8_t* buf, uint64_t len, uint64_t seed, uint32_t target, uint64_t offset) {
  for (uint64_t s = 0; s < len; s += kPatternSector) {
    uint64_t words[64];
    patternSector(words, seed, target, offset + s);
    if (memcmp(buf + s, words, kPatternSector) != 0) {
      const uint8_t* want = reinterpret_cast<const uint8_t*>(words);
      for (uint64_t i = 0; i < kPatternSector; i++)
        if (buf[s + i] != want[i]) return int64_t(s + i);
    }
  }
  return -1;
}

}  // namespace vb
