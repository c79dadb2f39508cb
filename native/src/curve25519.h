// Ed25519 signatures and X25519 agreement on libsodium, on raw keys: a first contact's SYN
// signature (made and verified), credentials signed by an Ed25519 key, and pair keys.
#pragma once
#include <napi.h>

void RegisterCurve25519(Napi::Env env, Napi::Object exports);
