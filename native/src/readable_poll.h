// A file descriptor watched for reading on Node's event loop: the kernel queue's, the fast path's
// ring buffer's, the ruleset notifications'. The handle is freed by libuv once closed, which may
// be after its owner is gone.
#pragma once
#include <node_api.h>
#include <uv.h>

class ReadablePoll {
 public:
  // `on_readable(context, status)` runs on the loop thread whenever `fd` is readable (status < 0:
  // libuv's error), until Stop().
  void Start(napi_env env, int fd, void (*on_readable)(void*, int), void* context) {
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    handle_ = new uv_poll_t;
    handle_->data = this;
    on_readable_ = on_readable;
    context_ = context;
    uv_poll_init(loop, handle_, fd);
    uv_poll_start(handle_, UV_READABLE, [](uv_poll_t* handle, int status, int) {
      auto* self = static_cast<ReadablePoll*>(handle->data);
      self->on_readable_(self->context_, status);
    });
  }

  // Whether it was watching.
  bool Stop() {
    if (handle_ == nullptr) return false;
    uv_poll_stop(handle_);
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
    return true;
  }

 private:
  uv_poll_t* handle_ = nullptr;
  void (*on_readable_)(void*, int) = nullptr;
  void* context_ = nullptr;
};
