// Every key pair synpass makes comes from here. Node 20 gives a generated KeyObject the lock of the
// job that generated it, and that job's destructor takes the lock: when the collector finalises
// the job while the key is being exported (as JWK, which allocates under the lock), the main thread
// waits on itself for good. Node 22 removed the lock (nodejs/node#54751). Taking the new key out
// as JWK and importing it gives KeyObjects with a lock of their own; the job's dies with it.
import { createPrivateKey, createPublicKey, generateKeyPairSync, type JsonWebKey, type KeyObject } from 'node:crypto';

export type KeyPairKind = 'p256' | 'ed25519' | 'x25519' | 'rsa2048';

export interface KeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

// @types/node types generation encodings as PEM or DER only; Node takes `format: 'jwk'` since 15.9.
const generateAsJwk = generateKeyPairSync as unknown as (type: string, options: object) => { privateKey: JsonWebKey; publicKey: JsonWebKey };

const ALGORITHMS: Readonly<Record<KeyPairKind, readonly [type: string, options: object]>> = {
  p256: ['ec', { namedCurve: 'P-256' }],
  ed25519: ['ed25519', {}],
  x25519: ['x25519', {}],
  rsa2048: ['rsa', { modulusLength: 2048 }],
};

export function generateKeyPair(kind: KeyPairKind): KeyPair {
  const [type, options] = ALGORITHMS[kind];
  const jwks = generateAsJwk(type, { ...options, privateKeyEncoding: { format: 'jwk' }, publicKeyEncoding: { format: 'jwk' } });
  return {
    privateKey: createPrivateKey({ key: jwks.privateKey, format: 'jwk' }),
    publicKey: createPublicKey({ key: jwks.publicKey, format: 'jwk' }),
  };
}
