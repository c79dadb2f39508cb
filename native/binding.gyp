{
  "targets": [
    {
      "target_name": "synpass_nfq",
      "sources": ["src/nfqueue.cc", "src/hmac.cc", "src/curve25519.cc", "src/bpf_loader.cc", "src/conntrack.cc", "src/raw_send.cc", "src/ruleset_events.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except", "fast_path_bpf"],
      "libraries": ["<!@(node check-deps.mjs --libs)"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "defines": ["NAPI_VERSION=8"]
    },
    {
      "target_name": "fast_path_bpf",
      "type": "none",
      "actions": [
        {
          "action_name": "compile_fast_path",
          "inputs": ["bpf/fast_path.bpf.c", "bpf/fast_path.h"],
          "outputs": ["<(PRODUCT_DIR)/fast_path.bpf.o"],
          "action": ["node", "bpf/build.mjs", "bpf/fast_path.bpf.c", "<(PRODUCT_DIR)/fast_path.bpf.o"]
        },
        {
          "action_name": "compile_listener_sweep",
          "inputs": ["bpf/listener_sweep.bpf.c", "bpf/fast_path.h"],
          "outputs": ["<(PRODUCT_DIR)/listener_sweep.bpf.o"],
          "action": ["node", "bpf/build.mjs", "bpf/listener_sweep.bpf.c", "<(PRODUCT_DIR)/listener_sweep.bpf.o"]
        }
      ]
    }
  ]
}
