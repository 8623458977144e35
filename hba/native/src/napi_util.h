// Argument parsing and callback helpers for the N-API bindings. Every parser
// throws Napi::TypeError / RangeError with the argument's name.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace vhba {

/** A non-negative integer from a Number (safe integer) or a BigInt. */
inline uint64_t toUint64(const Napi::Value& value, const char* name) {
  Napi::Env env = value.Env();
  if (value.IsBigInt()) {
    bool lossless = false;
    uint64_t v = value.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(env, std::string(name) + " must fit in 64 unsigned bits");
    return v;
  }
  if (value.IsNumber()) {
    double d = value.As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d)))
      throw Napi::RangeError::New(env, std::string(name) + " must be a non-negative integer");
    return static_cast<uint64_t>(d);
  }
  throw Napi::TypeError::New(env, std::string(name) + " must be a bigint or a number");
}

/** An unsigned integer no larger than `max` from a Number. */
inline uint64_t toUintMax(const Napi::Value& value, const char* name, uint64_t max) {
  if (!value.IsNumber()) throw Napi::TypeError::New(value.Env(), std::string(name) + " must be a number");
  uint64_t v = toUint64(value, name);
  if (v > max) throw Napi::RangeError::New(value.Env(), std::string(name) + " must be <= " + std::to_string(max));
  return v;
}

/** A file descriptor argument: an integer >= -1 when allowNone, else >= 0. */
inline int toFd(const Napi::Value& value, const char* name, bool allowNone) {
  Napi::Env env = value.Env();
  if (!value.IsNumber()) throw Napi::TypeError::New(env, std::string(name) + " must be a number");
  double d = value.As<Napi::Number>().DoubleValue();
  if (d == -1 && allowNone) return -1;
  if (!(d >= 0) || d > 2147483647.0 || d != static_cast<double>(static_cast<int>(d)))
    throw Napi::RangeError::New(env, std::string(name) + " must be a file descriptor");
  return static_cast<int>(d);
}

/** The i-th argument, or a TypeError naming it when missing. */
inline Napi::Value arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length()) throw Napi::TypeError::New(info.Env(), std::string("missing argument ") + name);
  return info[i];
}

/** Calls a JS callback from a libuv callback (no JS on the stack): opens a
 * handle scope, runs it through MakeCallback (so microtasks run), and turns a
 * thrown exception into a process 'uncaughtException'. */
inline void callFromLoop(Napi::Env env, const Napi::FunctionReference& fn, const Napi::AsyncContext& context,
                         const std::initializer_list<napi_value>& args) {
  Napi::HandleScope scope(env);
  try {
    fn.Value().MakeCallback(env.Global(), args, context);
  } catch (const Napi::Error& e) {
    napi_fatal_exception(env, e.Value());
  }
}

}  // namespace vhba
