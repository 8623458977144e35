// UnixConnection / UnixListener over uv_poll (see index.ts for the contract).
#include "unix_socket.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <uv.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "addon_data.h"
#include "fd_util.h"
#include "message_reader.h"
#include "napi_util.h"

namespace vhba {
namespace {

/** Messages handled per readiness callback before yielding to the loop, so a
 * flooding peer cannot starve other connections. */
constexpr int kMessagesPerWakeup = 64;

uv_loop_t* loopOf(Napi::Env env) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr)
    throw Napi::Error::New(env, "napi_get_uv_event_loop failed");
  return loop;
}

/** Closes a poll handle and frees it once libuv is done with it. */
void closePollHandle(uv_poll_t* handle) {
  uv_poll_stop(handle);
  uv_close(reinterpret_cast<uv_handle_t*>(handle), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
}

sockaddr_un unixAddress(Napi::Env env, const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path)
    throw Napi::Error::New(env, "unix socket path must be 1.." + std::to_string(sizeof addr.sun_path - 1) +
                                    " bytes: " + path);
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

class UnixConnectionWrap : public Napi::ObjectWrap<UnixConnectionWrap> {
 public:
  static void define(Napi::Env env) {
    Napi::Function cls = DefineClass(env, "UnixConnection",
                                     {InstanceMethod("start", &UnixConnectionWrap::start),
                                      InstanceMethod("send", &UnixConnectionWrap::send),
                                      InstanceMethod("peerCredentials", &UnixConnectionWrap::peerCredentials),
                                      InstanceMethod("close", &UnixConnectionWrap::close)});
    addonData(env).unixConnection = Napi::Persistent(cls);
  }

  /** Wraps a connected socket fd (ownership passes to the object). */
  static Napi::Object create(Napi::Env env, int fd) {
    UniqueFd owned(fd);
    Napi::Object obj = addonData(env).unixConnection.New({});
    UnixConnectionWrap* self = Unwrap(obj);
    try {
      setNonBlocking(owned.get());
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
    self->fd_ = std::move(owned);
    return obj;
  }

  explicit UnixConnectionWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<UnixConnectionWrap>(info) {}

  ~UnixConnectionWrap() override {
    // Only reached when JS dropped the object: either never started, or
    // already closed (a started connection holds a reference to itself).
    if (poll_ != nullptr) closePollHandle(poll_);
  }

 private:
  Napi::Value start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!arg(info, 0, "onMessage").IsFunction() || !arg(info, 1, "onClose").IsFunction())
      throw Napi::TypeError::New(env, "start(onMessage, onClose) needs two functions");
    if (closed_) throw Napi::Error::New(env, "connection is closed");
    if (started_) throw Napi::Error::New(env, "connection already started");
    poll_ = new uv_poll_t;
    int rc = uv_poll_init(loopOf(env), poll_, fd_.get());
    if (rc != 0) {
      delete poll_;
      poll_ = nullptr;
      throw Napi::Error::New(env, std::string("uv_poll_init: ") + uv_strerror(rc));
    }
    poll_->data = this;
    rc = uv_poll_start(poll_, UV_READABLE | UV_DISCONNECT, &UnixConnectionWrap::onPoll);
    if (rc != 0) {
      closePollHandle(poll_);
      poll_ = nullptr;
      throw Napi::Error::New(env, std::string("uv_poll_start: ") + uv_strerror(rc));
    }
    onMessage_ = Napi::Persistent(info[0].As<Napi::Function>());
    onClose_ = Napi::Persistent(info[1].As<Napi::Function>());
    asyncContext_ = std::make_unique<Napi::AsyncContext>(env, "vhba:UnixConnection");
    started_ = true;
    Ref();  // alive while started and open
    return env.Undefined();
  }

  static void onPoll(uv_poll_t* handle, int status, int events) {
    auto* self = static_cast<UnixConnectionWrap*>(handle->data);
    if (self == nullptr) return;
    if (status < 0) {
      self->shutdown(std::string("poll error: ") + uv_strerror(status));
      return;
    }
    self->readMessages();
  }

  void readMessages() {
    Napi::Env env = Env();
    for (int i = 0; i < kMessagesPerWakeup && !closed_; i++) {
      FramedMessage msg;
      std::string error;
      switch (reader_.read(fd_.get(), msg, error)) {
        case MessageReader::Status::kWouldBlock:
          return;
        case MessageReader::Status::kEof:
          shutdown(error.empty() ? std::nullopt : std::optional<std::string>(error));
          return;
        case MessageReader::Status::kError:
          shutdown(error);
          return;
        case MessageReader::Status::kMessage:
          try {
            deliver(env, msg);
          } catch (const Napi::Error& e) {
            // Building the message object failed (no JS frame to throw into).
            for (int fd : msg.fds) ::close(fd);
            napi_fatal_exception(env, e.Value());
          }
          break;
      }
    }
  }

  void deliver(Napi::Env env, FramedMessage& msg) {
    Napi::HandleScope scope(env);
    Napi::Object obj = Napi::Object::New(env);
    obj.Set("header", Napi::Buffer<uint8_t>::Copy(env, msg.header, sizeof msg.header));
    obj.Set("body", Napi::Buffer<uint8_t>::Copy(env, msg.body.data(), msg.body.size()));
    Napi::Array fds = Napi::Array::New(env, msg.fds.size());
    for (size_t i = 0; i < msg.fds.size(); i++) fds.Set(static_cast<uint32_t>(i), Napi::Number::New(env, msg.fds[i]));
    obj.Set("fds", fds);
    msg.fds.clear();  // now owned by the receiver
    callFromLoop(env, onMessage_, *asyncContext_, {obj});
  }

  /** Closes the socket and arranges onClose(reason) once libuv released the
   * poll handle (so onClose never runs inside close()). */
  void shutdown(std::optional<std::string> reason) {
    if (closed_) return;
    closed_ = true;
    reader_.discard();
    if (poll_ == nullptr) {
      fd_.reset();
      return;
    }
    uv_poll_stop(poll_);
    fd_.reset();
    closeReason_ = std::move(reason);
    poll_->data = this;
    uv_poll_t* handle = poll_;
    poll_ = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle), [](uv_handle_t* h) {
      auto* self = static_cast<UnixConnectionWrap*>(h->data);
      delete reinterpret_cast<uv_poll_t*>(h);
      self->notifyClosed();
    });
  }

  void notifyClosed() {
    Napi::Env env = Env();
    {
      Napi::HandleScope scope(env);
      Napi::Value reason =
          closeReason_ ? Napi::Value(Napi::String::New(env, *closeReason_)) : Napi::Value(env.Null());
      callFromLoop(env, onClose_, *asyncContext_, {reason});
    }
    onMessage_.Reset();
    onClose_.Reset();
    Unref();
  }

  Napi::Value send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!arg(info, 0, "data").IsBuffer()) throw Napi::TypeError::New(env, "data must be a Buffer");
    auto data = info[0].As<Napi::Buffer<uint8_t>>();
    std::vector<int> fds;
    if (info.Length() > 1 && !info[1].IsUndefined()) {
      if (!info[1].IsArray()) throw Napi::TypeError::New(env, "fds must be an array");
      auto list = info[1].As<Napi::Array>();
      if (list.Length() > MessageReader::kMaxFds) throw Napi::RangeError::New(env, "at most 8 fds per message");
      for (uint32_t i = 0; i < list.Length(); i++) fds.push_back(toFd(list.Get(i), "fd", false));
    }
    if (closed_ || !fd_.valid()) throw Napi::Error::New(env, "send on a closed connection");
    const uint8_t* bytes = data.Data();
    size_t remaining = data.Length();
    bool fdsSent = fds.empty();
    // Loop over partial writes; ancillary data goes with the first chunk.
    while (remaining > 0 || !fdsSent) {
      iovec iov{const_cast<uint8_t*>(bytes), remaining};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * MessageReader::kMaxFds)];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      if (!fdsSent) {
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
      }
      if (remaining == 0) throw Napi::Error::New(env, "fds need at least one byte of data");
      ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          pollfd p{fd_.get(), POLLOUT, 0};
          if (::poll(&p, 1, 5000) <= 0) throw Napi::Error::New(env, "send timed out: peer not reading");
          continue;
        }
        throw Napi::Error::New(env, errnoMessage("sendmsg"));
      }
      fdsSent = true;
      bytes += n;
      remaining -= static_cast<size_t>(n);
    }
    return env.Undefined();
  }

  Napi::Value peerCredentials(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!fd_.valid()) throw Napi::Error::New(env, "connection is closed");
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd_.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
      throw Napi::Error::New(env, errnoMessage("getsockopt(SO_PEERCRED)"));
    Napi::Object obj = Napi::Object::New(env);
    obj.Set("pid", Napi::Number::New(env, cred.pid));
    obj.Set("uid", Napi::Number::New(env, cred.uid));
    obj.Set("gid", Napi::Number::New(env, cred.gid));
    return obj;
  }

  Napi::Value close(const Napi::CallbackInfo& info) {
    shutdown(std::nullopt);
    return info.Env().Undefined();
  }

  UniqueFd fd_;
  uv_poll_t* poll_ = nullptr;
  MessageReader reader_;
  Napi::FunctionReference onMessage_, onClose_;
  std::unique_ptr<Napi::AsyncContext> asyncContext_;
  std::optional<std::string> closeReason_;
  bool started_ = false;
  bool closed_ = false;
};


class UnixListenerWrap : public Napi::ObjectWrap<UnixListenerWrap> {
 public:
  static void define(Napi::Env env) {
    Napi::Function cls =
        DefineClass(env, "UnixListener", {InstanceMethod("close", &UnixListenerWrap::close)});
    addonData(env).unixListener = Napi::Persistent(cls);
  }

  explicit UnixListenerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<UnixListenerWrap>(info) {}
  ~UnixListenerWrap() override {
    if (poll_ != nullptr) closePollHandle(poll_);
  }

  /** listenUnix(path, mode, onConnection). */
  static Napi::Value listen(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!arg(info, 0, "path").IsString()) throw Napi::TypeError::New(env, "path must be a string");
    const std::string path = info[0].As<Napi::String>().Utf8Value();
    const mode_t mode = static_cast<mode_t>(toUintMax(arg(info, 1, "mode"), "mode", 07777));
    if (!arg(info, 2, "onConnection").IsFunction()) throw Napi::TypeError::New(env, "onConnection must be a function");
    const sockaddr_un addr = unixAddress(env, path);

    removeStaleSocket(env, path, addr);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) throw Napi::Error::New(env, errnoMessage("socket"));
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0)
      throw Napi::Error::New(env, errnoMessage("bind " + path));
    struct stat st{};
    if (::chmod(path.c_str(), mode) < 0 || ::stat(path.c_str(), &st) < 0) {
      int err = errno;
      ::unlink(path.c_str());
      throw Napi::Error::New(env, errnoMessage("chmod " + path, err));
    }
    if (::listen(fd.get(), 16) < 0) {
      int err = errno;
      ::unlink(path.c_str());
      throw Napi::Error::New(env, errnoMessage("listen " + path, err));
    }

    Napi::Object obj = addonData(env).unixListener.New({});
    UnixListenerWrap* self = Unwrap(obj);
    self->path_ = path;
    self->device_ = st.st_dev;
    self->inode_ = st.st_ino;
    auto* handle = new uv_poll_t;
    int rc = uv_poll_init(loopOf(env), handle, fd.get());
    if (rc != 0) {
      delete handle;
      ::unlink(path.c_str());
      throw Napi::Error::New(env, std::string("uv_poll_init: ") + uv_strerror(rc));
    }
    handle->data = self;
    rc = uv_poll_start(handle, UV_READABLE, &UnixListenerWrap::onPoll);
    if (rc != 0) {
      closePollHandle(handle);
      ::unlink(path.c_str());
      throw Napi::Error::New(env, std::string("uv_poll_start: ") + uv_strerror(rc));
    }
    self->poll_ = handle;
    self->fd_ = std::move(fd);
    self->onConnection_ = Napi::Persistent(info[2].As<Napi::Function>());
    self->asyncContext_ = std::make_unique<Napi::AsyncContext>(env, "vhba:UnixListener");
    self->Ref();  // alive while listening
    return obj;
  }

 private:
  /** Unlinks a leftover socket file nobody listens on; refuses to replace a
   * live socket or a non-socket file. */
  static void removeStaleSocket(Napi::Env env, const std::string& path, const sockaddr_un& addr) {
    struct stat st{};
    if (::lstat(path.c_str(), &st) < 0) return;  // nothing there
    if (!S_ISSOCK(st.st_mode)) throw Napi::Error::New(env, path + " exists and is not a socket");
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe.valid()) throw Napi::Error::New(env, errnoMessage("socket"));
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0)
      throw Napi::Error::New(env, path + " is in use by a listening process");
    if (errno != ECONNREFUSED) throw Napi::Error::New(env, errnoMessage("probing " + path));
    ::unlink(path.c_str());
  }

  static void onPoll(uv_poll_t* handle, int status, int events) {
    auto* self = static_cast<UnixListenerWrap*>(handle->data);
    if (self == nullptr || !self->fd_.valid()) return;
    Napi::Env env = self->Env();
    for (int i = 0; i < kMessagesPerWakeup && self->fd_.valid(); i++) {
      int fd = ::accept4(self->fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        // EAGAIN: drained. Other errors (ECONNABORTED, EMFILE): try again on
        // the next readiness callback. Known gap: with EMFILE the pending
        // connection keeps the poll readable, so this spins until fds free up.
        return;
      }
      Napi::HandleScope scope(env);
      Napi::Object conn;
      try {
        conn = UnixConnectionWrap::create(env, fd);  // owns fd from here, also on failure
      } catch (const Napi::Error&) {
        continue;  // drop this connection; there is no JS frame to report to
      }
      callFromLoop(env, self->onConnection_, *self->asyncContext_, {conn});
    }
  }

  Napi::Value close(const Napi::CallbackInfo& info) {
    if (fd_.valid()) {
      closePollHandle(poll_);
      poll_ = nullptr;
      fd_.reset();
      // Unlink only if the path is still our socket (not a newer listener's).
      struct stat st{};
      if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == device_ && st.st_ino == inode_) ::unlink(path_.c_str());
      onConnection_.Reset();
      Unref();
    }
    return info.Env().Undefined();
  }

  UniqueFd fd_;
  uv_poll_t* poll_ = nullptr;
  std::string path_;
  dev_t device_ = 0;
  ino_t inode_ = 0;
  Napi::FunctionReference onConnection_;
  std::unique_ptr<Napi::AsyncContext> asyncContext_;
};


Napi::Value connectUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!arg(info, 0, "path").IsString()) throw Napi::TypeError::New(env, "path must be a string");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  const sockaddr_un addr = unixAddress(env, path);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) throw Napi::Error::New(env, errnoMessage("socket"));
  int rc;
  do rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) throw Napi::Error::New(env, errnoMessage("connect " + path));
  return UnixConnectionWrap::create(env, fd.release());
}

Napi::Value socketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
    throw Napi::Error::New(env, errnoMessage("socketpair"));
  UniqueFd second(fds[1]);
  Napi::Array pair = Napi::Array::New(env, 2);
  pair.Set(0u, UnixConnectionWrap::create(env, fds[0]));
  pair.Set(1u, UnixConnectionWrap::create(env, second.release()));
  return pair;
}

}  // namespace

void initUnixSockets(Napi::Env env, Napi::Object exports) {
  UnixConnectionWrap::define(env);
  UnixListenerWrap::define(env);
  exports.Set("listenUnix", Napi::Function::New(env, &UnixListenerWrap::listen, "listenUnix"));
  exports.Set("connectUnix", Napi::Function::New(env, connectUnix, "connectUnix"));
  exports.Set("socketPair", Napi::Function::New(env, socketPair, "socketPair"));
}

}  // namespace vhba
