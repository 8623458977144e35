// N-API side of passthrough devices (issue 8): openPassthrough and the
// PassthroughDevice object (see ../index.ts).
#pragma once

#include <napi.h>

#include <memory>

#include "passthrough.h"

namespace vhba {

/** Sets openPassthrough on `exports` and registers the PassthroughDevice class. */
void initPassthroughBinding(Napi::Env env, Napi::Object exports);

/** The transport behind a PassthroughDevice object (setLun shares it).
 * Throws a TypeError if `value` is not one, an Error if it was closed. */
std::shared_ptr<PassthroughTransport> passthroughTransportOf(Napi::Value value);

}  // namespace vhba
