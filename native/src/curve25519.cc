// Ed25519 signatures and X25519 agreement on libsodium. A first contact verifies one Ed25519
// signature (the SYN's) and makes one X25519 agreement on each side, on the connect's path, and
// the client signs its next first-contact SYN ahead. The OpenSSL that Node ships (3.0) runs
// portable reference code for Ed25519: a verification takes 104 us on the lab VM (`openssl speed
// ed25519`), 112 us through node:crypto; libsodium takes 48-56 us. Both take raw keys, so a
// peer's credential keys need no key object either.
#include "curve25519.h"

#include <sodium.h>

namespace {

bool IsBytes(const Napi::Value& value, size_t length) {
  return value.IsTypedArray() && value.As<Napi::Uint8Array>().ByteLength() == length;
}

// ed25519Verify(publicKey, message, signature): whether `signature` (64 bytes) is `publicKey`'s
// (32 bytes) over `message`. libsodium refuses non-canonical encodings and keys of small order.
Napi::Value Ed25519Verify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !IsBytes(info[0], crypto_sign_PUBLICKEYBYTES) || !info[1].IsTypedArray() ||
      !IsBytes(info[2], crypto_sign_BYTES)) {
    Napi::TypeError::New(env, "ed25519Verify(publicKey, message, signature): 32-byte Uint8Array, Uint8Array, 64-byte Uint8Array")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array key = info[0].As<Napi::Uint8Array>();
  Napi::Uint8Array message = info[1].As<Napi::Uint8Array>();
  Napi::Uint8Array signature = info[2].As<Napi::Uint8Array>();
  const int result = crypto_sign_verify_detached(signature.Data(), message.Data(), message.ByteLength(), key.Data());
  return Napi::Boolean::New(env, result == 0);
}

// ed25519Sign(secretKey, message, out): writes `secretKey`'s (64 bytes: the 32-byte seed, then the
// public key, as libsodium keeps it) signature over `message` into `out` (64 bytes). Ed25519 is
// deterministic: the signature is the one OpenSSL makes with the same key.
Napi::Value Ed25519Sign(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !IsBytes(info[0], crypto_sign_SECRETKEYBYTES) || !info[1].IsTypedArray() || !IsBytes(info[2], crypto_sign_BYTES)) {
    Napi::TypeError::New(env, "ed25519Sign(secretKey, message, out): 64-byte Uint8Array, Uint8Array, 64-byte Uint8Array").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array message = info[1].As<Napi::Uint8Array>();
  crypto_sign_detached(info[2].As<Napi::Uint8Array>().Data(), nullptr, message.Data(), message.ByteLength(), info[0].As<Napi::Uint8Array>().Data());
  return env.Undefined();
}

// x25519(privateKey, publicKey, out): writes the 32-byte X25519 shared secret into `out`;
// false, with `out` zeroed, when the peer's key has small order (the secret would be all zeros).
Napi::Value X25519(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !IsBytes(info[0], crypto_scalarmult_SCALARBYTES) || !IsBytes(info[1], crypto_scalarmult_BYTES) ||
      !IsBytes(info[2], crypto_scalarmult_BYTES)) {
    Napi::TypeError::New(env, "x25519(privateKey, publicKey, out): three 32-byte Uint8Arrays").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array out = info[2].As<Napi::Uint8Array>();
  const int result = crypto_scalarmult(out.Data(), info[0].As<Napi::Uint8Array>().Data(), info[1].As<Napi::Uint8Array>().Data());
  if (result != 0) sodium_memzero(out.Data(), out.ByteLength());
  return Napi::Boolean::New(env, result == 0);
}

}  // namespace

void RegisterCurve25519(Napi::Env env, Napi::Object exports) {
  // Picks the fastest implementations for this CPU; safe to call more than once.
  if (sodium_init() < 0) {
    Napi::Error::New(env, "libsodium failed to initialize").ThrowAsJavaScriptException();
    return;
  }
  exports.Set("ed25519Verify", Napi::Function::New(env, Ed25519Verify, "ed25519Verify"));
  exports.Set("ed25519Sign", Napi::Function::New(env, Ed25519Sign, "ed25519Sign"));
  exports.Set("x25519", Napi::Function::New(env, X25519, "x25519"));
}
