import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { loadBinding } from '../../../agent/src/native/addon.ts';
import { computeProof, proofValid } from '../../../agent/src/protocol/proofs.ts';
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
