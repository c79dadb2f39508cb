import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { decodeMessage, encodeMessage, encodeTransient, FLAG_SYN_SIGNATURE, MessageType, packJws, WireError } from '../../../agent/src/protocol/wire.ts';

const jws = (size: number) => packJws(`${randomBytes(20).toString('base64url')}.${randomBytes(size).toString('base64url')}.${randomBytes(64).toString('base64url')}`);

describe('handshake messages on the wire', () => {
  const synAck = { type: MessageType.SynAck, flags: 1, credential: jws(400), token: jws(300), nonce: randomBytes(16), proof: randomBytes(16) } as const;

  it('round-trips every message type, the signed SYN included', () => {
    const syn = {
      type: MessageType.Syn,
      flags: FLAG_SYN_SIGNATURE,
      credential: jws(400),
      token: jws(300),
      nonce: randomBytes(16),
      time: 1_800_000_000,
      peerKeyId: null,
      proof: null,
      signature: randomBytes(64),
    } as const;
    for (const message of [syn, synAck, { type: MessageType.Ack, proof: randomBytes(16) } as const]) {
      const decoded = decodeMessage(encodeMessage(message));
      assert.deepEqual(encodeMessage(decoded), encodeMessage(message));
      assert.equal(decoded.type, message.type);
    }
    const body = encodeMessage(syn);
    assert.throws(() => decodeMessage(body.subarray(0, body.length - 1)), WireError, 'a truncated signature');
  });

  it('encodeTransient gives the same bytes in a shared buffer that the next call overwrites', () => {
    const first = encodeTransient(synAck);
    assert.deepEqual(first, encodeMessage(synAck));
    const copy = Buffer.from(first);
    encodeTransient({ type: MessageType.Ack, proof: Buffer.alloc(16, 7) });
    assert.notDeepEqual(first, copy, 'shared: valid only until the next call');
    // A message larger than the shared buffer gets a buffer of its own.
    const large = { ...synAck, credential: jws(3000), token: jws(2000) };
    assert.deepEqual(decodeMessage(encodeTransient(large)).type, MessageType.SynAck);
  });
});
