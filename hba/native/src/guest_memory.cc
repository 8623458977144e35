// Guest memory table: validation, mmap, checked translation (vhost-user.rst,
// VHOST_USER_SET_MEM_TABLE).
#include "guest_memory.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <sys/mman.h>
#include <unistd.h>

#include "fd_util.h"

namespace vhba {
namespace {

/** Closes every fd in the list (ownership of all of them passed to us). */
void closeAll(const std::vector<MemoryRegionDesc>& regions) {
  for (const auto& r : regions)
    if (r.fd >= 0) ::close(r.fd);
}

/** True when [a, a+alen) and [b, b+blen) intersect; lengths > 0, no overflow. */
bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return a < b + blen && b < a + alen;
}

}  // namespace

std::string MemoryTable::validate(const std::vector<MemoryRegionDesc>& regions, size_t maxRegions) {
  if (regions.empty()) return "memory table has no regions";
  if (regions.size() > maxRegions)
    return "memory table has " + std::to_string(regions.size()) + " regions, at most " +
           std::to_string(maxRegions) + " allowed";
  for (size_t i = 0; i < regions.size(); i++) {
    const auto& r = regions[i];
    const std::string name = "memory region " + std::to_string(i);
    if (r.size == 0) return name + ": size is 0";
    if (r.guestPhysAddr > UINT64_MAX - r.size) return name + ": guest address + size overflows";
    if (r.userAddr > UINT64_MAX - r.size) return name + ": user address + size overflows";
    if (r.mmapOffset > UINT64_MAX - r.size) return name + ": mmap offset + size overflows";
    if (r.size > static_cast<uint64_t>(SIZE_MAX) / 2) return name + ": size too large to map";
    for (size_t j = 0; j < i; j++) {
      const auto& o = regions[j];
      if (overlaps(r.guestPhysAddr, r.size, o.guestPhysAddr, o.size))
        return name + " overlaps region " + std::to_string(j) + " in guest physical space";
      if (overlaps(r.userAddr, r.size, o.userAddr, o.size))
        return name + " overlaps region " + std::to_string(j) + " in user address space";
    }
  }
  return "";
}

std::shared_ptr<MemoryTable> MemoryTable::create(const std::vector<MemoryRegionDesc>& regions,
                                                 size_t maxRegions) {
  std::string problem = validate(regions, maxRegions);
  for (size_t i = 0; problem.empty() && i < regions.size(); i++)
    if (regions[i].fd < 0) problem = "memory region " + std::to_string(i) + " has no fd";
  if (!problem.empty()) {
    closeAll(regions);
    throw std::runtime_error(problem);
  }
  std::shared_ptr<MemoryTable> table(new MemoryTable());
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  for (size_t i = 0; i < regions.size(); i++) {
    const auto& r = regions[i];
    // mmap needs a page-aligned file offset: map from the page holding
    // mmapOffset and step forward inside the mapping.
    const uint64_t alignedOffset = r.mmapOffset & ~(page - 1);
    const uint64_t lead = r.mmapOffset - alignedOffset;
    const size_t length = static_cast<size_t>(r.size + lead);
    void* base = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, r.fd,
                        static_cast<off_t>(alignedOffset));
    if (base == MAP_FAILED) {
      int err = errno;
      closeAll(regions);  // table's destructor unmaps what was mapped so far
      throwErrno("mmap of memory region " + std::to_string(i), err);
    }
    table->regions_.push_back(Region{r.guestPhysAddr, r.userAddr, r.size,
                                     static_cast<uint8_t*>(base) + lead, base, length});
  }
  closeAll(regions);
  return table;
}

std::shared_ptr<MemoryTable> MemoryTable::fromHostMemory(const std::vector<MemoryRegionDesc>& regions,
                                                         const std::vector<uint8_t*>& hostBases,
                                                         size_t maxRegions) {
  std::string problem = validate(regions, maxRegions);
  if (problem.empty() && hostBases.size() != regions.size()) problem = "one host base per region needed";
  if (!problem.empty()) throw std::runtime_error(problem);
  std::shared_ptr<MemoryTable> table(new MemoryTable());
  for (size_t i = 0; i < regions.size(); i++)
    table->regions_.push_back(
        Region{regions[i].guestPhysAddr, regions[i].userAddr, regions[i].size, hostBases[i], nullptr, 0});
  return table;
}

MemoryTable::~MemoryTable() {
  for (const auto& r : regions_)
    if (r.mapBase != nullptr) ::munmap(r.mapBase, r.mapLength);
}

uint8_t* MemoryTable::lookup(const std::vector<Region>& regions, uint64_t Region::*start, uint64_t addr,
                             uint64_t len) {
  if (len == 0 || addr > UINT64_MAX - len) return nullptr;
  // A handful of regions (vhost-user allows at most a few dozen): linear scan.
  for (const auto& r : regions) {
    const uint64_t begin = r.*start;
    // Subtraction form: addr - begin and len never overflow against r.size.
    if (addr >= begin && addr - begin < r.size && len <= r.size - (addr - begin))
      return r.host + (addr - begin);
  }
  return nullptr;
}

uint8_t* MemoryTable::translateGpa(uint64_t gpa, uint64_t len) const {
  return lookup(regions_, &Region::guestPhysAddr, gpa, len);
}

uint8_t* MemoryTable::translateUva(uint64_t uva, uint64_t len) const {
  return lookup(regions_, &Region::userAddr, uva, len);
}

}  // namespace vhba
