// "Guest" memory for the front-end: one memfd mapped MAP_SHARED, the way QEMU
// backs a VM with memory-backend-memfd,share=on. The back-end receives the fd
// in SET_MEM_TABLE and maps the same pages. Guest physical addresses start at
// kGuestPhysBase; the "user address" (QEMU's virtual address, used in
// SET_VRING_ADDR) is this process's own mapping address, as in QEMU.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vb {

class GuestMemory {
 public:
  static constexpr uint64_t kGuestPhysBase = 0x100000000ull;  // 4 GiB, like RAM above the PCI hole

  /** Creates and maps `size` bytes (rounded up to 2 MiB), zero-filled. */
  explicit GuestMemory(uint64_t size);
  ~GuestMemory();
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  /** A chunk handed out by alloc(): host pointer and guest physical address. */
  struct Chunk {
    uint8_t* host;
    uint64_t gpa;
  };

  /** Bump-allocates `size` bytes aligned to `align` (a power of two); throws when full. */
  Chunk alloc(uint64_t size, uint64_t align);

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  uint8_t* base() const { return base_; }
  /** This process's address of the mapping, sent as userspace_addr. */
  uint64_t userAddr() const { return uint64_t(uintptr_t(base_)); }
  /** Translates a guest physical address back to the front-end's pointer. */
  uint64_t userAddrOf(uint64_t gpa) const { return userAddr() + (gpa - kGuestPhysBase); }

 private:
  int fd_ = -1;
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint64_t used_ = 0;
};

}  // namespace vb
