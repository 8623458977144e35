// Unix-domain sockets for vhost-user, driven by libuv's uv_poll on the main
// loop: listenUnix / connectUnix / socketPair and the UnixConnection and
// UnixListener objects of index.ts.
#pragma once

#include <napi.h>

namespace vhba {

/** Registers the UnixConnection / UnixListener classes and sets
 * listenUnix, connectUnix and socketPair on `exports`. */
void initUnixSockets(Napi::Env env, Napi::Object exports);

}  // namespace vhba
