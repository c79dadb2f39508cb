import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, diffieHellman, generateKeyPairSync, hkdfSync, randomBytes } from 'node:crypto';
import { loadBinding } from '../../../agent/src/native/addon.ts';
import { computeProof, derivePairKey, proofValid } from '../../../agent/src/protocol/proofs.ts';
import { PROOF_BYTES } from '../../../agent/src/protocol/wire.ts';

describe('proof HMAC (addon)', () => {
  const { hmacSha256 } = loadBinding();

  it('matches the RFC 4231 test vectors', () => {
    const out = new Uint8Array(32);
    const message = Buffer.from('what do ya want for nothing?');
    hmacSha256(Buffer.from('Jefe'), message, message.length, out);
    assert.equal(Buffer.from(out).toString('hex'), '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
    // Test case 6: a key longer than the block size is hashed first.
    const long = Buffer.from('Test Using Larger Than Block-Size Key - Hash Key First');
    hmacSha256(Buffer.alloc(131, 0xaa), long, long.length, out);
    assert.equal(Buffer.from(out).toString('hex'), '60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54');
  });

  it('MACs only the given prefix of the message and agrees with node:crypto', () => {
    const out = new Uint8Array(32);
    for (let length = 0; length < 200; length += 7) {
      const key = randomBytes(32);
      const message = randomBytes(256);
      hmacSha256(key, message, length, out);
      assert.deepEqual(Buffer.from(out), createHmac('sha256', key).update(message.subarray(0, length)).digest());
    }
  });

  it('rejects a message length outside the message and a short output', () => {
    assert.throws(() => {
      hmacSha256(Buffer.alloc(32), Buffer.alloc(8), 9, new Uint8Array(32));
    }, RangeError);
    assert.throws(() => {
      hmacSha256(Buffer.alloc(32), Buffer.alloc(8), 8, new Uint8Array(31));
    }, RangeError);
    assert.throws(() => {
      hmacSha256(Buffer.alloc(0), Buffer.alloc(8), 8, new Uint8Array(32));
    }, RangeError);
  });

  it('a proof is the truncated HMAC over the label and the bound values, in a buffer of its own', () => {
    const key = randomBytes(32);
    const nonce = randomBytes(16);
    const first = computeProof(key, 'syn', [nonce, 7, 0xffffffff]);
    const expected = createHmac('sha256', key)
      .update(Buffer.concat([Buffer.from('syn'), nonce, Buffer.from([0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff])]))
      .digest()
      .subarray(0, PROOF_BYTES);
    assert.deepEqual(first, expected);
    computeProof(key, 'ack', [nonce]);
    assert.deepEqual(first, expected, 'a later proof must not overwrite an earlier one');
  });

  it('proofValid accepts exactly the proof over the same values', () => {
    const key = randomBytes(32);
    const nonce = randomBytes(16);
    const proof = computeProof(key, 'syn-ack', [1, nonce, 5, 6]);
    assert.equal(proofValid(key, 'syn-ack', [1, nonce, 5, 6], proof), true);
    assert.equal(proofValid(key, 'syn-ack', [0, nonce, 5, 6], proof), false, 'another value');
    assert.equal(proofValid(key, 'ack', [1, nonce, 5, 6], proof), false, 'another label');
    assert.equal(proofValid(randomBytes(32), 'syn-ack', [1, nonce, 5, 6], proof), false, 'another key');
    assert.equal(proofValid(key, 'syn-ack', [1, nonce, 5, 6], proof.subarray(0, 15)), false, 'short');
  });
});

describe('pair key HKDF (addon)', () => {
  const { hkdfSha256 } = loadBinding();

  it('matches the RFC 5869 test vectors', () => {
    // Test case 1: 42 bytes, two blocks of the expansion.
    const out = new Uint8Array(42);
    hkdfSha256(Buffer.alloc(22, 0x0b), Buffer.from('000102030405060708090a0b0c', 'hex'), Buffer.from('f0f1f2f3f4f5f6f7f8f9', 'hex'), out);
    assert.equal(Buffer.from(out).toString('hex'), '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865');
    // Test case 3: empty salt and info.
    const short = new Uint8Array(42);
    hkdfSha256(Buffer.alloc(22, 0x0b), Buffer.alloc(0), Buffer.alloc(0), short);
    assert.equal(Buffer.from(short).toString('hex'), '8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8');
  });

  it('one call does not carry its info into the next', () => {
    const first = new Uint8Array(32);
    const again = new Uint8Array(32);
    hkdfSha256(Buffer.alloc(32, 1), Buffer.alloc(8), Buffer.from('a'), first);
    hkdfSha256(Buffer.alloc(32, 1), Buffer.alloc(8), Buffer.from('b'), new Uint8Array(32));
    hkdfSha256(Buffer.alloc(32, 1), Buffer.alloc(8), Buffer.from('a'), again);
    assert.deepEqual(again, first);
  });

  it('rejects an empty input key and an output past 255 blocks', () => {
    assert.throws(() => {
      hkdfSha256(Buffer.alloc(0), Buffer.alloc(8), Buffer.alloc(0), new Uint8Array(32));
    }, RangeError);
    assert.throws(() => {
      hkdfSha256(Buffer.alloc(32), Buffer.alloc(8), Buffer.alloc(0), new Uint8Array(255 * 32 + 1));
    }, RangeError);
  });

  it('both ends derive the pair key node:crypto derives from their agreement', () => {
    const a = generateKeyPairSync('x25519');
    const b = generateKeyPairSync('x25519');
    const raw = (key: typeof a.publicKey) => Buffer.from(key.export({ format: 'jwk' }).x!, 'base64url');
    const [aRaw, bRaw] = [raw(a.publicKey), raw(b.publicKey)];
    const fromA = derivePairKey(a.privateKey, aRaw, bRaw);
    const fromB = derivePairKey(b.privateKey, bRaw, aRaw);
    const salt = Buffer.compare(aRaw, bRaw) <= 0 ? Buffer.concat([aRaw, bRaw]) : Buffer.concat([bRaw, aRaw]);
    // The agreement runs on libsodium now, on OpenSSL before: a pair key must not change with it.
    const shared = diffieHellman({ privateKey: a.privateKey, publicKey: b.publicKey });
    assert.deepEqual(fromA, Buffer.from(hkdfSync('sha256', shared, salt, Buffer.from('synpass pair key v1'), 32)));
    assert.deepEqual(fromB, fromA);
  });

  it('matches the RFC 7748 X25519 test vector, and refuses a peer key of small order', () => {
    const { x25519 } = loadBinding();
    const out = new Uint8Array(32);
    const alicePrivate = Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex');
    const bobPublic = Buffer.from('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f', 'hex');
    assert.equal(x25519(alicePrivate, bobPublic, out), true);
    assert.equal(Buffer.from(out).toString('hex'), '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742');
    // The point of order 1 (u = 1) gives an all-zero secret, which would make every such pair's key public.
    const smallOrder = Buffer.alloc(32);
    smallOrder[0] = 1;
    assert.equal(x25519(alicePrivate, smallOrder, out), false);
    assert.deepEqual(Buffer.from(out), Buffer.alloc(32), 'nothing of it is left');
    const a = generateKeyPairSync('x25519');
    const aRaw = Buffer.from(a.publicKey.export({ format: 'jwk' }).x!, 'base64url');
    assert.throws(() => derivePairKey(a.privateKey, aRaw, smallOrder), /small order/);
    assert.throws(() => x25519(alicePrivate, bobPublic.subarray(0, 31), out), TypeError);
  });
});
