// Curve25519 keys as libsodium (the addon, native/src/curve25519.cc) takes them: 32 raw bytes.
// An Ed25519 verification there takes half the time of the OpenSSL 3.0 that Node ships, which
// runs portable reference code (docs/protocol.md, Why Ed25519 by default).
import { createPublicKey, type KeyObject } from 'node:crypto';
import { loadBinding, type NativeBinding } from '../native/addon.ts';

const ED25519_SIGNATURE_BYTES = 64;
let verify: NativeBinding['ed25519Verify'] | undefined;
let sign: NativeBinding['ed25519Sign'] | undefined;
/** Each key object's raw bytes (a private key's own, a public key's point), read out once. */
const rawBytes = new WeakMap<KeyObject, Buffer>();
/** Each Ed25519 private key as libsodium signs with it: its seed, then its public key. */
const secretKeys = new WeakMap<KeyObject, Buffer>();

/** The 32 raw bytes of an Ed25519 or X25519 key object: the private scalar of a private key. */
export function rawKeyBytes(key: KeyObject): Buffer {
  let raw = rawBytes.get(key);
  if (raw === undefined) {
    const jwk = key.export({ format: 'jwk' });
    raw = Buffer.from((key.type === 'private' ? jwk.d : jwk.x) ?? '', 'base64url');
    rawBytes.set(key, raw);
  }
  return raw;
}

/** Whether `signature` is the Ed25519 signature of the raw public key over `message`; any other length is not. */
export function ed25519SignatureValid(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (signature.length !== ED25519_SIGNATURE_BYTES) return false;
  verify ??= loadBinding().ed25519Verify;
  return verify(publicKey, message, signature);
}

/** The Ed25519 signature of `privateKey` (an Ed25519 key object) over `message`: the one node:crypto makes, in about half its time. */
export function ed25519Sign(privateKey: KeyObject, message: Uint8Array): Buffer {
  let secretKey = secretKeys.get(privateKey);
  if (secretKey === undefined) {
    if (privateKey.asymmetricKeyType !== 'ed25519' || privateKey.type !== 'private') throw new TypeError('ed25519Sign needs an Ed25519 private key');
    secretKey = Buffer.concat([rawKeyBytes(privateKey), rawKeyBytes(createPublicKey(privateKey))]);
    secretKeys.set(privateKey, secretKey);
  }
  sign ??= loadBinding().ed25519Sign;
  const signature = Buffer.allocUnsafe(ED25519_SIGNATURE_BYTES);
  sign(secretKey, message, signature);
  return signature;
}
