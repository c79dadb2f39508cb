import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { PresignedSyns } from '../../../agent/src/handshake/presigned-syns.ts';
import { NoncePool } from '../../../agent/src/protocol/proofs.ts';
import { synSignatureValid } from '../../../agent/src/protocol/syn-signature.ts';
import { tokenDigest } from '../../../agent/src/protocol/token-digest.ts';
import { packJws } from '../../../agent/src/protocol/wire.ts';
import { generateKeyPair } from '../../../agent/src/identity/key-generation.ts';
import { verifyingKey } from '../../support/verifying-key.ts';

const TOKEN = packJws('eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ3ZWIifQ.c2lnbmF0dXJl');
const OTHER_TOKEN = packJws('eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJiYXRjaCJ9.c2lnbmF0dXJl');

describe('SYN signatures made ahead', () => {
  const { privateKey, publicKey } = generateKeyPair('ed25519');

  it('a first contact finds none; once a handshake ended, the next finds one, valid for its token, used once', async () => {
    let time = 1_800_000_000_000;
    const syns = new PresignedSyns(new NoncePool(), () => time, 10);
    assert.equal(syns.take(privateKey, TOKEN), null, 'nothing ready before the first');
    await nextTurn();
    assert.equal(syns.take(privateKey, TOKEN), null, 'none made while no handshake ended');
    syns.handshakeEnded();
    assert.equal(syns.take(privateKey, TOKEN), null, 'none made before the verdicts in hand left');
    syns.handshakeEnded();
    await nextTurn();
    time += 4_000;
    const ready = syns.take(privateKey, TOKEN);
    assert.ok(ready);
    assert.equal(ready.time, 1_800_000_000);
    assert.equal(synSignatureValid(verifyingKey(publicKey), ready.nonce, ready.time, tokenDigest(TOKEN), ready.signature), true);
    assert.equal(syns.take(privateKey, TOKEN), null, 'each is used once');
    assert.equal(syns.take(privateKey, OTHER_TOKEN), null, 'another token has its own');
    syns.handshakeEnded();
    await nextTurn();
    const next = syns.take(privateKey, TOKEN);
    assert.ok(next);
    assert.notDeepEqual(next.nonce, ready.nonce, 'a fresh nonce each time');
    assert.equal(synSignatureValid(verifyingKey(publicKey), next.nonce, next.time, tokenDigest(TOKEN), next.signature), true);
  });

  it('a signature older than its maximum age, or from a clock that went back, is not used', async () => {
    let time = 1_800_000_000_000;
    const syns = new PresignedSyns(new NoncePool(), () => time, 10);
    syns.take(privateKey, TOKEN);
    syns.handshakeEnded();
    await nextTurn();
    time += 11_000;
    assert.equal(syns.take(privateKey, TOKEN), null, 'too old');
    syns.handshakeEnded();
    await nextTurn();
    time -= 2_000;
    assert.equal(syns.take(privateKey, TOKEN), null, 'made in the future of this clock');
  });
});
