// HMAC-SHA256 for handshake proofs, on the same OpenSSL that Node itself runs.
#pragma once
#include <napi.h>

void RegisterHmac(Napi::Env env, Napi::Object exports);
