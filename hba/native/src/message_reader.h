// Framing of vhost-user messages on a SOCK_STREAM unix socket (vhost-user.rst,
// "Message format"): a 12-byte header (u32 request, u32 flags, u32 size, little
// endian), then exactly `size` bytes of body; fds ride along as SCM_RIGHTS
// ancillary data on any of the recvmsg calls that read the message.
//
// Only framing limits are enforced here (body <= 4096 bytes, <= 8 fds); every
// semantic check belongs to the TypeScript codec. No N-API here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace vhba {

/** One complete message; the receiver owns `fds`. */
struct FramedMessage {
  uint8_t header[12];
  std::vector<uint8_t> body;
  std::vector<int> fds;
};

/** Incremental reader over a nonblocking socket: keeps a partial message
 * between calls, so short reads are reassembled. */
class MessageReader {
 public:
  static constexpr size_t kHeaderSize = 12;
  static constexpr size_t kMaxBodySize = 4096;
  static constexpr size_t kMaxFds = 8;

  enum class Status { kMessage, kWouldBlock, kEof, kError };

  MessageReader() = default;
  MessageReader(const MessageReader&) = delete;
  MessageReader& operator=(const MessageReader&) = delete;
  /** Closes fds of a partial message. */
  ~MessageReader();

  /** Reads until one message is complete (kMessage, `out` filled), the socket
   * has no more data (kWouldBlock), the peer closed (kEof; `error` says if it
   * was mid-message) or a framing/IO error (kError, `error` set). After kEof or
   * kError the reader must not be used again. */
  Status read(int fd, FramedMessage& out, std::string& error);

  /** Closes fds received for the partial message and forgets it. */
  void discard();

 private:
  uint8_t header_[kHeaderSize] = {};
  size_t received_ = 0;  // header + body bytes of the current message
  uint32_t bodySize_ = 0;
  std::vector<uint8_t> body_;
  std::vector<int> fds_;
};

}  // namespace vhba
