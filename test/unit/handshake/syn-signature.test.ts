import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { signSyn, synSignatureValid } from '../../../agent/src/protocol/syn-signature.ts';
import { generateKeyPair } from '../../../agent/src/identity/key-generation.ts';

describe('SYN signature', () => {
  for (const [name, pair] of [
    ['ES256 (P-256)', generateKeyPair('p256')],
    ['EdDSA (Ed25519)', generateKeyPair('ed25519')],
  ] as const) {
    it(`${name}: verifies over nonce, time and token digest, and over nothing else`, () => {
      const nonce = randomBytes(16);
      const tokenDigest = randomBytes(32);
      const signature = signSyn(pair.privateKey, nonce, 1_800_000_000, tokenDigest);
      assert.equal(signature.length, 64);
      assert.equal(synSignatureValid(pair.publicKey, nonce, 1_800_000_000, tokenDigest, signature), true);
      const otherNonce = Buffer.from(nonce);
      otherNonce[15]! ^= 1;
      assert.equal(synSignatureValid(pair.publicKey, otherNonce, 1_800_000_000, tokenDigest, signature), false, 'nonce');
      assert.equal(synSignatureValid(pair.publicKey, nonce, 1_800_000_001, tokenDigest, signature), false, 'time');
      assert.equal(synSignatureValid(pair.publicKey, nonce, 1_800_000_000, randomBytes(32), signature), false, 'token');
      assert.equal(synSignatureValid(pair.publicKey, nonce, 1_800_000_000, tokenDigest, signature.subarray(0, 63)), false, 'length');
      const otherKey = generateKeyPair('p256').publicKey;
      assert.equal(synSignatureValid(otherKey, nonce, 1_800_000_000, tokenDigest, signature), false, 'key');
    });
  }
});
