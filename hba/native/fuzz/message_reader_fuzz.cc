// Fuzz target for vhost-user framing (vhost-user.rst "Message format",
// message_reader.cc): the input is a list of actions on a real unix stream
// socketpair — send a chunk of bytes with 0..10 fds (SCM_RIGHTS), read, close
// the sending end. Checked: every complete message the reader returns equals
// the next message of a reference parse of the bytes sent (header, body);
// body sizes > 4096 and > 8 fds end in kError; after kEof/kError nothing more
// is read; and no fd is leaked (the process's fd count is the same after each
// input, once the fds handed out with messages are closed). No N-API.
#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "fuzz_input.h"
#include "message_reader.h"

namespace {

using vhba_fuzz::ByteReader;

int openFdCount() {
  DIR* d = ::opendir("/proc/self/fd");
  int n = 0;
  while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

/** Sends bytes with `fdCount` fresh fds attached; returns bytes sent (0 if the socket is full). */
size_t sendChunk(int sock, const uint8_t* bytes, size_t n, int fdCount) {
  iovec iov{const_cast<uint8_t*>(bytes), n};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
  std::vector<int> fds;
  for (int i = 0; i < fdCount; i++) fds.push_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (fdCount > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fdCount);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fdCount);
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fdCount);
  }
  ssize_t sent = ::sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  for (int fd : fds) ::close(fd);  // the kernel holds its own references while in flight
  return sent > 0 ? static_cast<size_t>(sent) : 0;
}

void runOne(const uint8_t* data, size_t size) {
  const int fdsBefore = openFdCount();
  {
    int pair[2];
    FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    int receiver = pair[0], sender = pair[1];
    ByteReader in(data, size);
    vhba::MessageReader reader;
    std::vector<uint8_t> sentBytes;  // the stream as sent, for the reference parse
    size_t modelPos = 0;             // where the next message starts in sentBytes
    bool finished = false;           // kEof or kError seen
    std::vector<uint8_t> chunk;

    auto readAll = [&]() {
      while (!finished) {
        vhba::FramedMessage message;
        std::string error;
        auto status = reader.read(receiver, message, error);
        if (status == vhba::MessageReader::Status::kWouldBlock) return;
        if (status != vhba::MessageReader::Status::kMessage) {
          finished = true;
          return;
        }
        // Reference parse: header then exactly `size` bytes.
        FUZZ_CHECK(sentBytes.size() - modelPos >= 12);
        uint32_t bodySize;
        std::memcpy(&bodySize, sentBytes.data() + modelPos + 8, 4);
        FUZZ_CHECK(bodySize <= vhba::MessageReader::kMaxBodySize);
        FUZZ_CHECK(std::memcmp(message.header, sentBytes.data() + modelPos, 12) == 0);
        FUZZ_CHECK(message.body.size() == bodySize);
        FUZZ_CHECK(sentBytes.size() - modelPos - 12 >= bodySize);
        FUZZ_CHECK(bodySize == 0 || std::memcmp(message.body.data(), sentBytes.data() + modelPos + 12, bodySize) == 0);
        FUZZ_CHECK(message.fds.size() <= vhba::MessageReader::kMaxFds);
        for (int fd : message.fds) {
          FUZZ_CHECK(::fcntl(fd, F_GETFD) >= 0);
          ::close(fd);
        }
        modelPos += 12 + bodySize;
      }
    };

    for (int step = 0; step < 64 && !in.empty() && sender >= 0; step++) {
      const uint8_t op = in.u8();
      if (op % 8 < 5) {  // send a chunk: a well-formed header with a chosen size, or raw bytes
        chunk.clear();
        if (op & 0x20) {
          uint32_t header[3] = {in.u32() % 48, in.u32() & 0xf, in.u8() % 4 == 0 ? in.u32() : in.u16() % 200};
          chunk.resize(12);
          std::memcpy(chunk.data(), header, 12);
          chunk.resize(12 + std::min<uint32_t>(header[2], 300), 0xa5);
          if (op & 0x40) chunk.resize(in.below(static_cast<uint32_t>(chunk.size()) + 1));  // short write
        } else {
          chunk.resize(in.u8() % 64);
          chunk.resize(in.bytes(chunk.data(), chunk.size()));
        }
        if (chunk.empty()) chunk.push_back(in.u8());
        const int fdCount = op & 0x80 ? in.u8() % 11 : 0;
        const size_t sent = sendChunk(sender, chunk.data(), chunk.size(), fdCount);
        sentBytes.insert(sentBytes.end(), chunk.begin(), chunk.begin() + sent);
      } else if (op % 8 < 7) {
        readAll();
      } else {  // the front-end goes away (maybe mid-message)
        ::close(sender);
        sender = -1;
      }
    }
    if (sender >= 0) ::close(sender);
    readAll();  // up to kEof or kError
    FUZZ_CHECK(finished);
    ::close(receiver);
  }  // reader destroyed: fds of a partial message closed
  FUZZ_CHECK(openFdCount() == fdsBefore);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  runOne(data, size);
  return 0;
}
