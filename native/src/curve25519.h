// Ed25519 verification and X25519 agreement on libsodium, for first contact.
#pragma once
#include <napi.h>

void RegisterCurve25519(Napi::Env env, Napi::Object exports);
