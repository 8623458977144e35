// N-API binding of Device (createDevice / VirtioDevice in index.ts).
#pragma once

#include <napi.h>

namespace vhba {

/** Registers the VirtioDevice class and sets createDevice on `exports`. */
void initDeviceBinding(Napi::Env env, Napi::Object exports);

}  // namespace vhba
