import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { calculateJwkThumbprint, createLocalJWKSet, exportJWK, jwtVerify, SignJWT, UnsecuredJWT, importJWK } from 'jose';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createPublicKey } from 'node:crypto';
import { inspectCredential, issueCredential, verifyCredential } from '../../../agent/src/token/credential.ts';
import { CA_KEY_FILE } from '../../../agent/src/identity/issuance.ts';
import { readPrivateKey } from '../../../agent/src/identity/key-files.ts';
import { TokenError } from '../../../agent/src/token/errors.ts';
import { verifyIdentityToken } from '../../../agent/src/token/identity-token.ts';
import { createAgent, createDomain, reissued, tokenFor, type TestAgent, type TestDomain } from '../../../scripts/lib/identities.ts';
import { generateKeyPair } from '../../../agent/src/identity/key-generation.ts';

const now = () => Math.floor(Date.now() / 1000);

function rejects(fn: () => unknown, code: string): void {
  assert.throws(fn, (error: unknown) => error instanceof TokenError && error.code === code);
}

describe('credentials and identity tokens', () => {
  let domain: TestDomain;
  let rogue: TestDomain;
  let web: TestAgent;
  let api: TestAgent;

  before(async () => {
    domain = await createDomain('unit.synpass');
    rogue = await createDomain('rogue.example');
    web = await createAgent(domain, 'web');
    api = await createAgent(domain, 'api');
  });

  for (const [signingKey, alg, kty] of [
    ['ed25519', 'EdDSA', 'OKP'],
    ['p256', 'ES256', 'EC'],
  ] as const) {
    it(`jose verifies our credential with the trust bundle, and our token with the credential key (interop, ${signingKey} agent key)`, async () => {
      const agent = await createAgent(domain, `interop-${signingKey}`, { signingKey });
      const bundle = JSON.parse(readFileSync(join(domain.directory, 'unit.synpass.jwks.json'), 'utf8')) as { keys: [] };
      const credential = await jwtVerify(agent.credentialCompact, createLocalJWKSet(bundle), { issuer: 'unit.synpass' });
      assert.equal(credential.payload.sub, `spiffe://unit.synpass/agent/interop-${signingKey}`);
      const sigJwk = (credential.payload.cnf as { sig: Record<string, string> }).sig;
      assert.equal(sigJwk.kty, kty);
      const token = await tokenFor(agent, 'spiffe://unit.synpass/web', { 'app.tier': 'frontend' });
      const verified = await jwtVerify(token, await importJWK(sigJwk, alg), {
        issuer: 'unit.synpass',
        typ: 'synpass-id+jwt',
        algorithms: [alg],
        requiredClaims: ['jti', 'exp', 'iat', 'sub'],
      });
      assert.deepEqual(verified.payload.attrs, { 'app.tier': 'frontend' });
      assert.deepEqual(verified.payload.prov, { static: ['app.tier'] });
      // And our own verifier agrees.
      assert.equal(verifyIdentityToken(token, agent.credential, now()).subject, 'spiffe://unit.synpass/web');
    });
  }

  it('accepts a valid token and reports attributes, provenance and the trust domain', async () => {
    const token = await tokenFor(web, 'spiffe://unit.synpass/web', { 'app.tier': 'frontend', 'host.name': 'vm' });
    const identity = verifyIdentityToken(token, web.credential, now());
    assert.equal(identity.subject, 'spiffe://unit.synpass/web');
    assert.equal(identity.attributes['app.tier'], 'frontend');
    assert.equal(identity.attributes['synpass.trust-domain'], 'unit.synpass');
    assert.equal(identity.provenance['host.name'], 'static');
    assert.equal(identity.agent, 'spiffe://unit.synpass/agent/web');
  });

  it('refuses alg none', () => {
    const unsigned = new UnsecuredJWT({ sub: 'spiffe://unit.synpass/web' }).setIssuer('unit.synpass').setExpirationTime('5m').encode();
    rejects(() => verifyIdentityToken(unsigned, web.credential, now()), 'bad-alg');
    rejects(() => verifyCredential(unsigned, domain.bundles, now()), 'bad-alg');
  });

  it('refuses HS256 signed with the public key as the secret (key confusion)', async () => {
    const publicPem = createPublicKey(web.signKey).export({ format: 'pem', type: 'spki' });
    const forged = await new SignJWT({ attrs: {}, prov: {} })
      .setProtectedHeader({ alg: 'HS256', kid: web.credential.signKid, typ: 'synpass-id+jwt' })
      .setIssuer('unit.synpass')
      .setSubject('spiffe://unit.synpass/web')
      .setJti('x')
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(Buffer.from(publicPem));
    rejects(() => verifyIdentityToken(forged, web.credential, now()), 'bad-alg');
  });

  it('refuses a forged signature', async () => {
    const token = await tokenFor(web, 'spiffe://unit.synpass/web');
    const [h, p, s] = token.split('.') as [string, string, string];
    const flipped = `${h}.${p}.${s.slice(0, 10)}${s[10] === 'A' ? 'B' : 'A'}${s.slice(11)}`;
    rejects(() => verifyIdentityToken(flipped, web.credential, now()), 'bad-signature');
    const otherPayload = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), sub: 'spiffe://unit.synpass/admin' })).toString('base64url');
    rejects(() => verifyIdentityToken(`${h}.${otherPayload}.${s}`, web.credential, now()), 'bad-signature');
    // EdDSA is verified by libsodium in the addon, which takes 64 bytes only: any other length is a bad signature too.
    for (const signature of ['', s.slice(0, 40), `${s}AAAA`]) rejects(() => verifyIdentityToken(`${h}.${p}.${signature}`, web.credential, now()), 'bad-signature');
  });

  it('refuses an expired token and a token from the future', async () => {
    const expired = await tokenFor(web, 'spiffe://unit.synpass/web', {}, { nowSeconds: now() - 3600, ttlSeconds: 60 });
    rejects(() => verifyIdentityToken(expired, web.credential, now()), 'expired');
    const future = await tokenFor(web, 'spiffe://unit.synpass/web', {}, { nowSeconds: now() + 3600 });
    rejects(() => verifyIdentityToken(future, web.credential, now()), 'not-yet-valid');
  });

  it('refuses attributes outside the namespaces the credential allows', async () => {
    const token = await tokenFor(web, 'spiffe://unit.synpass/web', { 'k8s.namespace': 'prod' });
    rejects(() => verifyIdentityToken(token, web.credential, now()), 'namespace-not-allowed');
  });

  it('refuses a valid token glued to another agent credential', async () => {
    const token = await tokenFor(web, 'spiffe://unit.synpass/web');
    rejects(() => verifyIdentityToken(token, api.credential, now()), 'unknown-kid');
  });

  it('refuses a subject outside the credential domain', async () => {
    const token = await tokenFor(web, 'spiffe://other.domain/web');
    rejects(() => verifyIdentityToken(token, web.credential, now()), 'bad-claims');
  });

  it('refuses credentials from an untrusted domain, expired ones, and malformed ones', async () => {
    const mallory = await createAgent(rogue, 'mallory');
    rejects(() => verifyCredential(mallory.credentialCompact, domain.bundles, now()), 'untrusted-domain');
    const old = await createAgent(domain, 'old', { nowSeconds: now() - 7200, ttlSeconds: 3600 });
    rejects(() => verifyCredential(old.credentialCompact, domain.bundles, now()), 'expired');
    rejects(() => verifyCredential('not.a.jwt', domain.bundles, now()), 'malformed-token');
    rejects(() => verifyCredential('a.b', domain.bundles, now()), 'malformed-token');
    rejects(() => verifyCredential(web.credentialCompact.slice(0, 100), domain.bundles, now()), 'malformed-token');
  });

  for (const [caKeyType, alg, kty, crv] of [
    [undefined, 'EdDSA', 'OKP', 'Ed25519'],
    ['p256', 'ES256', 'EC', 'P-256'],
  ] as const) {
    it(`a trust domain's CA key is ${crv}${caKeyType === undefined ? ' by default' : ' on request'}: its bundle names ${alg}, jose and our verifier accept what it signs, and refuse it with one signature bit flipped`, async () => {
      const name = `ca-${crv.toLowerCase()}.synpass`;
      const caDomain = await createDomain(name, caKeyType);
      const bundle = JSON.parse(readFileSync(join(caDomain.directory, `${name}.jwks.json`), 'utf8')) as { keys: { kty: string; crv: string; alg: string }[] };
      assert.deepEqual(
        bundle.keys.map(({ kty: keyType, crv: curve, alg: algorithm }) => ({ keyType, curve, algorithm })),
        [{ keyType: kty, curve: crv, algorithm: alg }],
      );
      const agent = await createAgent(caDomain, 'web');
      const header = JSON.parse(Buffer.from(agent.credentialCompact.split('.')[0]!, 'base64url').toString('utf8')) as { alg: string };
      assert.equal(header.alg, alg);
      await jwtVerify(agent.credentialCompact, createLocalJWKSet(bundle as never), { issuer: name });
      assert.equal(verifyCredential(agent.credentialCompact, caDomain.bundles, now()).subject, `spiffe://${name}/agent/web`);
      const [h, p, s] = agent.credentialCompact.split('.') as [string, string, string];
      const signature = Buffer.from(s, 'base64url');
      signature[10]! ^= 0x01;
      rejects(() => verifyCredential(`${h}.${p}.${signature.toString('base64url')}`, caDomain.bundles, now()), 'bad-signature');
    });
  }

  it('refuses a credential whose signing key is not Ed25519 or P-256, and a token whose alg is not its key type', async () => {
    const caKey = readPrivateKey(join(domain.directory, CA_KEY_FILE));
    const kex = generateKeyPair('x25519').publicKey;
    const x25519AsSigningKey = await issueCredential({
      signerKey: caKey,
      signerKid: await calculateJwkThumbprint(await exportJWK(createPublicKey(caKey))),
      trustDomain: 'unit.synpass',
      agentId: 'odd',
      signPublicKey: generateKeyPair('x25519').publicKey,
      kexPublicKey: kex,
      namespaces: ['app'],
      ttlSeconds: 600,
    });
    rejects(() => verifyCredential(x25519AsSigningKey, domain.bundles, now()), 'bad-claims');
    // web's key is Ed25519: a header claiming ES256 is refused before any verification.
    const token = await tokenFor(web, 'spiffe://unit.synpass/web');
    const [h, p, s] = token.split('.') as [string, string, string];
    const header = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(h, 'base64url').toString()), alg: 'ES256' })).toString('base64url');
    rejects(() => verifyIdentityToken(`${header}.${p}.${s}`, web.credential, now()), 'bad-alg');
  });

  it('reads a credential\'s Curve25519 keys as raw bytes and refuses any that is not 32 bytes of base64url (bad-claims)', async () => {
    const sig = web.credential.signKey.export({ format: 'jwk' });
    assert.deepEqual(web.credential.signKeyRaw, Buffer.from(sig.x!, 'base64url'));
    assert.equal(web.credential.signAlgorithm, 'EdDSA');
    const p256 = await createAgent(domain, 'raw-p256', { signingKey: 'p256' });
    assert.equal(p256.credential.signKeyRaw, null);
    assert.equal(p256.credential.signAlgorithm, 'ES256');
    // The key object is made when first asked for, from the same claim.
    const fresh = verifyCredential(web.credentialCompact, domain.bundles, now());
    assert.ok(fresh.signKey.equals(createPublicKey(web.signKey)));
    assert.deepEqual(fresh.kexRaw, Buffer.from(createPublicKey(web.kex).export({ format: 'jwk' }).x!, 'base64url'));
    type Keys = { sig: Record<string, string>; kex?: Record<string, string> };
    for (const [what, edit] of [
      ['a key-agreement key on another curve', (k: Keys) => ({ ...k, kex: { ...k.kex, crv: 'Ed25519' } })],
      ['a key-agreement key of 31 bytes', (k: Keys) => ({ ...k, kex: { ...k.kex, x: k.kex!.x!.slice(0, 42) } })],
      ['a key-agreement key of 33 bytes', (k: Keys) => ({ ...k, kex: { ...k.kex, x: `${k.kex!.x!}AA` } })],
      ['a key-agreement key with characters outside base64url', (k: Keys) => ({ ...k, kex: { ...k.kex, x: `+${k.kex!.x!.slice(1)}` } })],
      ['no key-agreement key', (k: Keys) => ({ sig: k.sig })],
      ['an Ed25519 signing key of 31 bytes', (k: Keys) => ({ ...k, sig: { ...k.sig, x: k.sig.x!.slice(0, 42) } })],
    ] as const) {
      const compact = await reissued(domain, web.credentialCompact, (claims) => ({ ...claims, cnf: edit(claims.cnf as Keys) }));
      assert.throws(() => verifyCredential(compact, domain.bundles, now()), (error: unknown) => error instanceof TokenError && error.code === 'bad-claims', what);
    }
    assert.ok(verifyCredential(await reissued(domain, web.credentialCompact, (claims) => claims), domain.bundles, now()), 'signed again unchanged, it verifies');
  });

  it('inspect shows a credential\'s claims and says whether, and why not, the bundles verify it', async () => {
    const report = inspectCredential(web.credentialCompact, domain.bundles, now());
    assert.equal(report.subject, 'spiffe://unit.synpass/agent/web');
    assert.equal(report.signingAlgorithm, 'EdDSA (Ed25519)');
    assert.deepEqual(report.namespaces, ['app', 'host']);
    assert.equal(report.verified, true);
    assert.equal(report.problem, null);
    const p256 = await createAgent(domain, 'inspect-p256', { signingKey: 'p256' });
    assert.equal(inspectCredential(p256.credentialCompact, null, now()).signingAlgorithm, 'ES256 (P-256)');
    assert.equal(inspectCredential(p256.credentialCompact, null, now()).problem, 'no trust bundles given');
    const issued = now() - 7200;
    const old = await createAgent(domain, 'inspect-old', { nowSeconds: issued, ttlSeconds: 3600 });
    const expired = inspectCredential(old.credentialCompact, domain.bundles, now());
    assert.equal(expired.verified, false);
    assert.match(expired.problem ?? '', /^expired: /);
    assert.equal(expired.expiresAt, new Date((issued + 3600) * 1000).toISOString());
    assert.match(inspectCredential(web.credentialCompact, rogue.bundles, now()).problem ?? '', /^untrusted-domain: /);
    assert.throws(() => inspectCredential('not.a.jwt', domain.bundles, now()), (error: unknown) => error instanceof TokenError);
  });

  it('refuses an identity token presented as a credential', async () => {
    const token = await tokenFor(web, 'spiffe://unit.synpass/web');
    rejects(() => verifyCredential(token, domain.bundles, now()), 'bad-claims');
  });
});
