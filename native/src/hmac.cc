// HMAC-SHA256 for handshake proofs. node:crypto's createHmac costs 5-20 us per proof in the
// agent (a new context, a key object and an algorithm lookup on every call); here one MAC
// context is fetched once and re-keyed per call, about 1 us. It links against the OpenSSL that
// Node exports, so no second crypto library is loaded.
#include "hmac.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

namespace {

constexpr size_t kDigestBytes = 32;

struct MacContext {
  EVP_MAC* mac = nullptr;
  EVP_MAC_CTX* ctx = nullptr;
  OSSL_PARAM params[2];
  char digest[7] = "SHA256";

  // The digest is set once: passing it to every EVP_MAC_init makes OpenSSL 3 fetch SHA-256 by
  // name again on each call, which costs more than the MAC itself.
  bool Ready() {
    if (ctx != nullptr) return true;
    // Fetched once; a failed context creation retries with the same MAC instead of leaking it.
    if (mac == nullptr) mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (mac == nullptr) return false;
    ctx = EVP_MAC_CTX_new(mac);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (ctx == nullptr || !EVP_MAC_CTX_set_params(ctx, params)) {
      EVP_MAC_CTX_free(ctx);
      ctx = nullptr;
      return false;
    }
    return true;
  }
};

// One per thread: the agent calls from its JS thread; workers would get their own.
thread_local MacContext mac_context;

// hmacSha256(key, message, messageLength, out): writes the 32-byte MAC of the first
// `messageLength` bytes of `message` under `key` into `out`.
Napi::Value HmacSha256(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsNumber() ||
      !info[3].IsTypedArray()) {
    Napi::TypeError::New(env, "hmacSha256(key, message, messageLength, out): Uint8Array, Uint8Array, number, Uint8Array")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array key = info[0].As<Napi::Uint8Array>();
  Napi::Uint8Array message = info[1].As<Napi::Uint8Array>();
  int64_t length = info[2].As<Napi::Number>().Int64Value();
  Napi::Uint8Array out = info[3].As<Napi::Uint8Array>();
  if (out.ByteLength() < kDigestBytes || key.ByteLength() == 0 || length < 0 ||
      static_cast<uint64_t>(length) > message.ByteLength()) {
    Napi::RangeError::New(env, "hmacSha256: empty key, message length outside the message, or out shorter than 32 bytes")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  size_t written = 0;
  if (!mac_context.Ready() ||
      !EVP_MAC_init(mac_context.ctx, key.Data(), key.ByteLength(), nullptr) ||
      !EVP_MAC_update(mac_context.ctx, message.Data(), static_cast<size_t>(length)) ||
      !EVP_MAC_final(mac_context.ctx, out.Data(), &written, out.ByteLength()) || written != kDigestBytes) {
    Napi::Error::New(env, "hmacSha256: OpenSSL refused the operation").ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

}  // namespace

void RegisterHmac(Napi::Env env, Napi::Object exports) {
  exports.Set("hmacSha256", Napi::Function::New(env, HmacSha256));
}
