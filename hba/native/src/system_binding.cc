// memfd / eventfd / fallocate helpers (see index.ts).
#include "system_binding.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>  // H9: SO_PEERCRED
#include <unistd.h>

#include <string>
#include <vector>

#include "fd_util.h"
#include "napi_util.h"

namespace vhba {
namespace {

/** memfd(name, size): anonymous shared memory, mapped into an ArrayBuffer
 * whose finalizer unmaps it. The fd stays open for the caller. */
Napi::Value memfd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!arg(info, 0, "name").IsString()) throw Napi::TypeError::New(env, "name must be a string");
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  const uint64_t size = toUintMax(arg(info, 1, "size"), "size", 1ull << 40);
  if (size == 0) throw Napi::RangeError::New(env, "size must be > 0");
  UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC));
  if (!fd.valid()) throw Napi::Error::New(env, errnoMessage("memfd_create"));
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) < 0) throw Napi::Error::New(env, errnoMessage("ftruncate"));
  void* mem = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (mem == MAP_FAILED) throw Napi::Error::New(env, errnoMessage("mmap"));
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(
      env, mem, size, [](Napi::BasicEnv, void* data, size_t* length) {
        ::munmap(data, *length);
        delete length;
      },
      new size_t(size));
  Napi::Object result = Napi::Object::New(env);
  result.Set("fd", Napi::Number::New(env, fd.release()));
  result.Set("memory", buffer);
  return result;
}

Napi::Value eventfdCreate(const Napi::CallbackInfo& info) {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) throw Napi::Error::New(info.Env(), errnoMessage("eventfd"));
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value eventfdSignal(const Napi::CallbackInfo& info) {
  int fd = toFd(arg(info, 0, "fd"), "fd", false);
  uint64_t one = 1;
  ssize_t n;
  do n = ::write(fd, &one, sizeof one);
  while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof one) && !(n < 0 && errno == EAGAIN))
    throw Napi::Error::New(info.Env(), errnoMessage("eventfd write"));
  return info.Env().Undefined();
}

Napi::Value closeFd(const Napi::CallbackInfo& info) {
  int fd = toFd(arg(info, 0, "fd"), "fd", false);
  if (::close(fd) < 0 && errno != EINTR) throw Napi::Error::New(info.Env(), errnoMessage("close"));
  return info.Env().Undefined();
}

// H9 (issue 9, "Who may connect"): SO_PEERCRED of a unix socket the caller
// owns but did not accept through listenUnix (the control API's node:net
// server hands its accepted fds here before grpc-js sees the stream).
// Returns the credentials the kernel recorded at connect() (unix(7)).
Napi::Value peerCredentialsOfFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = toFd(arg(info, 0, "fd"), "fd", false);
  struct ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
    throw Napi::Error::New(env, errnoMessage("getsockopt(SO_PEERCRED)"));
  Napi::Object result = Napi::Object::New(env);
  result.Set("pid", Napi::Number::New(env, cred.pid));
  result.Set("uid", Napi::Number::New(env, cred.uid));
  result.Set("gid", Napi::Number::New(env, cred.gid));
  return result;
}

/** A blocking system call on the thread pool, settling a promise. */
class PromiseWork : public Napi::AsyncWorker {
 public:
  explicit PromiseWork(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }
  Napi::Promise::Deferred deferred_;
};

class EventfdWaitWork : public PromiseWork {
 public:
  EventfdWaitWork(Napi::Env env, int fd, int timeoutMs) : PromiseWork(env), fd_(fd), timeoutMs_(timeoutMs) {}
  void Execute() override {
    pollfd p{fd_, POLLIN, 0};
    for (;;) {
      int n = ::poll(&p, 1, timeoutMs_);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return SetError(errnoMessage("poll"));
      if (n == 0) return;  // timed out
      if (p.revents & POLLNVAL) return SetError("eventfdWait: bad fd");
      fired_ = eventfdDrain(fd_);
      return;
    }
  }
  void OnOK() override { deferred_.Resolve(Napi::Boolean::New(Env(), fired_)); }

 private:
  int fd_, timeoutMs_;
  bool fired_ = false;
};

Napi::Value eventfdWait(const Napi::CallbackInfo& info) {
  int fd = toFd(arg(info, 0, "fd"), "fd", false);
  int timeout = static_cast<int>(toUintMax(arg(info, 1, "timeoutMs"), "timeoutMs", 0x7fffffff));
  auto* work = new EventfdWaitWork(info.Env(), fd, timeout);
  Napi::Promise promise = work->promise();
  work->Queue();
  return promise;
}

class FallocateWork : public PromiseWork {
 public:
  FallocateWork(Napi::Env env, int fd, uint64_t offset, uint64_t length, bool zero)
      : PromiseWork(env), fd_(fd), offset_(offset), length_(length), zero_(zero) {}
  void Execute() override {
    if (length_ == 0) return;
    const int mode = zero_ ? FALLOC_FL_ZERO_RANGE : (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
    int rc;
    do rc = ::fallocate(fd_, mode, static_cast<off_t>(offset_), static_cast<off_t>(length_));
    while (rc < 0 && errno == EINTR);
    if (rc == 0) return;
    if (zero_ && errno == EOPNOTSUPP) return writeZeros();
    SetError(errnoMessage(zero_ ? "fallocate(ZERO_RANGE)" : "fallocate(PUNCH_HOLE)"));
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }

 private:
  /** Fallback where the filesystem lacks ZERO_RANGE. */
  void writeZeros() {
    std::vector<uint8_t> zeros(std::min<uint64_t>(length_, 1u << 20));
    uint64_t done = 0;
    while (done < length_) {
      size_t chunk = static_cast<size_t>(std::min<uint64_t>(zeros.size(), length_ - done));
      ssize_t n = ::pwrite(fd_, zeros.data(), chunk, static_cast<off_t>(offset_ + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return SetError(errnoMessage("pwrite of zeros"));
      done += static_cast<uint64_t>(n);
    }
  }
  int fd_;
  uint64_t offset_, length_;
  bool zero_;
};

template <bool Zero>
Napi::Value fallocateRange(const Napi::CallbackInfo& info) {
  int fd = toFd(arg(info, 0, "fd"), "fd", false);
  uint64_t offset = toUint64(arg(info, 1, "offset"), "offset");
  uint64_t length = toUint64(arg(info, 2, "length"), "length");
  if (offset > static_cast<uint64_t>(INT64_MAX) || length > static_cast<uint64_t>(INT64_MAX) - offset)
    throw Napi::RangeError::New(info.Env(), "offset + length overflows a file offset");
  auto* work = new FallocateWork(info.Env(), fd, offset, length, Zero);
  Napi::Promise promise = work->promise();
  work->Queue();
  return promise;
}

}  // namespace

void initSystemBinding(Napi::Env env, Napi::Object exports) {
  exports.Set("memfd", Napi::Function::New(env, memfd, "memfd"));
  exports.Set("eventfd", Napi::Function::New(env, eventfdCreate, "eventfd"));
  exports.Set("eventfdSignal", Napi::Function::New(env, eventfdSignal, "eventfdSignal"));
  exports.Set("eventfdWait", Napi::Function::New(env, eventfdWait, "eventfdWait"));
  exports.Set("closeFd", Napi::Function::New(env, closeFd, "closeFd"));
  exports.Set("peerCredentialsOfFd", Napi::Function::New(env, peerCredentialsOfFd, "peerCredentialsOfFd"));  // H9
  exports.Set("punchHole", Napi::Function::New(env, fallocateRange<false>, "punchHole"));
  exports.Set("zeroRange", Napi::Function::New(env, fallocateRange<true>, "zeroRange"));
}

}  // namespace vhba
