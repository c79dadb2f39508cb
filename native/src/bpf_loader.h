// The kernel fast path's loader and map access (libbpf), see bpf_loader.cc.
#pragma once
#include <napi.h>

void RegisterFastPath(Napi::Env env, Napi::Object exports);
