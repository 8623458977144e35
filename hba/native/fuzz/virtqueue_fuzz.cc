// Fuzz target for the split-virtqueue walk (no N-API): the input becomes the
// guest's memory (rings, descriptors, indirect tables, avail index) and the
// device pops and completes until the ring is empty or a violation is found.
// Every guest-controlled value is hostile; sanitizers catch any read or write
// outside the two guest regions.
//
// libFuzzer:   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined \
//                -I../src virtqueue_fuzz.cc ../src/virtqueue.cc ../src/guest_memory.cc -o vq_fuzz
// Without it:  g++ -std=c++17 -g -O1 -fsanitize=address,undefined -DVHBA_FUZZ_STANDALONE \
//                -I../src virtqueue_fuzz.cc ../src/virtqueue.cc ../src/guest_memory.cc -o vq_fuzz
//              ./vq_fuzz 200000      (random inputs from a fixed seed)
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "virtqueue.h"

namespace {

constexpr size_t kRegionSize = 4096;  // two regions, contiguous in gpa and uva
constexpr uint64_t kGpaBase = 0x10000;
constexpr uint64_t kUvaBase = 0x7f0000000000;

/** Outcome counters, printed by the standalone driver to show coverage. */
long poppedChains = 0, violations = 0;

void runOne(const uint8_t* data, size_t size) {
  if (size < 4) return;
  // Byte 0: queue size exponent and features; bytes 1-2: base; rest: memory.
  const uint32_t queueSize = 1u << (data[0] % 6);  // 1..32
  const uint64_t features = (data[0] & 0x40 ? vhba::feature::kIndirectDesc : 0) |
                            (data[0] & 0x80 ? vhba::feature::kEventIdx : 0);
  const uint16_t base = static_cast<uint16_t>(data[1] | (data[2] << 8));
  alignas(64) static uint8_t memory[2 * kRegionSize];
  std::memset(memory, 0, sizeof memory);
  std::memcpy(memory, data + 3, std::min(size - 3, sizeof memory));

  std::vector<vhba::MemoryRegionDesc> regions(2);
  for (int i = 0; i < 2; i++) {
    regions[i].guestPhysAddr = kGpaBase + i * kRegionSize;
    regions[i].userAddr = kUvaBase + i * kRegionSize;
    regions[i].size = kRegionSize;
  }
  auto table = vhba::MemoryTable::fromHostMemory(regions, {memory, memory + kRegionSize}, 8);

  vhba::SplitVirtqueue vq(vhba::QueueLimits{32, 1 << 16});
  vq.setSize(queueSize);
  vq.setFeatures(features);
  vq.setBase(base);
  // Rings at fixed places in region 0: desc at 0, avail at 0x400, used at 0x800.
  try {
    vq.map(vhba::RingAddresses{kUvaBase, kUvaBase + 0x400, kUvaBase + 0x800}, table);
  } catch (const std::exception&) {
    std::abort();  // these addresses are always valid
  }
  std::vector<uint8_t> response(1 << 16, 0x5a);
  vhba::PoppedChain chain;
  std::string violation;
  for (int round = 0; round < 4 * 32; round++) {
    vhba::PopStatus status = vq.pop(chain, violation);
    if (status == vhba::PopStatus::kViolation) {
      violations++;
      return;
    }
    if (status == vhba::PopStatus::kEmpty) {
      if (!vq.enableNotificationAndCheck()) return;
      continue;
    }
    poppedChains++;
    const size_t n = std::min<uint64_t>(chain.writableLength, response.size());
    vq.complete(chain.head, response.data(), n);
    (void)vq.shouldNotify();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  runOne(data, size);
  return 0;
}

#ifdef VHBA_FUZZ_STANDALONE
// Random inputs biased towards plausible rings: small numbers in descriptor
// fields so chains, indirect tables and loops actually occur.
int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 10000;
  std::mt19937_64 rng(12345);
  std::vector<uint8_t> input(3 + 2 * kRegionSize);
  long chains = 0;
  for (long it = 0; it < iterations; it++) {
    for (auto& b : input) b = static_cast<uint8_t>(rng());
    // Descriptors: addr inside guest memory most of the time, small len,
    // flags in 0..7, next small.
    const uint32_t qs = 1u << (input[0] % 6);
    for (uint32_t i = 0; i < 32; i++) {
      uint8_t* d = input.data() + 3 + 16 * i;
      uint64_t addr = kGpaBase + (rng() % (2 * kRegionSize + 64)) - 32;
      uint32_t len = static_cast<uint32_t>(rng() % 5 == 0 ? rng() : rng() % 96);
      uint16_t flags = static_cast<uint16_t>(rng() % 8), next = static_cast<uint16_t>(rng() % (qs + 2));
      std::memcpy(d, &addr, 8);
      std::memcpy(d + 8, &len, 4);
      std::memcpy(d + 12, &flags, 2);
      std::memcpy(d + 14, &next, 2);
    }
    // Avail idx a little ahead of the base, entries small.
    uint16_t base = static_cast<uint16_t>(rng() % 4);
    std::memcpy(input.data() + 1, &base, 2);
    uint16_t availIdx = static_cast<uint16_t>(base + rng() % (qs + 3));
    std::memcpy(input.data() + 3 + 0x400 + 2, &availIdx, 2);
    for (uint32_t i = 0; i < qs; i++) {
      uint16_t head = static_cast<uint16_t>(rng() % (qs + 1));
      std::memcpy(input.data() + 3 + 0x400 + 4 + 2 * i, &head, 2);
    }
    runOne(input.data(), input.size());
    chains++;
  }
  std::printf("ran %ld inputs: %ld chains popped and completed, %ld violations\n", chains, poppedChains, violations);
  return 0;
}
#endif
