// memfd-backed guest memory; see guest_memory.h.
#include "guest_memory.h"

#include <cerrno>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

namespace vb {

GuestMemory::GuestMemory(uint64_t size) {
  const uint64_t twoMiB = 2ull << 20;
  if (size == 0 || size > (64ull << 30)) fail(format("guest memory size %llu out of range", (unsigned long long)size));
  size_ = (size + twoMiB - 1) & ~(twoMiB - 1);
  fd_ = memfd_create("vhost-bench-guest", MFD_CLOEXEC);
  if (fd_ < 0) fail(format("memfd_create: %s", strerror(errno)));
  if (ftruncate(fd_, off_t(size_)) != 0) fail(format("ftruncate guest memfd to %llu: %s", (unsigned long long)size_, strerror(errno)));
  void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, 0);
  if (p == MAP_FAILED) fail(format("mmap guest memfd: %s", strerror(errno)));
  base_ = static_cast<uint8_t*>(p);
}

GuestMemory::~GuestMemory() {
  if (base_) munmap(base_, size_);
  if (fd_ >= 0) close(fd_);
}

GuestMemory::Chunk GuestMemory::alloc(uint64_t size, uint64_t align) {
  if (align == 0 || (align & (align - 1)) != 0) fail("GuestMemory::alloc: alignment must be a power of two");
  uint64_t start = (used_ + align - 1) & ~(align - 1);
  if (start < used_ || size > size_ || start > size_ - size)
    fail(format("guest memory exhausted: need %llu more bytes at %llu of %llu", (unsigned long long)size,
                (unsigned long long)start, (unsigned long long)size_));
  used_ = start + size;
  return Chunk{base_ + start, kGuestPhysBase + start};
}

}  // namespace vb
