// Fuzz target for guest memory tables (vhost-user.rst SET_MEM_TABLE): region
// lists with arbitrary 64-bit addresses, sizes and offsets go through
// MemoryTable::validate, checked against a reference model (sizes > 0, no
// overflow, no overlap in guest-physical or user space, region count); small
// valid tables are then built over heap buffers and hammered with arbitrary
// translateGpa / translateUva ranges, each answer checked against the model
// (non-null exactly when the range lies inside one region, and then the right
// host address). No N-API.
#include <string>

#include "fuzz_input.h"
#include "guest_memory.h"

namespace {

using vhba_fuzz::ByteReader;
constexpr size_t kMaxRegions = 8;

/** Reference: [a, a+n) and [b, b+m) overlap (no overflow: callers checked). */
bool overlaps(uint64_t a, uint64_t n, uint64_t b, uint64_t m) { return a < b + m && b < a + n; }

bool modelValid(const std::vector<vhba::MemoryRegionDesc>& rs) {
  if (rs.empty() || rs.size() > kMaxRegions) return false;
  for (auto& r : rs) {
    if (r.size == 0 || r.size > SIZE_MAX / 2) return false;
    if (r.guestPhysAddr > UINT64_MAX - r.size || r.userAddr > UINT64_MAX - r.size ||
        r.mmapOffset > UINT64_MAX - r.size)
      return false;
  }
  for (size_t i = 0; i < rs.size(); i++)
    for (size_t j = i + 1; j < rs.size(); j++)
      if (overlaps(rs[i].guestPhysAddr, rs[i].size, rs[j].guestPhysAddr, rs[j].size) ||
          overlaps(rs[i].userAddr, rs[i].size, rs[j].userAddr, rs[j].size))
        return false;
  return true;
}

/** A 64-bit value biased towards edges: small, near 2^64, page multiples, anything. */
uint64_t edgy(ByteReader& in) {
  switch (in.u8() % 5) {
    case 0: return in.u8();
    case 1: return UINT64_MAX - in.u16();
    case 2: return uint64_t{in.u16()} << 12;
    case 3: return uint64_t{1} << (in.u8() % 64);
    default: return in.u64();
  }
}

void runOne(const uint8_t* data, size_t size) {
  ByteReader in(data, size);
  // Part 1: arbitrary region lists, validate() against the model.
  std::vector<vhba::MemoryRegionDesc> arbitrary(in.u8() % 10);
  for (auto& r : arbitrary) {
    r.guestPhysAddr = edgy(in);
    r.size = edgy(in);
    r.userAddr = edgy(in);
    r.mmapOffset = edgy(in);
  }
  const std::string problem = vhba::MemoryTable::validate(arbitrary, kMaxRegions);
  FUZZ_CHECK(problem.empty() == modelValid(arbitrary));

  // Part 2: a table of small regions over heap buffers; translations vs the model.
  std::vector<vhba::MemoryRegionDesc> regions(1 + in.u8() % 4);
  std::vector<std::unique_ptr<uint8_t[]>> buffers;
  std::vector<uint8_t*> hosts;
  for (auto& r : regions) {
    r.size = 1 + in.u16() % 8192;
    r.guestPhysAddr = in.u8() % 4 == 0 ? UINT64_MAX - r.size + 1 - in.u8() : uint64_t{in.u16()} << (in.u8() % 40);
    r.userAddr = in.u8() % 4 == 0 ? edgy(in) : 0x7f0000000000 + (uint64_t{in.u16()} << 8);
    buffers.emplace_back(new uint8_t[r.size]);
    hosts.push_back(buffers.back().get());
  }
  if (!modelValid(regions)) {
    bool threw = false;
    try {
      vhba::MemoryTable::fromHostMemory(regions, hosts, kMaxRegions);
    } catch (const std::exception&) {
      threw = true;
    }
    FUZZ_CHECK(threw);
    return;
  }
  auto table = vhba::MemoryTable::fromHostMemory(regions, hosts, kMaxRegions);
  FUZZ_CHECK(table->regionCount() == regions.size());
  while (!in.empty()) {
    const bool byUva = in.u8() & 1;
    const size_t ri = in.below(static_cast<uint32_t>(regions.size()));
    const auto& near = regions[ri];
    uint64_t start = byUva ? near.userAddr : near.guestPhysAddr;
    switch (in.u8() % 4) {
      case 0: start += in.u16() % (near.size + 32); break;
      case 1: start -= in.u8(); break;
      case 2: start += near.size - in.u8() % 8; break;
      default: start = edgy(in); break;
    }
    const uint64_t len = in.u8() % 4 == 0 ? edgy(in) : in.u16() % 9000;
    const uint8_t* got = byUva ? table->translateUva(start, len) : table->translateGpa(start, len);
    const uint8_t* expect = nullptr;
    if (len != 0 && start <= UINT64_MAX - len) {
      for (size_t i = 0; i < regions.size(); i++) {
        const uint64_t base = byUva ? regions[i].userAddr : regions[i].guestPhysAddr;
        if (start >= base && start - base <= regions[i].size && len <= regions[i].size - (start - base))
          expect = hosts[i] + (start - base);
      }
    }
    FUZZ_CHECK(got == expect);
    if (got != nullptr) {
      volatile uint8_t sink = got[0];  // ASan: the first and last byte are ours
      sink = got[len - 1];
      (void)sink;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  runOne(data, size);
  return 0;
}
