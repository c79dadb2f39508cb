// HMAC-SHA256 for handshake proofs, and HKDF-SHA256 for pair keys. node:crypto's createHmac
// costs 5-20 us per proof in the agent (a new context, a key object and an algorithm lookup on
// every call); here one MAC context is fetched once and re-keyed per call, about 1 us. It links
// against the OpenSSL that Node exports, so no second crypto library is loaded.
#include "hmac.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
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

// The pair key's HKDF: node:crypto's hkdfSync costs 11-12 us here (argument checks and a secret
// key object per call), about 40% of deriving a pair key in a live agent; OpenSSL's HKDF from a
// context made once, under 3.
struct KdfContext {
  EVP_KDF_CTX* ctx = nullptr;

  bool Ready() {
    if (ctx != nullptr) return true;
    EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
    if (kdf == nullptr) return false;
    ctx = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);
    return ctx != nullptr;
  }
};

thread_local KdfContext kdf_context;

// hkdfSha256(ikm, salt, info, out): fills `out` (1 to 255 * 32 bytes) with HKDF-SHA256 (RFC 5869).
Napi::Value HkdfSha256(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsTypedArray() ||
      !info[3].IsTypedArray()) {
    Napi::TypeError::New(env, "hkdfSha256(ikm, salt, info, out): four Uint8Arrays").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array ikm = info[0].As<Napi::Uint8Array>();
  Napi::Uint8Array salt = info[1].As<Napi::Uint8Array>();
  Napi::Uint8Array context = info[2].As<Napi::Uint8Array>();
  Napi::Uint8Array out = info[3].As<Napi::Uint8Array>();
  if (ikm.ByteLength() == 0 || out.ByteLength() == 0 || out.ByteLength() > 255 * kDigestBytes) {
    Napi::RangeError::New(env, "hkdfSha256: empty input key, or output not 1 to 8160 bytes").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  char digest[] = "SHA256";
  OSSL_PARAM params[5];
  size_t count = 0;
  params[count++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  params[count++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, ikm.Data(), ikm.ByteLength());
  // OpenSSL refuses an empty octet string; an absent salt is RFC 5869's default (zeros), an absent info empty.
  if (salt.ByteLength() > 0) params[count++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, salt.Data(), salt.ByteLength());
  if (context.ByteLength() > 0) params[count++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, context.Data(), context.ByteLength());
  params[count] = OSSL_PARAM_construct_end();
  if (!kdf_context.Ready()) {
    Napi::Error::New(env, "hkdfSha256: OpenSSL has no HKDF").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  // Reset first: HKDF appends each call's info to the last one's.
  EVP_KDF_CTX_reset(kdf_context.ctx);
  if (EVP_KDF_derive(kdf_context.ctx, out.Data(), out.ByteLength(), params) != 1) {
    Napi::Error::New(env, "hkdfSha256: OpenSSL refused the operation").ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

}  // namespace

void RegisterHmac(Napi::Env env, Napi::Object exports) {
  exports.Set("hmacSha256", Napi::Function::New(env, HmacSha256));
  exports.Set("hkdfSha256", Napi::Function::New(env, HkdfSha256));
}
