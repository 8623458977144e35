// openPassthrough / PassthroughDevice (see ../index.ts). Opening (an iSCSI
// login blocks) and every execute() run on the libuv thread pool; execute()
// moves data through bounce buffers owned by its worker. The transport is a
// shared_ptr: LUNs registered with setLun keep it alive after close().
#include "passthrough_binding.h"

#include <cstring>
#include <string>
#include <vector>

#include "addon_data.h"
#include "napi_util.h"

namespace vhba {
namespace {

constexpr uint32_t kDefaultOpenTimeoutMs = 10000;
constexpr uint32_t kDefaultCommandTimeoutMs = 30000;
constexpr uint32_t kMaxTimeoutMs = 24 * 3600 * 1000;
constexpr uint64_t kMaxDataInLength = 32u << 20;  // contract: dataInLength <= 32 MiB

uint32_t timeoutOption(Napi::Object options, uint32_t fallback) {
  Napi::Value v = options.Get("timeoutMs");
  if (v.IsUndefined()) return fallback;
  const uint64_t ms = toUintMax(v, "timeoutMs", kMaxTimeoutMs);
  if (ms == 0) throw Napi::RangeError::New(options.Env(), "timeoutMs must be > 0");
  return static_cast<uint32_t>(ms);
}

/** A promise already rejected with `error`: argument errors of the
 * promise-returning calls surface as rejections, as the contract says. */
Napi::Promise rejected(Napi::Env env, const Napi::Error& error) {
  auto deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(error.Value());
  return deferred.Promise();
}

Napi::Object countersObject(Napi::Env env, const PassthroughCounters& c) {
  Napi::Object obj = Napi::Object::New(env);
  obj.Set("reads", Napi::Number::New(env, static_cast<double>(c.reads.load())));
  obj.Set("writes", Napi::Number::New(env, static_cast<double>(c.writes.load())));
  obj.Set("bytesRead", Napi::Number::New(env, static_cast<double>(c.bytesRead.load())));
  obj.Set("bytesWritten", Napi::Number::New(env, static_cast<double>(c.bytesWritten.load())));
  obj.Set("flushes", Napi::Number::New(env, static_cast<double>(c.flushes.load())));
  obj.Set("errors", Napi::Number::New(env, static_cast<double>(c.errors.load())));
  return obj;
}

/** Runs one command with bounce buffers; resolves with a PassthroughOutcome. */
class ExecuteWorker : public Napi::AsyncWorker {
 public:
  ExecuteWorker(Napi::Env env, std::shared_ptr<PassthroughTransport> transport, std::vector<uint8_t> cdb,
                std::vector<uint8_t> data, DataDirection direction, uint32_t timeoutMs)
      : Napi::AsyncWorker(env, "vhba:passthroughExecute"), deferred_(Napi::Promise::Deferred::New(env)),
        transport_(std::move(transport)), cdb_(std::move(cdb)), data_(std::move(data)), direction_(direction),
        timeoutMs_(timeoutMs) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    iovec iov{data_.data(), data_.size()};
    PassthroughCommand c;
    c.cdb = cdb_.data();
    c.cdbLength = cdb_.size();
    c.direction = data_.empty() ? DataDirection::kNone : direction_;
    c.iov = data_.empty() ? nullptr : &iov;
    c.iovCount = data_.empty() ? 0 : 1;
    c.dataLength = static_cast<uint32_t>(data_.size());
    c.timeoutMs = timeoutMs_;
    transport_->execute(c, result_);
  }

  void OnOK() override {
    Napi::Env env = Env();
    const bool ok = result_.response == VirtioScsiResponse::kOk;
    const size_t residual = std::min<size_t>(result_.residual, data_.size());
    const size_t dataIn = ok && direction_ == DataDirection::kFromDevice ? data_.size() - residual : 0;
    Napi::Object out = Napi::Object::New(env);
    out.Set("response", Napi::Number::New(env, result_.response));
    out.Set("status", Napi::Number::New(env, ok ? result_.status : 0));
    out.Set("sense", Napi::Buffer<uint8_t>::Copy(env, result_.sense, ok ? result_.senseLength : 0));
    out.Set("dataIn", Napi::Buffer<uint8_t>::Copy(env, data_.data(), dataIn));
    out.Set("residual", Napi::Number::New(env, static_cast<double>(ok ? residual : data_.size())));
    out.Set("error", Napi::String::New(env, result_.error));
    transport_.reset();
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<PassthroughTransport> transport_;
  std::vector<uint8_t> cdb_, data_;
  DataDirection direction_;
  uint32_t timeoutMs_;
  PassthroughResult result_;
};

/** The PassthroughDevice object handed to JS. */
class PassthroughDeviceWrap : public Napi::ObjectWrap<PassthroughDeviceWrap> {
 public:
  static void define(Napi::Env env) {
    Napi::Function cls = DefineClass(env, "PassthroughDevice",
                                     {InstanceAccessor<&PassthroughDeviceWrap::description>("description"),
                                      InstanceAccessor<&PassthroughDeviceWrap::maxTransferBytes>("maxTransferBytes"),
                                      InstanceMethod<&PassthroughDeviceWrap::execute>("execute"),
                                      InstanceMethod<&PassthroughDeviceWrap::counters>("counters"),
                                      InstanceMethod<&PassthroughDeviceWrap::close>("close")});
    addonData(env).passthroughDevice = Napi::Persistent(cls);
  }

  explicit PassthroughDeviceWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PassthroughDeviceWrap>(info) {}

  /** A new JS object around an open transport. */
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<PassthroughTransport> transport, uint32_t defaultTimeoutMs) {
    Napi::Object obj = addonData(env).passthroughDevice.New({});
    PassthroughDeviceWrap* self = Unwrap(obj);
    self->description_ = transport->description();
    self->maxTransferBytes_ = transport->maxTransferBytes();
    self->defaultTimeoutMs_ = defaultTimeoutMs;
    self->transport_ = std::move(transport);
    return obj;
  }

  std::shared_ptr<PassthroughTransport> transport() const { return transport_; }

 private:
  Napi::Value description(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), description_); }
  Napi::Value maxTransferBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(maxTransferBytes_));
  }

  Napi::Value execute(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      if (!transport_) throw Napi::Error::New(env, "passthrough device " + description_ + " is closed");
      if (info.Length() < 1 || !info[0].IsBuffer()) throw Napi::TypeError::New(env, "cdb must be a Buffer");
      auto cdb = info[0].As<Napi::Buffer<uint8_t>>();
      if (cdb.Length() < 6 || cdb.Length() > 32) throw Napi::RangeError::New(env, "cdb must be 6..32 bytes");
      std::vector<uint8_t> data;
      DataDirection direction = DataDirection::kNone;
      uint32_t timeoutMs = defaultTimeoutMs_;
      if (info.Length() > 1 && !info[1].IsUndefined()) {
        if (!info[1].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
        Napi::Object o = info[1].As<Napi::Object>();
        Napi::Value out = o.Get("dataOut");
        Napi::Value in = o.Get("dataInLength");
        uint64_t dataInLength = 0;
        if (!in.IsUndefined()) dataInLength = toUintMax(in, "dataInLength", kMaxDataInLength);
        size_t dataOutLength = 0;
        if (!out.IsUndefined()) {
          if (!out.IsBuffer()) throw Napi::TypeError::New(env, "dataOut must be a Buffer");
          auto b = out.As<Napi::Buffer<uint8_t>>();
          if (b.Length() > UINT32_MAX) throw Napi::RangeError::New(env, "dataOut is too large");
          dataOutLength = b.Length();
          data.assign(b.Data(), b.Data() + b.Length());
        }
        if (dataOutLength > 0 && dataInLength > 0)
          throw Napi::RangeError::New(env, "dataOut and dataInLength cannot both be given (no bidirectional commands)");
        if (dataOutLength > 0) direction = DataDirection::kToDevice;
        if (dataInLength > 0) {
          direction = DataDirection::kFromDevice;
          data.assign(static_cast<size_t>(dataInLength), 0);
        }
        timeoutMs = timeoutOption(o, defaultTimeoutMs_);
      }
      auto* worker = new ExecuteWorker(env, transport_, std::vector<uint8_t>(cdb.Data(), cdb.Data() + cdb.Length()),
                                       std::move(data), direction, timeoutMs);
      Napi::Promise promise = worker->promise();
      worker->Queue();
      return promise;
    } catch (const Napi::Error& e) {
      return rejected(env, e);
    }
  }

  Napi::Value counters(const Napi::CallbackInfo& info) {
    if (transport_) return countersObject(info.Env(), transport_->counters);
    return countersObject(info.Env(), finalCounters_);
  }

  Napi::Value close(const Napi::CallbackInfo& info) {
    if (transport_) {
      const PassthroughCounters& c = transport_->counters;
      finalCounters_.reads = c.reads.load();
      finalCounters_.writes = c.writes.load();
      finalCounters_.bytesRead = c.bytesRead.load();
      finalCounters_.bytesWritten = c.bytesWritten.load();
      finalCounters_.flushes = c.flushes.load();
      finalCounters_.errors = c.errors.load();
      transport_.reset();  // the last user (LUN, running execute) closes it
    }
    return info.Env().Undefined();
  }

  std::shared_ptr<PassthroughTransport> transport_;
  std::string description_;
  uint64_t maxTransferBytes_ = 0;
  uint32_t defaultTimeoutMs_ = kDefaultCommandTimeoutMs;
  PassthroughCounters finalCounters_;
};

/** Opens the transport on the thread pool (iSCSI login, device open). */
class OpenWorker : public Napi::AsyncWorker {
 public:
  OpenWorker(Napi::Env env, bool iscsi, std::string path, IscsiAddress address, uint32_t timeoutMs)
      : Napi::AsyncWorker(env, "vhba:openPassthrough"), deferred_(Napi::Promise::Deferred::New(env)), iscsi_(iscsi),
        path_(std::move(path)), address_(std::move(address)), timeoutMs_(timeoutMs) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      transport_ = iscsi_ ? openIscsiTransport(address_, timeoutMs_) : openSgTransport(path_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    deferred_.Resolve(PassthroughDeviceWrap::wrap(Env(), std::move(transport_), timeoutMs_));
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  bool iscsi_;
  std::string path_;
  IscsiAddress address_;
  uint32_t timeoutMs_;
  std::shared_ptr<PassthroughTransport> transport_;
};

std::string stringField(Napi::Object o, const char* name, bool optional = false) {
  Napi::Value v = o.Get(name);
  if (optional && v.IsUndefined()) return std::string();
  if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string("address.") + name + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.empty() && !optional) throw Napi::TypeError::New(o.Env(), std::string("address.") + name + " must not be empty");
  if (s.find('\0') != std::string::npos) throw Napi::TypeError::New(o.Env(), std::string("address.") + name + " contains NUL");
  return s;
}

/** openPassthrough(address, {timeoutMs}) → Promise<PassthroughDevice>. */
Napi::Value openPassthrough(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "address must be an object");
    Napi::Object a = info[0].As<Napi::Object>();
    uint32_t timeoutMs = kDefaultOpenTimeoutMs;
    if (info.Length() > 1 && !info[1].IsUndefined()) {
      if (!info[1].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
      timeoutMs = timeoutOption(info[1].As<Napi::Object>(), kDefaultOpenTimeoutMs);
    }
    const std::string kind = stringField(a, "kind");
    OpenWorker* worker = nullptr;
    if (kind == "sg") {
      worker = new OpenWorker(env, false, stringField(a, "path"), IscsiAddress{}, timeoutMs);
    } else if (kind == "iscsi") {
      IscsiAddress address;
      address.portal = stringField(a, "portal");
      address.iqn = stringField(a, "iqn");
      address.lun = static_cast<uint32_t>(toUintMax(a.Get("lun"), "address.lun", 16383));
      address.initiatorName = stringField(a, "initiatorName", true);
      worker = new OpenWorker(env, true, std::string(), std::move(address), timeoutMs);
    } else {
      throw Napi::TypeError::New(env, "address.kind must be 'sg' or 'iscsi'");
    }
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
  } catch (const Napi::Error& e) {
    return rejected(env, e);
  }
}

}  // namespace

void initPassthroughBinding(Napi::Env env, Napi::Object exports) {
  PassthroughDeviceWrap::define(env);
  exports.Set("openPassthrough", Napi::Function::New(env, openPassthrough, "openPassthrough"));
}

std::shared_ptr<PassthroughTransport> passthroughTransportOf(Napi::Value value) {
  Napi::Env env = value.Env();
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(addonData(env).passthroughDevice.Value()))
    throw Napi::TypeError::New(env, "device must be a PassthroughDevice from openPassthrough");
  auto transport = Napi::ObjectWrap<PassthroughDeviceWrap>::Unwrap(value.As<Napi::Object>())->transport();
  if (!transport) throw Napi::Error::New(env, "the passthrough device is closed");
  return transport;
}

}  // namespace vhba
