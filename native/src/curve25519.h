// Ed25519 verification and X25519 agreement on libsodium, on raw keys: a first contact's SYN
// signature, credentials signed by an issuing key, and pair keys.
#pragma once
#include <napi.h>

void RegisterCurve25519(Napi::Env env, Napi::Object exports);
