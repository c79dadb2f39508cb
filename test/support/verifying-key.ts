// What a verified credential holds for its agent's signing key (signKey, and the raw bytes of an
// Ed25519 key), made from a key object for tests that have no credential.
import type { KeyObject } from 'node:crypto';
import type { VerifiedCredential } from '../../agent/src/token/credential.ts';

export function verifyingKey(publicKey: KeyObject): Pick<VerifiedCredential, 'signKey' | 'signKeyRaw'> {
  const raw = publicKey.asymmetricKeyType === 'ed25519' ? Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url') : null;
  return { signKey: publicKey, signKeyRaw: raw };
}
