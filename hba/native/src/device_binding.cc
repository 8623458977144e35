// VirtioDevice binding: parses arguments, forwards to Device, and carries the
// workers' batches and violation reports to JS through two threadsafe
// functions (one TSFN call per batch, never one per chain).
#include "device_binding.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "addon_data.h"
#include "device.h"
#include "napi_util.h"
#include "passthrough_binding.h"

namespace vhba {
namespace {

/** What a worker hands to the main loop for onChains. */
struct ChainBatch {
  uint32_t queue;
  std::vector<PoppedChain> chains;
};

/** What a worker hands to the main loop for onError. */
struct ViolationReport {
  uint32_t queue;
  std::string reason;
};

/** A threadsafe function plus whether Node already finalized it (at
 * environment teardown Node finalizes TSFNs on its own; after that neither
 * worker calls nor a release may touch it). Shared by the wrap and the TSFN's
 * finalizer. */
struct TsfnSlot {
  std::mutex mutex;
  napi_threadsafe_function fn = nullptr;
  bool finalized = false;

  /** From any thread: queues `data`; false if the function is gone. */
  bool call(void* data) {
    std::lock_guard<std::mutex> lock(mutex);
    if (finalized || fn == nullptr) return false;
    return napi_call_threadsafe_function(fn, data, napi_tsfn_nonblocking) == napi_ok;
  }

  /** Main thread: releases the function unless Node finalized it already. */
  void release() {
    napi_threadsafe_function toRelease = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (!finalized) toRelease = fn;
      fn = nullptr;
    }
    if (toRelease != nullptr) napi_release_threadsafe_function(toRelease, napi_tsfn_release);
  }
};

/** Runs a std::exception-throwing core call, rethrowing as a JS Error. */
template <typename F>
auto translateErrors(Napi::Env env, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

class DeviceWrap : public Napi::ObjectWrap<DeviceWrap>, public DeviceSink {
 public:
  static void define(Napi::Env env) {
    Napi::Function cls = DefineClass(
        env, "VirtioDevice",
        {InstanceMethod("setFeatures", &DeviceWrap::setFeatures),
         InstanceMethod("setMemTable", &DeviceWrap::setMemTable),
         InstanceMethod("setVringNum", &DeviceWrap::setVringNum),
         InstanceMethod("setVringAddr", &DeviceWrap::setVringAddr),
         InstanceMethod("setVringBase", &DeviceWrap::setVringBase),
         InstanceMethod("getVringBase", &DeviceWrap::getVringBase),
         InstanceMethod("setVringKick", &DeviceWrap::setVringKick),
         InstanceMethod("setVringCall", &DeviceWrap::setVringCall),
         InstanceMethod("setVringErr", &DeviceWrap::setVringErr),
         InstanceMethod("setVringEnable", &DeviceWrap::setVringEnable),
         InstanceMethod("complete", &DeviceWrap::complete),
         InstanceMethod("reset", &DeviceWrap::reset),
         InstanceMethod("queueState", &DeviceWrap::queueState),
         InstanceMethod("setLun", &DeviceWrap::setLun),
         InstanceMethod("updateLun", &DeviceWrap::updateLun),
         InstanceMethod("removeLun", &DeviceWrap::removeLun),
         InstanceMethod("drainLun", &DeviceWrap::drainLun),
         InstanceMethod("lunCounters", &DeviceWrap::lunCounters)});
    addonData(env).device = Napi::Persistent(cls);
  }

  explicit DeviceWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "createDevice(options) needs an object");
    Napi::Object options = info[0].As<Napi::Object>();
    DeviceConfig config;
    config.numQueues = static_cast<uint32_t>(toUintMax(options.Get("numQueues"), "numQueues", 1024));
    config.limits.maxQueueSize = static_cast<uint32_t>(toUintMax(options.Get("maxQueueSize"), "maxQueueSize", 32768));
    config.limits.maxChainBytes = toUintMax(options.Get("maxChainBytes"), "maxChainBytes", 1ull << 32);
    config.maxRegions = static_cast<size_t>(toUintMax(options.Get("maxRegions"), "maxRegions", 509));
    config.completionBatch = optionalUint(options, "completionBatch", "VHBA_COMPLETION_BATCH", config.completionBatch, 1024);
    config.pollMicros = optionalUint(options, "pollMicros", "VHBA_POLL_MICROS", config.pollMicros, 1000);
    Napi::Value onChains = options.Get("onChains");
    Napi::Value onError = options.Get("onError");
    if (!onChains.IsFunction() || !onError.IsFunction())
      throw Napi::TypeError::New(env, "onChains and onError must be functions");
    device_ = translateErrors(env, [&] { return std::make_unique<Device>(config, this); });
    makeTsfn(env, onChains, "vhba:onChains", &DeviceWrap::callOnChains, chains_);
    makeTsfn(env, onError, "vhba:onError", &DeviceWrap::callOnError, errors_);
  }

  ~DeviceWrap() override {
    device_.reset();  // joins every worker: no sink call after this
    chains_->release();
    errors_->release();
  }

  // DeviceSink (worker threads).
  void deliverChains(uint32_t queue, std::vector<PoppedChain>&& chains) override {
    auto* batch = new ChainBatch{queue, std::move(chains)};
    if (!chains_->call(batch)) delete batch;
  }
  void reportViolation(uint32_t queue, std::string reason) override {
    auto* report = new ViolationReport{queue, std::move(reason)};
    if (!errors_->call(report)) delete report;
  }

 private:
  static void makeTsfn(Napi::Env env, Napi::Value fn, const char* name, napi_threadsafe_function_call_js callJs,
                       const std::shared_ptr<TsfnSlot>& slot) {
    napi_threadsafe_function tsfn = nullptr;
    auto* finalizeData = new std::shared_ptr<TsfnSlot>(slot);
    napi_finalize onFinalize = [](napi_env, void* data, void*) {
      auto* held = static_cast<std::shared_ptr<TsfnSlot>*>(data);
      {
        std::lock_guard<std::mutex> lock((*held)->mutex);
        (*held)->finalized = true;
      }
      delete held;
    };
    napi_status status = napi_create_threadsafe_function(env, fn, nullptr, Napi::String::New(env, name), 0, 1,
                                                         finalizeData, onFinalize, nullptr, callJs, &tsfn);
    if (status != napi_ok) {
      delete finalizeData;
      throw Napi::Error::New(env, "napi_create_threadsafe_function failed");
    }
    slot->fn = tsfn;
    // Queued work alone must not keep the process alive.
    if (napi_unref_threadsafe_function(env, tsfn) != napi_ok) throw Napi::Error::New(env, "napi_unref_threadsafe_function failed");
  }

  static void callOnChains(napi_env rawEnv, napi_value jsCallback, void*, void* data) {
    std::unique_ptr<ChainBatch> batch(static_cast<ChainBatch*>(data));
    if (rawEnv == nullptr || jsCallback == nullptr) return;
    Napi::Env env(rawEnv);
    try {
      Napi::Array list = Napi::Array::New(env, batch->chains.size());
      Napi::Number queue = Napi::Number::New(env, batch->queue);
      for (size_t i = 0; i < batch->chains.size(); i++) {
        const PoppedChain& chain = batch->chains[i];
        Napi::Object obj = Napi::Object::New(env);
        obj.Set("queue", queue);
        obj.Set("head", Napi::Number::New(env, chain.head));
        obj.Set("readable", Napi::Buffer<uint8_t>::Copy(env, chain.readable.data(), chain.readable.size()));
        obj.Set("writableLength", Napi::Number::New(env, static_cast<double>(chain.writableLength)));
        list.Set(static_cast<uint32_t>(i), obj);
      }
      batch.reset();
      Napi::Function(env, jsCallback).Call(env.Undefined(), {list});
    } catch (const Napi::Error& e) {
      e.ThrowAsJavaScriptException();  // Node reports it as uncaught
    }
  }

  static void callOnError(napi_env rawEnv, napi_value jsCallback, void*, void* data) {
    std::unique_ptr<ViolationReport> report(static_cast<ViolationReport*>(data));
    if (rawEnv == nullptr || jsCallback == nullptr) return;
    Napi::Env env(rawEnv);
    try {
      Napi::Function(env, jsCallback)
          .Call(env.Undefined(), {Napi::Number::New(env, report->queue), Napi::String::New(env, report->reason)});
    } catch (const Napi::Error& e) {
      e.ThrowAsJavaScriptException();
    }
  }

  uint32_t queueArg(const Napi::CallbackInfo& info) {
    return static_cast<uint32_t>(toUintMax(arg(info, 0, "queue"), "queue", 0xffffffffu));
  }

  Napi::Value setFeatures(const Napi::CallbackInfo& info) {
    uint64_t features = toUint64(arg(info, 0, "features"), "features");
    translateErrors(info.Env(), [&] { device_->setFeatures(features); });
    return info.Env().Undefined();
  }

  Napi::Value setMemTable(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!arg(info, 0, "regions").IsArray()) throw Napi::TypeError::New(env, "regions must be an array");
    Napi::Array list = info[0].As<Napi::Array>();
    std::vector<MemoryRegionDesc> regions(list.Length());
    // Ownership of every fd passes to us: collect them first, so they are
    // closed even when another field fails to parse.
    for (uint32_t i = 0; i < list.Length(); i++) {
      Napi::Value v = list.Get(i);
      if (!v.IsObject()) continue;
      Napi::Value fd = v.As<Napi::Object>().Get("fd");
      if (fd.IsNumber()) {
        try {
          regions[i].fd = toFd(fd, "fd", false);
        } catch (const Napi::Error&) {
        }
      }
    }
    try {
      for (uint32_t i = 0; i < list.Length(); i++) {
        Napi::Value v = list.Get(i);
        if (!v.IsObject()) throw Napi::TypeError::New(env, "memory region " + std::to_string(i) + " is not an object");
        Napi::Object r = v.As<Napi::Object>();
        regions[i].guestPhysAddr = toUint64(r.Get("guestPhysAddr"), "guestPhysAddr");
        regions[i].size = toUint64(r.Get("size"), "size");
        regions[i].userAddr = toUint64(r.Get("userAddr"), "userAddr");
        regions[i].mmapOffset = toUint64(r.Get("mmapOffset"), "mmapOffset");
        if (regions[i].fd < 0) throw Napi::TypeError::New(env, "memory region " + std::to_string(i) + " has no valid fd");
      }
    } catch (...) {
      for (auto& r : regions)
        if (r.fd >= 0) ::close(r.fd);
      throw;
    }
    translateErrors(env, [&] { device_->setMemTable(regions); });
    return env.Undefined();
  }

  Napi::Value setVringNum(const Napi::CallbackInfo& info) {
    uint32_t queue = queueArg(info);
    uint32_t num = static_cast<uint32_t>(toUintMax(arg(info, 1, "num"), "num", 0xffffffffu));
    translateErrors(info.Env(), [&] { device_->setVringNum(queue, num); });
    return info.Env().Undefined();
  }

  Napi::Value setVringAddr(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t queue = queueArg(info);
    if (!arg(info, 1, "addr").IsObject()) throw Napi::TypeError::New(env, "addr must be an object");
    Napi::Object a = info[1].As<Napi::Object>();
    RingAddresses addresses;
    addresses.desc = toUint64(a.Get("descUserAddr"), "descUserAddr");
    addresses.used = toUint64(a.Get("usedUserAddr"), "usedUserAddr");
    addresses.avail = toUint64(a.Get("availUserAddr"), "availUserAddr");
    translateErrors(env, [&] { device_->setVringAddr(queue, addresses); });
    return env.Undefined();
  }

  Napi::Value setVringBase(const Napi::CallbackInfo& info) {
    uint32_t queue = queueArg(info);
    uint32_t base = static_cast<uint32_t>(toUintMax(arg(info, 1, "base"), "base", 0xffffffffu));
    translateErrors(info.Env(), [&] { device_->setVringBase(queue, base); });
    return info.Env().Undefined();
  }

  Napi::Value getVringBase(const Napi::CallbackInfo& info) {
    uint32_t queue = queueArg(info);
    uint32_t base = translateErrors(info.Env(), [&] { return device_->getVringBase(queue); });
    return Napi::Number::New(info.Env(), base);
  }

  /** Shared by the three fd setters; the fd is owned by the device from here. */
  template <void (Device::*Setter)(uint32_t, int)>
  Napi::Value setFd(const Napi::CallbackInfo& info) {
    uint32_t queue = queueArg(info);
    int fd = toFd(arg(info, 1, "fd"), "fd", true);
    translateErrors(info.Env(), [&] { (device_.get()->*Setter)(queue, fd); });
    return info.Env().Undefined();
  }
  Napi::Value setVringKick(const Napi::CallbackInfo& info) { return setFd<&Device::setVringKick>(info); }
  Napi::Value setVringCall(const Napi::CallbackInfo& info) { return setFd<&Device::setVringCall>(info); }
  Napi::Value setVringErr(const Napi::CallbackInfo& info) { return setFd<&Device::setVringErr>(info); }

  Napi::Value setVringEnable(const Napi::CallbackInfo& info) {
    uint32_t queue = queueArg(info);
    if (!arg(info, 1, "enable").IsBoolean()) throw Napi::TypeError::New(info.Env(), "enable must be a boolean");
    bool enable = info[1].As<Napi::Boolean>().Value();
    translateErrors(info.Env(), [&] { device_->setVringEnable(queue, enable); });
    return info.Env().Undefined();
  }

  Napi::Value complete(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t queue = queueArg(info);
    uint16_t head = static_cast<uint16_t>(toUintMax(arg(info, 1, "head"), "head", 0xffff));
    if (!arg(info, 2, "data").IsBuffer()) throw Napi::TypeError::New(env, "data must be a Buffer");
    auto data = info[2].As<Napi::Buffer<uint8_t>>();
    translateErrors(env, [&] { device_->complete(queue, head, data.Data(), data.Length()); });
    return env.Undefined();
  }

  Napi::Value reset(const Napi::CallbackInfo& info) {
    translateErrors(info.Env(), [&] { device_->reset(); });
    return info.Env().Undefined();
  }

  Napi::Value queueState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t queue = queueArg(info);
    QueueState s = translateErrors(env, [&] { return device_->queueState(queue); });
    Napi::Object obj = Napi::Object::New(env);
    obj.Set("started", Napi::Boolean::New(env, s.started));
    obj.Set("size", Napi::Number::New(env, s.size));
    obj.Set("lastAvail", Napi::Number::New(env, s.lastAvail));
    obj.Set("usedIdx", Napi::Number::New(env, s.usedIdx));
    obj.Set("inFlight", Napi::Number::New(env, s.inFlight));
    return obj;
  }

  /** A tuning option: the option if given, else the environment variable
   * (for benchmarking without code changes), else the default. */
  static uint32_t optionalUint(Napi::Object options, const char* name, const char* envName, uint32_t fallback,
                               uint32_t max) {
    Napi::Value v = options.Get(name);
    if (!v.IsUndefined()) return static_cast<uint32_t>(toUintMax(v, name, max));
    const char* env = std::getenv(envName);
    if (env == nullptr || *env == '\0') return fallback;
    char* end = nullptr;
    const unsigned long parsed = std::strtoul(env, &end, 10);
    if (*end != '\0' || parsed > max) return fallback;
    return static_cast<uint32_t>(parsed);
  }

  static bool boolField(Napi::Object o, const char* name) {
    Napi::Value v = o.Get(name);
    if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), std::string(name) + " must be a boolean");
    return v.As<Napi::Boolean>().Value();
  }

  void addressArgs(const Napi::CallbackInfo& info, uint32_t& target, uint32_t& lun) {
    target = static_cast<uint32_t>(toUintMax(arg(info, 0, "target"), "target", 255));
    lun = static_cast<uint32_t>(toUintMax(arg(info, 1, "lun"), "lun", 16383));
  }

  static Napi::Object countersObject(Napi::Env env, const NativeLunCounters& c) {
    Napi::Object obj = Napi::Object::New(env);
    obj.Set("reads", Napi::Number::New(env, static_cast<double>(c.reads)));
    obj.Set("writes", Napi::Number::New(env, static_cast<double>(c.writes)));
    obj.Set("bytesRead", Napi::Number::New(env, static_cast<double>(c.bytesRead)));
    obj.Set("bytesWritten", Napi::Number::New(env, static_cast<double>(c.bytesWritten)));
    obj.Set("flushes", Napi::Number::New(env, static_cast<double>(c.flushes)));
    obj.Set("errors", Napi::Number::New(env, static_cast<double>(c.errors)));
    return obj;
  }

  /** Waits on the libuv pool until no fast-path command holds a LUN, then
   * resolves with its counters or undefined. */
  class LunIdleWaiter : public Napi::AsyncWorker {
   public:
    LunIdleWaiter(Napi::Env env, std::shared_ptr<NativeLun> lun, bool withCounters)
        : Napi::AsyncWorker(env, "vhba:lunIdle"), deferred_(Napi::Promise::Deferred::New(env)),
          lun_(std::move(lun)), withCounters_(withCounters) {}
    Napi::Promise promise() { return deferred_.Promise(); }
    void Execute() override {
      if (lun_) lun_->waitIdle();
    }
    void OnOK() override {
      Napi::Env env = Env();
      if (lun_ && withCounters_)
        deferred_.Resolve(countersObject(env, lun_->counters()));
      else
        deferred_.Resolve(env.Undefined());
      lun_.reset();  // the last reference may close the duplicated fds
    }
    void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

   private:
    Napi::Promise::Deferred deferred_;
    std::shared_ptr<NativeLun> lun_;
    bool withCounters_;
  };

  Napi::Value setLun(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t target, lun;
    addressArgs(info, target, lun);
    if (!arg(info, 2, "config").IsObject()) throw Napi::TypeError::New(env, "config must be an object");
    Napi::Object o = info[2].As<Napi::Object>();
    if (!o.Get("device").IsUndefined()) {
      setPassthroughLun(target, lun, o);
      return env.Undefined();
    }
    NativeLunConfig config;
    config.fd = toFd(o.Get("fd"), "fd", false);
    config.dsyncFd = toFd(o.Get("dsyncFd"), "dsyncFd", true);
    config.blockSize = static_cast<uint32_t>(toUintMax(o.Get("blockSize"), "blockSize", 4096));
    config.blockCount = toUint64(o.Get("blockCount"), "blockCount");
    config.maxTransferBlocks = static_cast<uint32_t>(toUintMax(o.Get("maxTransferBlocks"), "maxTransferBlocks", 0xffffffffu));
    config.readOnly = boolField(o, "readOnly");
    config.writeCacheEnabled = boolField(o, "writeCacheEnabled");
    config.eligible = boolField(o, "eligible");
    translateErrors(env, [&] { device_->luns().add(target, lun, config); });
    return env.Undefined();
  }

  /** A 32-byte opcode bitmap (NativePassthroughLunConfig). */
  static void bitmapField(Napi::Object o, const char* name, uint8_t (&out)[32]) {
    Napi::Value v = o.Get(name);
    if (!v.IsBuffer() || v.As<Napi::Buffer<uint8_t>>().Length() != 32)
      throw Napi::TypeError::New(o.Env(), std::string(name) + " must be a 32-byte Buffer");
    std::memcpy(out, v.As<Napi::Buffer<uint8_t>>().Data(), 32);
  }

  /** setLun for a NativePassthroughLunConfig (has `device`). */
  void setPassthroughLun(uint32_t target, uint32_t lun, Napi::Object o) {
    Napi::Env env = o.Env();
    NativePassthroughLunConfig config;
    config.transport = passthroughTransportOf(o.Get("device"));
    bitmapField(o, "refusedOpcodes", config.refusedOpcodes);
    bitmapField(o, "deferredOpcodes", config.deferredOpcodes);
    config.timeoutMs = static_cast<uint32_t>(toUintMax(o.Get("timeoutMs"), "timeoutMs", 24u * 3600 * 1000));
    if (config.timeoutMs == 0) throw Napi::RangeError::New(env, "timeoutMs must be > 0");
    config.eligible = boolField(o, "eligible");
    translateErrors(env, [&] { device_->luns().add(target, lun, config); });
  }

  Napi::Value updateLun(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t target, lun;
    addressArgs(info, target, lun);
    if (!arg(info, 2, "update").IsObject()) throw Napi::TypeError::New(env, "update must be an object");
    Napi::Object o = info[2].As<Napi::Object>();
    NativeLunUpdate u;
    if (!o.Get("blockCount").IsUndefined()) {
      u.hasBlockCount = true;
      u.blockCount = toUint64(o.Get("blockCount"), "blockCount");
    }
    if (!o.Get("readOnly").IsUndefined()) {
      u.hasReadOnly = true;
      u.readOnly = boolField(o, "readOnly");
    }
    if (!o.Get("writeCacheEnabled").IsUndefined()) {
      u.hasWriteCache = true;
      u.writeCacheEnabled = boolField(o, "writeCacheEnabled");
    }
    if (!o.Get("eligible").IsUndefined()) {
      u.hasEligible = true;
      u.eligible = boolField(o, "eligible");
    }
    translateErrors(env, [&] { device_->luns().update(target, lun, u); });
    return env.Undefined();
  }

  Napi::Value removeLun(const Napi::CallbackInfo& info) {
    uint32_t target, lun;
    addressArgs(info, target, lun);
    auto* waiter = new LunIdleWaiter(info.Env(), device_->luns().remove(target, lun), true);
    Napi::Promise promise = waiter->promise();
    waiter->Queue();
    return promise;
  }

  Napi::Value drainLun(const Napi::CallbackInfo& info) {
    uint32_t target, lun;
    addressArgs(info, target, lun);
    auto* waiter = new LunIdleWaiter(info.Env(), device_->luns().find(target, lun), false);
    Napi::Promise promise = waiter->promise();
    waiter->Queue();
    return promise;
  }

  Napi::Value lunCounters(const Napi::CallbackInfo& info) {
    uint32_t target, lun;
    addressArgs(info, target, lun);
    auto entry = device_->luns().find(target, lun);
    if (!entry) return info.Env().Undefined();
    return countersObject(info.Env(), entry->counters());
  }

  std::unique_ptr<Device> device_;
  std::shared_ptr<TsfnSlot> chains_ = std::make_shared<TsfnSlot>();
  std::shared_ptr<TsfnSlot> errors_ = std::make_shared<TsfnSlot>();
};

Napi::Value createDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1) throw Napi::TypeError::New(env, "createDevice(options) needs an object");
  return addonData(env).device.New({info[0]});
}

}  // namespace

void initDeviceBinding(Napi::Env env, Napi::Object exports) {
  DeviceWrap::define(env);
  exports.Set("createDevice", Napi::Function::New(env, createDevice, "createDevice"));
}

}  // namespace vhba
