// The peer verifier's expiry: a credential or token is refused from the second it expires, whether
// the result is cached or computed afresh. The token layer's clock-skew leeway once let a
// retransmitted SYN through right after its first copy was refused from the cache.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PeerVerifier } from '../../../agent/src/handshake/peer-verifier.ts';
import { Refusal } from '../../../agent/src/handshake/reasons.ts';
import { packJws } from '../../../agent/src/protocol/wire.ts';
import { createAgent, createDomain, tokenFor } from '../../../scripts/lib/identities.ts';

describe('peer verifier expiry', () => {
  it('refuses a credential or token from its exp on, cached or fresh, with no leeway at the end', async () => {
    const domain = await createDomain('expiry.synpass');
    const start = Math.floor(Date.now() / 1000);
    const web = await createAgent(domain, 'web', { ttlSeconds: 120, nowSeconds: start });
    const api = await createAgent(domain, 'api');
    const credential = packJws(web.credentialCompact);
    const shortToken = packJws(await tokenFor(web, 'spiffe://expiry.synpass/web', undefined, { nowSeconds: start, ttlSeconds: 60 }));
    const longToken = packJws(await tokenFor(web, 'spiffe://expiry.synpass/web', undefined, { nowSeconds: start, ttlSeconds: 600 }));
    const reasonAt = (verifier: PeerVerifier, token = shortToken): string => {
      const outcome = verifier.verify(credential, token);
      if (outcome instanceof Refusal) return outcome.reason;
      verifier.rememberToken(token, outcome);
      return 'ok';
    };
    let clock = start;
    const cached = new PeerVerifier(domain.bundles, { kex: api.kex, kexRaw: api.credential.kexRaw }, () => clock);
    assert.equal(reasonAt(cached), 'ok');
    clock = start + 59;
    assert.equal(reasonAt(cached), 'ok', 'a second before the token expires');
    clock = start + 60;
    assert.equal(reasonAt(cached), 'expired-token', 'cached: refused at its exp');
    assert.equal(reasonAt(new PeerVerifier(domain.bundles, { kex: api.kex, kexRaw: api.credential.kexRaw }, () => clock)), 'expired-token', 'fresh: refused at its exp, inside the 30 s leeway');
    clock = start + 119;
    assert.equal(reasonAt(cached, longToken), 'ok', 'a second before the credential expires');
    clock = start + 125;
    assert.equal(reasonAt(cached, longToken), 'expired-credential', 'cached');
    assert.equal(reasonAt(cached, longToken), 'expired-credential', 'again, once the cache let go of it');
    assert.equal(reasonAt(new PeerVerifier(domain.bundles, { kex: api.kex, kexRaw: api.credential.kexRaw }, () => clock), longToken), 'expired-credential', 'fresh');
  });
});
