// The deny list (parsing, and the verifier refusing a listed credential or key even from its
// cache) and the node facts an issuer attests, which peers see as node.* attributes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PeerVerifier, type VerifiedPeer } from '../../../agent/src/handshake/peer-verifier.ts';
import { Refusal } from '../../../agent/src/handshake/reasons.ts';
import { buildCredentialRequest } from '../../../agent/src/issuer/credential-request.ts';
import { Issuer } from '../../../agent/src/issuer/issuer.ts';
import { JoinTokenAttestor } from '../../../agent/src/issuer/attestors/join-token.ts';
import { loadCertifiedIssuingKey } from '../../../agent/src/issuer/issuing-key.ts';
import { packJws } from '../../../agent/src/protocol/wire.ts';
import { verifyCredential } from '../../../agent/src/token/credential.ts';
import { DenyListError, EMPTY_DENY_LIST, parseDenyList } from '../../../agent/src/token/deny-list.ts';
import { issueIdentityToken } from '../../../agent/src/token/identity-token.ts';
import { loadTrustBundles } from '../../../agent/src/token/trust-bundle.ts';
import { attributes, createAgent, createDomain, tokenFor } from '../../../scripts/lib/identities.ts';
import { createIssuerFixture } from '../../../scripts/lib/issuer-fixture.ts';
import { scratchDirectory } from '../../../scripts/lib/scratch.ts';
import { generateKeyPair } from '../../../agent/src/identity/key-generation.ts';

const now = (): number => Math.floor(Date.now() / 1000);

describe('deny list', () => {
  it('parses credential ids and key thumbprints, and refuses anything else with the file named', () => {
    const list = parseDenyList('credentials: [7d1c2f9e-1]\nkeys:\n  - abcDEF_-123\n', '/etc/synpass/deny.yaml');
    assert.deepEqual([...list.credentials], ['7d1c2f9e-1']);
    assert.deepEqual([...list.keys], ['abcDEF_-123']);
    assert.match(list.revision, /^[0-9a-f]{12}$/);
    assert.deepEqual([...parseDenyList('', 'empty').keys], []);
    for (const [text, problem] of [
      ['keys: nope', /keys must be a list of ids/],
      ['credentials: [1, 2]', /credentials must be a list of ids/],
      ['agents: [x]', /unknown field agents/],
      ['[a, b]', /must be a mapping/],
      ['keys: [a b]', /keys must be a list/],
      ['{ unclosed', /not YAML or JSON/],
    ] as const) {
      assert.throws(() => parseDenyList(text, '/etc/synpass/deny.yaml'), (error: unknown) => error instanceof DenyListError && error.message.startsWith('/etc/synpass/deny.yaml: ') && problem.test(error.message), text);
    }
  });

  it('a listed key or credential is refused on the next verification, cached or not', async () => {
    const domain = await createDomain('deny.synpass');
    const web = await createAgent(domain, 'web');
    const api = await createAgent(domain, 'api');
    const verifier = new PeerVerifier(domain.bundles, { kex: api.kex, kexRaw: api.credential.kexRaw }, now);
    const credential = packJws(web.credentialCompact);
    const token = packJws(await tokenFor(web, 'spiffe://deny.synpass/web'));
    assert.ok(!(verifier.verify(credential, token) instanceof Refusal), 'verifies before the list names it');
    verifier.denyList = parseDenyList(`keys: [${web.credential.signKid}]`, 'deny');
    const byKey = verifier.verify(credential, token);
    assert.ok(byKey instanceof Refusal);
    assert.equal(byKey.reason, 'revoked-credential');
    assert.match(byKey.detail, /spiffe:\/\/deny.synpass\/agent\/web: key .* is on the deny list/);
    verifier.denyList = parseDenyList(`credentials: [${web.credential.jti!}]`, 'deny');
    assert.equal((verifier.verify(credential, token) as Refusal).reason, 'revoked-credential');
    verifier.denyList = EMPTY_DENY_LIST;
    assert.ok(!(verifier.verify(credential, token) instanceof Refusal), 'an emptied list lets it through again');
  });
});

describe('node facts from the issuer', () => {
  it('become node.* attributes of the peer with the issuer as provenance; a token cannot assert node.*', async () => {
    const fixture = await createIssuerFixture(scratchDirectory('node-facts'), 'facts.synpass', ['127.0.0.1']);
    const bundles = loadTrustBundles(fixture.bundles);
    const loaded = await loadCertifiedIssuingKey(fixture.issuingKey, 'facts.synpass', bundles, now());
    const issuer = new Issuer({ trustDomain: 'facts.synpass', issuingKey: loaded.key, certificate: loaded.certificate, bundles, attestors: [new JoinTokenAttestor(fixture.joinTokens)], ttlSeconds: 600, renewalGraceSeconds: 0 });
    const sign = generateKeyPair('ed25519');
    const kex = generateKeyPair('x25519');
    const { token: joinToken, record } = fixture.joinTokens.create({ agent: 'vm-9', namespaces: ['app'], ttlSeconds: 600, nowSeconds: now() });
    const issued = await issuer.issue(await buildCredentialRequest({ signKey: sign.privateKey, kexPublicKey: kex.publicKey, attestation: { type: 'join-token', token: joinToken }, nowSeconds: now() }), now());
    const credential = verifyCredential(issued.credential, bundles, now());
    const token = await issueIdentityToken({ signKey: sign.privateKey, credential, subject: 'spiffe://facts.synpass/web', attributes: attributes({ 'app.name': 'web' }), ttlSeconds: 600, nowSeconds: now() });
    const verifier = new PeerVerifier(bundles, { kex: kex.privateKey, kexRaw: credential.kexRaw }, now);
    const peer = verifier.verify(packJws(issued.credential), packJws(token)) as VerifiedPeer;
    assert.equal(peer.identity.attributes['node.name'], 'vm-9');
    assert.equal(peer.identity.attributes['node.join-token'], record.id);
    assert.equal(peer.identity.provenance['node.name'], 'issuer (join-token)');
    assert.equal(peer.identity.attributes['app.name'], 'web');

    // A token asserting node.* is refused even where the credential would list such a namespace.
    const forged = await issueIdentityToken({ signKey: sign.privateKey, credential: { ...credential, namespaces: new Set(['app', 'node']) }, subject: 'spiffe://facts.synpass/web', attributes: attributes({ 'node.name': 'db-host' }), ttlSeconds: 600, nowSeconds: now() });
    const refused = verifier.verify(packJws(issued.credential), packJws(forged));
    assert.ok(refused instanceof Refusal);
    assert.equal(refused.reason, 'namespace-not-allowed');
  });
});
