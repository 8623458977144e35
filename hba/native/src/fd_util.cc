// POSIX helpers: eventfd counters and fd flags.
#include "fd_util.h"

#include <cstdint>
#include <fcntl.h>

namespace vhba {

bool eventfdAdd(int fd) {
  uint64_t one = 1;
  for (;;) {
    ssize_t n = ::write(fd, &one, sizeof one);
    if (n == static_cast<ssize_t>(sizeof one)) return true;
    if (n < 0 && errno == EINTR) continue;
    // EAGAIN means the counter is at its maximum: the reader will wake anyway.
    return n < 0 && errno == EAGAIN;
  }
}

bool eventfdDrain(int fd) {
  uint64_t value = 0;
  for (;;) {
    ssize_t n = ::read(fd, &value, sizeof value);
    if (n == static_cast<ssize_t>(sizeof value)) return value != 0;
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

void setNonBlocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) throwErrno("fcntl(O_NONBLOCK)");
}

}  // namespace vhba
