// Small system-call bindings: memfd, eventfd, closeFd, punchHole, zeroRange.
#pragma once

#include <napi.h>

namespace vhba {

/** Sets memfd, eventfd, eventfdSignal, eventfdWait, closeFd, punchHole and
 * zeroRange on `exports`. */
void initSystemBinding(Napi::Env env, Napi::Object exports);

}  // namespace vhba
