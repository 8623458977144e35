// memcpy-ceiling: this machine's memory-copy bandwidth for the block sizes the
// bench uses, the ceiling any storage data path that copies from page cache
// (tmpfs) into guest memory can reach. Copies blocks uniformly sized in
// [MIN,MAX] (4 KiB steps) from random 4 KiB-aligned offsets of a 256 MiB
// source into a rotating set of destination buffers, for a fixed time, on one
// thread (the front-end and back-end share the other core). Prints one JSON line.
//
//   memcpy-ceiling [--seconds S] [--bs MIN-MAX] [--source-mib N] [--dest-mib N]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/mman.h>
#include <time.h>

namespace {

uint64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

uint64_t xorshift(uint64_t& s) {
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  return s * 0x2545f4914f6cdd1dull;
}

uint8_t* mapPopulated(uint64_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) {
    perror("memcpy-ceiling: mmap");
    exit(2);
  }
  return static_cast<uint8_t*>(p);
}

[[noreturn]] void usageError(const char* msg) {
  fprintf(stderr, "memcpy-ceiling: %s\nusage: memcpy-ceiling [--seconds S] [--bs MIN-MAX (KiB)] [--source-mib N] [--dest-mib N]\n", msg);
  exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2;
  uint64_t bsMin = 4096, bsMax = 65536, sourceBytes = 256ull << 20, destBytes = 8ull << 20;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (i + 1 >= argc) usageError("missing value");
    std::string v = argv[++i];
    if (a == "--seconds") seconds = atof(v.c_str());
    else if (a == "--source-mib") sourceBytes = strtoull(v.c_str(), nullptr, 10) << 20;
    else if (a == "--dest-mib") destBytes = strtoull(v.c_str(), nullptr, 10) << 20;
    else if (a == "--bs") {
      auto dash = v.find('-');
      bsMin = strtoull(v.substr(0, dash).c_str(), nullptr, 10) << 10;
      bsMax = dash == std::string::npos ? bsMin : strtoull(v.substr(dash + 1).c_str(), nullptr, 10) << 10;
    } else usageError("unknown option");
  }
  if (!(seconds > 0) || bsMin == 0 || bsMin > bsMax || bsMin % 4096 || bsMax % 4096 || sourceBytes < bsMax || destBytes < bsMax)
    usageError("bad arguments (sizes: --bs in KiB, multiples of 4)");

  uint8_t* src = mapPopulated(sourceBytes);
  uint8_t* dst = mapPopulated(destBytes);
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  for (uint64_t i = 0; i < sourceBytes; i += 8) {
    uint64_t v = xorshift(seed);
    memcpy(src + i, &v, 8);
  }
  const uint64_t slots = destBytes / bsMax;
  const uint64_t steps = (bsMax - bsMin) / 4096 + 1;
  const uint64_t offsets = (sourceBytes - bsMax) / 4096 + 1;
  uint64_t copies = 0, bytes = 0, sink = 0, slot = 0;
  const uint64_t start = nowNs(), deadline = start + uint64_t(seconds * 1e9);
  uint64_t now = start;
  while (now < deadline) {
    for (int k = 0; k < 256; k++) {
      uint64_t r = xorshift(seed);
      uint64_t len = bsMin + (r % steps) * 4096;
      uint64_t off = ((r >> 20) % offsets) * 4096;
      uint8_t* d = dst + slot * bsMax;
      memcpy(d, src + off, len);
      sink += d[len - 1];
      slot = slot + 1 == slots ? 0 : slot + 1;
      bytes += len;
      copies++;
    }
    now = nowNs();
  }
  double secs = double(now - start) / 1e9;
  printf("{\"mbps\":%.1f,\"copies\":%llu,\"bytes\":%llu,\"seconds\":%.3f,\"bsMin\":%llu,\"bsMax\":%llu,\"sourceBytes\":%llu,\"destBytes\":%llu,\"sink\":%llu}\n",
         double(bytes) / secs / 1e6, (unsigned long long)copies, (unsigned long long)bytes, secs, (unsigned long long)bsMin,
         (unsigned long long)bsMax, (unsigned long long)sourceBytes, (unsigned long long)destBytes, (unsigned long long)(sink & 0xff));
  return 0;
}
