// Per-environment state of the addon (one per Node environment, so the addon
// also works when loaded from several worker threads).
#pragma once

#include <napi.h>

namespace vhba {

/** Class constructors the bindings create instances of. */
struct AddonData {
  Napi::FunctionReference unixConnection;
  Napi::FunctionReference unixListener;
  Napi::FunctionReference device;
  Napi::FunctionReference passthroughDevice;
};

/** The AddonData of `env` (set up in addon.cc's Init). */
inline AddonData& addonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace vhba
