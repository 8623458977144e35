// Entry point of the vhba native addon: see ../index.ts for the contract.
#include <napi.h>

#include "addon_data.h"
#include "device_binding.h"
#include "passthrough_binding.h"
#include "system_binding.h"
#include "unix_socket.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new vhba::AddonData());
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  vhba::initUnixSockets(env, exports);
  vhba::initDeviceBinding(env, exports);
  vhba::initSystemBinding(env, exports);
  vhba::initPassthroughBinding(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(vhba_native, Init)
