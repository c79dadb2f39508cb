// What a verified credential holds for its agent's signing key (signKey, and the raw bytes of an
// Ed25519 key), made from a key object for tests that have no credential.
import type { KeyObject } from 'node:crypto';
import type { VerifiedCredential } from '../../agent/src/token/credential.ts';
import { rawKeyBytes } from '../../agent/src/token/curve25519-keys.ts';

export function verifyingKey(publicKey: KeyObject): Pick<VerifiedCredential, 'signKey' | 'signKeyRaw'> {
  return { signKey: publicKey, signKeyRaw: publicKey.asymmetricKeyType === 'ed25519' ? rawKeyBytes(publicKey) : null };
}
