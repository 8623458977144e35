// Small POSIX helpers shared by the addon's core files: an owning fd wrapper,
// errno formatting, eventfd signal/drain. No N-API here.
#pragma once

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <unistd.h>

namespace vhba {

/** "what: strerror(errno)" for error messages. */
inline std::string errnoMessage(const std::string& what, int err = errno) {
  return what + ": " + std::strerror(err);
}

/** Throws std::runtime_error with errno text. */
[[noreturn]] inline void throwErrno(const std::string& what, int err = errno) {
  throw std::runtime_error(errnoMessage(what, err));
}

/** Owns one file descriptor; closes it on destruction. Move-only. */
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

/** Adds 1 to an eventfd counter; returns false on error (never throws). */
bool eventfdAdd(int fd);

/** Reads (and thereby resets) an eventfd counter; returns false if it was zero
 * (EAGAIN on a nonblocking eventfd) or on error. */
bool eventfdDrain(int fd);

/** Sets O_NONBLOCK on fd; throws on error. */
void setNonBlocking(int fd);

}  // namespace vhba
