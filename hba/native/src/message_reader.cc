// vhost-user message framing over recvmsg with SCM_RIGHTS.
#include "message_reader.h"

#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <unistd.h>

#include "fd_util.h"

namespace vhba {

MessageReader::~MessageReader() { discard(); }

void MessageReader::discard() {
  for (int fd : fds_) ::close(fd);
  fds_.clear();
  body_.clear();
  received_ = 0;
  bodySize_ = 0;
}

MessageReader::Status MessageReader::read(int fd, FramedMessage& out, std::string& error) {
  for (;;) {
    if (received_ >= kHeaderSize && received_ == kHeaderSize + bodySize_) {
      std::memcpy(out.header, header_, kHeaderSize);
      out.body = std::move(body_);
      out.fds = std::move(fds_);
      body_ = std::vector<uint8_t>();
      fds_ = std::vector<int>();
      received_ = 0;
      bodySize_ = 0;
      return Status::kMessage;
    }
    // Read exactly what the current message still needs, so fds sent with the
    // next message are not taken early.
    iovec iov;
    if (received_ < kHeaderSize) {
      iov.iov_base = header_ + received_;
      iov.iov_len = kHeaderSize - received_;
    } else {
      iov.iov_base = body_.data() + (received_ - kHeaderSize);
      iov.iov_len = kHeaderSize + bodySize_ - received_;
    }
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::kWouldBlock;
      error = errnoMessage("recvmsg");
      discard();
      return Status::kError;
    }
    bool tooManyFds = (msg.msg_flags & MSG_CTRUNC) != 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; i++) {
        int received;
        std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds_.push_back(received);
      }
    }
    if (tooManyFds || fds_.size() > kMaxFds) {
      error = "more than " + std::to_string(kMaxFds) + " fds in one message";
      discard();
      return Status::kError;
    }
    if (n == 0) {
      if (received_ != 0) error = "connection closed in the middle of a message";
      discard();
      return Status::kEof;
    }
    received_ += static_cast<size_t>(n);
    if (received_ == kHeaderSize) {
      uint32_t size;
      std::memcpy(&size, header_ + 8, sizeof size);  // little-endian host (static_assert in virtqueue.h)
      if (size > kMaxBodySize) {
        error = "message body of " + std::to_string(size) + " bytes exceeds " + std::to_string(kMaxBodySize);
        discard();
        return Status::kError;
      }
      bodySize_ = size;
      body_.resize(size);
    }
  }
}

}  // namespace vhba
