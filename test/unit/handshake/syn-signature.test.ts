import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, sign } from 'node:crypto';
import { signSyn, synSignatureValid } from '../../../agent/src/protocol/syn-signature.ts';
import { generateKeyPair } from '../../../agent/src/identity/key-generation.ts';
import { ed25519Sign } from '../../../agent/src/token/curve25519-keys.ts';
import { verifyingKey } from '../../support/verifying-key.ts';

describe('SYN signature', () => {
  for (const [name, pair] of [
    ['ES256 (P-256)', generateKeyPair('p256')],
    ['EdDSA (Ed25519)', generateKeyPair('ed25519')],
  ] as const) {
    it(`${name}: verifies over nonce, time and token digest, and over nothing else`, () => {
      const key = verifyingKey(pair.publicKey);
      const nonce = randomBytes(16);
      const tokenDigest = randomBytes(32);
      const signature = signSyn(pair.privateKey, nonce, 1_800_000_000, tokenDigest);
      assert.equal(signature.length, 64);
      assert.equal(synSignatureValid(key, nonce, 1_800_000_000, tokenDigest, signature), true);
      const otherNonce = Buffer.from(nonce);
      otherNonce[15]! ^= 1;
      assert.equal(synSignatureValid(key, otherNonce, 1_800_000_000, tokenDigest, signature), false, 'nonce');
      assert.equal(synSignatureValid(key, nonce, 1_800_000_001, tokenDigest, signature), false, 'time');
      assert.equal(synSignatureValid(key, nonce, 1_800_000_000, randomBytes(32), signature), false, 'token');
      assert.equal(synSignatureValid(key, nonce, 1_800_000_000, tokenDigest, signature.subarray(0, 63)), false, 'length');
      for (const type of ['p256', 'ed25519'] as const) {
        const otherKey = verifyingKey(generateKeyPair(type).publicKey);
        assert.equal(synSignatureValid(otherKey, nonce, 1_800_000_000, tokenDigest, signature), false, `another ${type} key`);
      }
      for (const bit of [0, 255, 511]) {
        const flipped = Buffer.from(signature);
        flipped[bit >> 3]! ^= 1 << (bit & 7);
        assert.equal(synSignatureValid(key, nonce, 1_800_000_000, tokenDigest, flipped), false, `signature bit ${bit} flipped`);
      }
    });
  }

  it('EdDSA: libsodium (the addon) makes the signature node:crypto makes, byte for byte, and refuses a key that is not Ed25519', () => {
    const pairs = [generateKeyPair('ed25519'), generateKeyPair('ed25519')];
    for (let i = 0; i < 64; i++) {
      const { privateKey } = pairs[i % 2]!;
      const message = randomBytes(i * 3);
      assert.deepEqual(ed25519Sign(privateKey, message), sign(null, message, privateKey), `message of ${message.length} bytes`);
    }
    assert.throws(() => ed25519Sign(generateKeyPair('p256').privateKey, Buffer.alloc(8)), /needs an Ed25519 private key/);
    assert.throws(() => ed25519Sign(pairs[0]!.publicKey, Buffer.alloc(8)), /needs an Ed25519 private key/);
  });

  it('EdDSA: libsodium (the addon) and node:crypto agree, on signatures that verify and on those that do not', () => {
    const pair = generateKeyPair('ed25519');
    const key = verifyingKey(pair.publicKey);
    const tokenDigest = randomBytes(32);
    for (let i = 0; i < 64; i++) {
      const nonce = randomBytes(16);
      const signature = signSyn(pair.privateKey, nonce, 1_800_000_000 + i, tokenDigest);
      // The odd ones damaged (a byte of R or of S); of the rest, some checked against another time.
      if (i % 4 === 1) signature[i % 32]! ^= 0x40;
      if (i % 4 === 3) signature[32 + (i % 32)]! ^= 0x40;
      const time = i % 8 === 2 ? 1_800_000_000 + i + 1 : 1_800_000_000 + i;
      const byNode = synSignatureValid({ signKey: pair.publicKey, signKeyRaw: null }, nonce, time, tokenDigest, signature);
      assert.equal(synSignatureValid(key, nonce, time, tokenDigest, signature), byNode, `signature ${i}`);
      assert.equal(byNode, i % 2 === 0 && i % 8 !== 2, `signature ${i} as made`);
    }
  });
});
