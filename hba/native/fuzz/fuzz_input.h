// Shared pieces of the native fuzz targets: a reader that turns the fuzzer's
// bytes into structured actions (running out of bytes yields zeros, so every
// input decodes), a check macro that aborts so libFuzzer records the input,
// and a standalone main for builds without libFuzzer (gcc + sanitizers):
// replays the files given as arguments, or runs N random inputs.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

namespace vhba_fuzz {

/** Consumes the input front to back; past the end every read yields 0. */
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  size_t remaining() const { return pos_ < size_ ? size_ - pos_ : 0; }
  uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t u16() { return static_cast<uint16_t>(u8() | (u8() << 8)); }
  uint32_t u32() { return u16() | (static_cast<uint32_t>(u16()) << 16); }
  uint64_t u64() { return u32() | (static_cast<uint64_t>(u32()) << 32); }
  /** A value in [0, n) (n > 0). */
  uint32_t below(uint32_t n) { return n <= 256 ? u8() % n : u32() % n; }
  /** Copies up to n bytes (fewer at the end of the input); returns how many. */
  size_t bytes(uint8_t* out, size_t n) {
    size_t k = n < remaining() ? n : remaining();
    if (k) std::memcpy(out, data_ + pos_, k);
    pos_ += k;
    return k;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace vhba_fuzz

/** A property the target promises; on failure abort so the fuzzer keeps the input. */
#define FUZZ_CHECK(cond)                                                              \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

#ifdef VHBA_FUZZ_STANDALONE
// Without libFuzzer: `target FILE...` replays files; `target N [maxlen]` runs
// N random inputs from a fixed seed.
int main(int argc, char** argv) {
  if (argc > 1 && (argv[1][0] < '0' || argv[1][0] > '9')) {
    for (int i = 1; i < argc; i++) {
      std::ifstream in(argv[i], std::ios::binary);
      std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
      std::printf("replayed %s (%zu bytes)\n", argv[i], bytes.size());
    }
    return 0;
  }
  const long iterations = argc > 1 ? std::atol(argv[1]) : 10000;
  const size_t maxLen = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 512;
  std::mt19937_64 rng(12345);
  std::vector<uint8_t> input;
  for (long it = 0; it < iterations; it++) {
    input.resize(rng() % (maxLen + 1));
    for (auto& b : input) b = static_cast<uint8_t>(rng() % 4 == 0 ? rng() % 8 : rng());
    LLVMFuzzerTestOneInput(input.data(), input.size());
  }
  std::printf("ran %ld random inputs\n", iterations);
  return 0;
}
#endif
