{
  "targets": [
    {
      "target_name": "vhba_native",
      "sources": [
        "src/addon.cc",
        "src/device.cc",
        "src/device_binding.cc",
        "src/fd_util.cc",
        "src/guest_memory.cc",
        "src/message_reader.cc",
        "src/passthrough.cc",
        "src/passthrough_binding.cc",
        "src/scsi_fastpath.cc",
        "src/system_binding.cc",
        "src/unix_socket.cc",
        "src/virtqueue.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=9", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fexceptions"],
      "ldflags": ["-pthread"],
      "libraries": ["-liscsi"]
    }
  ]
}
