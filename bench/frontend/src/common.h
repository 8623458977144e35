// Small shared helpers for the vhost-user bench front-end: errors with
// formatted messages, the monotonic clock, and a fast deterministic PRNG.
#pragma once

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <time.h>

namespace vb {

/** A fatal error with a message that says what failed; main() prints it. */
struct Fatal : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/** printf-style formatting into a std::string. */
inline std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline std::string format(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return std::string(buf);
}

/** Throws Fatal with a printf-style message. */
[[noreturn]] inline void fail(const std::string& msg) { throw Fatal(msg); }

/** CLOCK_MONOTONIC in nanoseconds. */
inline uint64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

/** splitmix64: one step of a 64-bit mixer; also used as a hash. */
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/** xorshift64*: fast PRNG for offsets and block sizes. */
struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(splitmix64(seed) | 1) {}
  uint64_t next() {
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545f4914f6cdd1dull;
  }
  /** Uniform in [0, n) for n > 0 (multiply-shift; bias is negligible for n << 2^64). */
  uint64_t below(uint64_t n) { return uint64_t((unsigned __int128)next() * n >> 64); }
};

}  // namespace vb
