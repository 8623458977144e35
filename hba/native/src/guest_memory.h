// Guest memory as the vhost-user front-end shares it: a table of regions
// (vhost-user.rst, "Memory regions description" / VHOST_USER_SET_MEM_TABLE),
// each mmapped from the fd that came with the message. Every guest address the
// device touches goes through translateGpa / translateUva, which hand out a
// host pointer only for a range lying entirely inside ONE region.
//
// A table is immutable once built and is held by std::shared_ptr: a new
// SET_MEM_TABLE builds a new table, and chains still in flight keep the old
// mappings alive until they complete (the destructor unmaps).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace vhba {

/** One region as SET_MEM_TABLE describes it. `fd` is owned by the caller until
 * passed to MemoryTable::create, which always closes it. */
struct MemoryRegionDesc {
  uint64_t guestPhysAddr = 0;
  uint64_t size = 0;
  uint64_t userAddr = 0;
  uint64_t mmapOffset = 0;
  int fd = -1;
};

/** An immutable set of mapped guest memory regions. */
class MemoryTable {
 public:
  /** Validates the regions (size > 0; gpa+size, uva+size, offset+size do not
   * overflow; no two regions overlap in guest-physical or user address space;
   * at most maxRegions), maps each one MAP_SHARED and closes every fd, also on
   * failure. Throws std::runtime_error naming the bad region. */
  static std::shared_ptr<MemoryTable> create(const std::vector<MemoryRegionDesc>& regions,
                                             size_t maxRegions);

  /** Checks the regions without mapping anything; returns an empty string when
   * valid, otherwise the reason. Pure, for unit tests and fuzzing. */
  static std::string validate(const std::vector<MemoryRegionDesc>& regions, size_t maxRegions);

  /** Builds a table over memory the caller already owns (tests, fuzzing): the
   * host pointer of region i is hostBases[i]; nothing is unmapped. */
  static std::shared_ptr<MemoryTable> fromHostMemory(const std::vector<MemoryRegionDesc>& regions,
                                                     const std::vector<uint8_t*>& hostBases,
                                                     size_t maxRegions);

  ~MemoryTable();
  MemoryTable(const MemoryTable&) = delete;
  MemoryTable& operator=(const MemoryTable&) = delete;

  /** Host pointer for guest-physical [gpa, gpa+len), or nullptr if len == 0,
   * the range overflows, or it is not inside a single region. */
  uint8_t* translateGpa(uint64_t gpa, uint64_t len) const;

  /** Host pointer for front-end virtual [uva, uva+len) (vring addresses),
   * same rules as translateGpa. */
  uint8_t* translateUva(uint64_t uva, uint64_t len) const;

  /** Number of regions. */
  size_t regionCount() const { return regions_.size(); }

 private:
  struct Region {
    uint64_t guestPhysAddr;
    uint64_t userAddr;
    uint64_t size;
    uint8_t* host;     // host address of guestPhysAddr
    void* mapBase;     // what munmap needs (nullptr when not owned)
    size_t mapLength;
  };
  MemoryTable() = default;
  static uint8_t* lookup(const std::vector<Region>& regions, uint64_t Region::*start, uint64_t addr,
                         uint64_t len);

  std::vector<Region> regions_;
};

}  // namespace vhba
