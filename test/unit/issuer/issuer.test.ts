// The issuer over real HTTPS on loopback, and the agent's renewer against it: join, renewal with
// fresh keys, and every refusal with its reason, counted and audited.
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, exportJWK } from 'jose';
import { CredentialRenewer, EnrollmentError } from '../../../agent/src/issuer/enrollment.ts';
import { buildCredentialRequest, buildRenewalProof } from '../../../agent/src/issuer/credential-request.ts';
import { Issuer } from '../../../agent/src/issuer/issuer.ts';
import { IssuanceRefusal } from '../../../agent/src/issuer/refusal.ts';
import { JoinTokenAttestor } from '../../../agent/src/issuer/attestors/join-token.ts';
import { createIssuingKey, IssuingKeyError, loadCertifiedIssuingKey } from '../../../agent/src/issuer/issuing-key.ts';
import { startIssuerServer, type IssuerServer } from '../../../agent/src/issuer/server.ts';
import { readPrivateKey } from '../../../agent/src/identity/key-files.ts';
import { createAgentLog } from '../../../agent/src/telemetry/log.ts';
import { EMPTY_DENY_LIST, parseDenyList } from '../../../agent/src/token/deny-list.ts';
import { verifyCredential } from '../../../agent/src/token/credential.ts';
import { loadTrustBundles, TrustBundleError } from '../../../agent/src/token/trust-bundle.ts';
import { createIssuerFixture, makeTlsCertificate, type IssuerFixture } from '../../../scripts/lib/issuer-fixture.ts';
import { scratchDirectory } from '../../../scripts/lib/scratch.ts';
import { generateKeyPair } from '../../../agent/src/identity/key-generation.ts';

const DOMAIN = 'issuer.synpass';
const now = (): number => Math.floor(Date.now() / 1000);

interface Line {
  audit?: string;
  reason?: string;
  subject?: string;
  attestation?: string;
}

function recordingLog() {
  const lines: string[] = [];
  const { log } = createAgentLog('info', { write: (line: string) => { lines.push(line); return true; }, on: () => undefined, flushSync: () => undefined });
  return { log, audits: () => lines.map((line) => JSON.parse(line) as Line).filter((line) => line.audit !== undefined) };
}

describe('issuer', () => {
  let fixture: IssuerFixture;
  let server: IssuerServer;
  let url: string;
  const recorded = recordingLog();

  const agentFiles = (name: string) => {
    const directory = scratchDirectory(`issuer-agent-${name}`);
    return { credential: join(directory, 'credential.jwt'), signingKey: join(directory, 'sign.key.pem'), keyAgreementKey: join(directory, 'kex.key.pem'), trustBundles: fixture.bundles };
  };
  const renewer = (files: ReturnType<typeof agentFiles>, joinTokenFile: string | null) =>
    new CredentialRenewer({ issuerUrl: url, tlsCa: fixture.tlsCertificate, evidence: { joinToken: joinTokenFile, kubernetesToken: null, cloudDocument: null, cloudSignature: null }, files, log: recorded.log });
  const post = (body: string): Promise<{ status: number; answer: Record<string, unknown> }> =>
    new Promise((resolve, reject) => {
      const call = request(`${url}/v1/credentials`, { method: 'POST', ca: readFileSync(fixture.tlsCertificate) }, (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => { resolve({ status: response.statusCode ?? 0, answer: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown> }); });
      });
      call.on('error', reject);
      call.end(body);
    });
  const metric = async (reason: string): Promise<number> => {
    const text = await server.registry.metrics();
    const match = new RegExp(`synpass_issuer_requests_total\\{result="(issued|refused)",reason="${reason}"\\} (\\d+)`).exec(text);
    return Number(match?.[2] ?? -1);
  };

  before(async () => {
    fixture = await createIssuerFixture(scratchDirectory('issuer'), DOMAIN, ['127.0.0.1']);
    const bundles = loadTrustBundles(fixture.bundles);
    const loaded = await loadCertifiedIssuingKey(fixture.issuingKey, DOMAIN, bundles, now());
    const issuer = new Issuer({ trustDomain: DOMAIN, issuingKey: loaded.key, certificate: loaded.certificate, bundles, attestors: [new JoinTokenAttestor(fixture.joinTokens)], ttlSeconds: 600, renewalGraceSeconds: 3600 });
    server = await startIssuerServer({ listen: '127.0.0.1:0', tlsCertificate: fixture.tlsCertificate, tlsKey: fixture.tlsKey, ratePerSource: 0, issuer, log: recorded.log });
    const address = server.server.address();
    assert.ok(address !== null && typeof address === 'object');
    url = `https://127.0.0.1:${address.port}`;
  });
  after(async () => { await server.close(); });

  it('joins with a join token, deletes it, and renews with fresh keys under the same name', async () => {
    const files = agentFiles('one');
    const tokenFile = join(scratchDirectory('issuer-token'), 'join-token');
    writeFileSync(tokenFile, fixture.joinTokens.create({ agent: 'vm-1', namespaces: ['app'], ttlSeconds: 600, nowSeconds: now() }).token);
    const agent = renewer(files, tokenFile);
    await agent.ensureCredential();
    assert.equal(existsSync(tokenFile), false, 'the spent join token is deleted');
    const bundles = loadTrustBundles(fixture.bundles);
    const first = verifyCredential(readFileSync(files.credential, 'utf8').trim(), bundles, now());
    assert.equal(first.subject, `spiffe://${DOMAIN}/agent/join/vm-1`);
    assert.deepEqual([...first.namespaces], ['app']);
    assert.deepEqual(first.node, { 'node.name': 'vm-1', 'node.join-token': first.node['node.join-token'] });
    assert.equal(first.attestedBy, 'join-token');
    assert.ok(first.expiresAt - first.issuedAt <= 600);
    assert.equal((readFileSync(files.signingKey).length > 0), true);

    let renewed = 0;
    // Half-life of a 600 s credential is minutes away: renew right now through the same path.
    await agent.renewNow(() => { renewed += 1; return Promise.resolve(); });
    const second = verifyCredential(readFileSync(files.credential, 'utf8').trim(), bundles, now());
    assert.equal(renewed, 1);
    assert.equal(second.subject, first.subject);
    assert.notEqual(second.signKid, first.signKid, 'a renewal brings a new signing key');
    assert.notEqual(second.jti, first.jti);
    assert.equal(second.attestedBy, 'join-token', 'a renewal keeps how the node was attested');
    assert.deepEqual(second.node, first.node);
    assert.equal(agent.status.renewals, 1);
    const audits = recorded.audits().filter((line) => line.subject === first.subject);
    assert.deepEqual(audits.map((line) => line.attestation), ['join-token', 'renewal']);
  });

  it('an agent whose credential lapsed while it was down renews it at start, within the grace, without new evidence', async () => {
    const files = agentFiles('lapsed');
    const tokenFile = join(scratchDirectory('issuer-token'), 'join-token');
    writeFileSync(tokenFile, fixture.joinTokens.create({ agent: 'vm-8', namespaces: [], ttlSeconds: 600, nowSeconds: now() }).token);
    await renewer(files, tokenFile).ensureCredential();
    const first = verifyCredential(readFileSync(files.credential, 'utf8').trim(), loadTrustBundles(fixture.bundles), now());
    // Twenty minutes later (the 600 s credential expired, the 3600 s grace has not), for agent and issuer alike.
    const later = () => Date.now() + 1_200_000;
    const bundles = loadTrustBundles(fixture.bundles);
    const loaded = await loadCertifiedIssuingKey(fixture.issuingKey, DOMAIN, bundles, now());
    const issuer = new Issuer({ trustDomain: DOMAIN, issuingKey: loaded.key, certificate: loaded.certificate, bundles, attestors: [], ttlSeconds: 600, renewalGraceSeconds: 3600 });
    const laterServer = await startIssuerServer({ listen: '127.0.0.1:0', tlsCertificate: fixture.tlsCertificate, tlsKey: fixture.tlsKey, ratePerSource: 0, issuer, log: recorded.log, clock: later });
    try {
      const restarted = new CredentialRenewer({ issuerUrl: `https://127.0.0.1:${(laterServer.server.address() as { port: number }).port}`, tlsCa: fixture.tlsCertificate, evidence: { joinToken: tokenFile, kubernetesToken: null, cloudDocument: null, cloudSignature: null }, files, log: recorded.log, clock: later });
      assert.equal(restarted.current(), null, 'expired by then');
      assert.equal(restarted.lapsed(), true);
      await restarted.ensureCredential();
      const renewed = verifyCredential(readFileSync(files.credential, 'utf8').trim(), loadTrustBundles(fixture.bundles), Math.floor(later() / 1000));
      assert.equal(renewed.subject, first.subject);
      assert.notEqual(renewed.signKid, first.signKid);
      assert.equal(recorded.audits().at(-1)?.attestation, 'renewal');
    } finally {
      await laterServer.close();
    }
  });

  it('refuses a replayed join token, counted and audited, and the agent stops with the reason', async () => {
    const { token } = fixture.joinTokens.create({ agent: 'vm-2', namespaces: [], ttlSeconds: 600, nowSeconds: now() });
    const tokenFile = join(scratchDirectory('issuer-token'), 'join-token');
    writeFileSync(tokenFile, token);
    await renewer(agentFiles('two'), tokenFile).ensureCredential();
    const before = await metric('join-token-used');
    writeFileSync(tokenFile, token);
    await assert.rejects(renewer(agentFiles('two-again'), tokenFile).ensureCredential(), (error: unknown) => error instanceof EnrollmentError && error.code === 'refused' && /join-token-used/.test(error.message));
    assert.equal(await metric('join-token-used'), before + 1);
    assert.equal(recorded.audits().at(-1)?.reason, 'join-token-used');
  });

  it('refuses revoked, expired and unknown join tokens, and a request without proof of possession', async () => {
    const sign = generateKeyPair('ed25519');
    const kex = generateKeyPair('x25519');
    const ask = async (attestation: Parameters<typeof buildCredentialRequest>[0]['attestation'], tamper = false) => {
      let compact = await buildCredentialRequest({ signKey: sign.privateKey, kexPublicKey: kex.publicKey, attestation, nowSeconds: now() });
      if (tamper) {
        // Signed by another key than the one the header asks a credential for.
        const other = await buildCredentialRequest({ signKey: generateKeyPair('ed25519').privateKey, kexPublicKey: kex.publicKey, attestation, nowSeconds: now() });
        compact = `${compact.split('.').slice(0, 2).join('.')}.${other.split('.')[2]!}`;
      }
      return post(JSON.stringify({ request: compact }));
    };
    const revoked = fixture.joinTokens.create({ agent: 'vm-3', namespaces: [], ttlSeconds: 600, nowSeconds: now() });
    assert.equal(fixture.joinTokens.revoke(revoked.record.id), true);
    assert.deepEqual((await ask({ type: 'join-token', token: revoked.token })).answer.error, 'join-token-revoked');
    const expired = fixture.joinTokens.create({ agent: 'vm-4', namespaces: [], ttlSeconds: 1, nowSeconds: now() - 10 });
    assert.deepEqual((await ask({ type: 'join-token', token: expired.token })).answer.error, 'join-token-expired');
    const fresh = fixture.joinTokens.create({ agent: 'vm-5', namespaces: [], ttlSeconds: 600, nowSeconds: now() });
    assert.deepEqual((await ask({ type: 'join-token', token: `${fresh.token.slice(0, -4)}AAAA` })).answer.error, 'unknown-join-token');
    const forged = await ask({ type: 'join-token', token: fresh.token }, true);
    assert.equal(forged.status, 403);
    assert.equal(forged.answer.error, 'bad-proof');
    // A key-agreement key of small order (u = 1): every pair key with it would be public.
    const smallOrder = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.concat([Buffer.from([1]), Buffer.alloc(31)]).toString('base64url') }, format: 'jwk' });
    const weak = await buildCredentialRequest({ signKey: sign.privateKey, kexPublicKey: smallOrder, attestation: { type: 'join-token', token: fresh.token }, nowSeconds: now() });
    const refusedWeak = await post(JSON.stringify({ request: weak }));
    assert.equal(refusedWeak.answer.error, 'bad-request');
    assert.match(JSON.stringify(refusedWeak.answer), /small order/);
    // A refused attempt does not burn the token: its holder still joins.
    assert.equal((await ask({ type: 'join-token', token: fresh.token })).status, 200);
    assert.equal((await post('not json')).answer.error, 'bad-request');
    const states = new Map(fixture.joinTokens.list(now()).map((row) => [row.agent, row.state]));
    assert.deepEqual([states.get('vm-3'), states.get('vm-4'), states.get('vm-5')], ['revoked', 'expired', 'used']);
    for (const reason of ['join-token-revoked', 'join-token-expired', 'unknown-join-token', 'bad-proof', 'bad-request']) assert.ok((await metric(reason)) >= 1, reason);
  });

  it('refuses a renewal whose proof was signed by another key than the credential binds', async () => {
    const files = agentFiles('three');
    const tokenFile = join(scratchDirectory('issuer-token'), 'join-token');
    writeFileSync(tokenFile, fixture.joinTokens.create({ agent: 'vm-6', namespaces: [], ttlSeconds: 600, nowSeconds: now() }).token);
    await renewer(files, tokenFile).ensureCredential();
    const credential = readFileSync(files.credential, 'utf8').trim();
    const thief = generateKeyPair('ed25519');
    const thumbprint = await calculateJwkThumbprint(await exportJWK(thief.publicKey));
    const proof = await buildRenewalProof(thief.privateKey, 'stolen', thumbprint, now());
    const compact = await buildCredentialRequest({ signKey: thief.privateKey, kexPublicKey: generateKeyPair('x25519').publicKey, attestation: { type: 'credential', credential, proof }, nowSeconds: now() });
    const answer = await post(JSON.stringify({ request: compact }));
    assert.equal(answer.answer.error, 'bad-proof');
  });

  it('refuses to renew a credential whose key is on the deny list', async () => {
    const files = agentFiles('revoked');
    const tokenFile = join(scratchDirectory('issuer-token'), 'join-token');
    writeFileSync(tokenFile, fixture.joinTokens.create({ agent: 'vm-7', namespaces: [], ttlSeconds: 600, nowSeconds: now() }).token);
    await renewer(files, tokenFile).ensureCredential();
    const bundles = loadTrustBundles(fixture.bundles);
    const current = verifyCredential(readFileSync(files.credential, 'utf8').trim(), bundles, now());
    const loaded = await loadCertifiedIssuingKey(fixture.issuingKey, DOMAIN, bundles, now());
    const strict = new Issuer({ trustDomain: DOMAIN, issuingKey: loaded.key, certificate: loaded.certificate, bundles, attestors: [], ttlSeconds: 600, renewalGraceSeconds: 0, denyList: () => parseDenyList(`keys: [${current.signKid}]`, 'deny') });
    const next = generateKeyPair('ed25519');
    const thumbprint = await calculateJwkThumbprint(await exportJWK(next.publicKey));
    const proof = await buildRenewalProof(readPrivateKey(files.signingKey), current.signKid, thumbprint, now());
    const request = await buildCredentialRequest({ signKey: next.privateKey, kexPublicKey: generateKeyPair('x25519').publicKey, attestation: { type: 'credential', credential: current.compact, proof }, nowSeconds: now() });
    await assert.rejects(strict.issue(request, now()), (error: unknown) => error instanceof IssuanceRefusal && error.code === 'revoked');
    // The same request passes an issuer without that list entry: the refusal was the list's.
    const lenient = new Issuer({ ...strict.options, denyList: () => EMPTY_DENY_LIST });
    assert.equal((await lenient.issue(request, now())).subject, current.subject);
  });

  it('serves a renewed TLS certificate without a restart', async () => {
    const directory = scratchDirectory('issuer-tls');
    const first = makeTlsCertificate(directory, ['127.0.0.1']);
    const firstCa = readFileSync(first.certificate);
    const bundles = loadTrustBundles(fixture.bundles);
    const loaded = await loadCertifiedIssuingKey(fixture.issuingKey, DOMAIN, bundles, now());
    const issuer = new Issuer({ trustDomain: DOMAIN, issuingKey: loaded.key, certificate: loaded.certificate, bundles, attestors: [], ttlSeconds: 600, renewalGraceSeconds: 0 });
    const rotating = await startIssuerServer({ listen: '127.0.0.1:0', tlsCertificate: first.certificate, tlsKey: first.key, ratePerSource: 0, issuer, log: recorded.log, tlsPollMs: 100 });
    const port = (rotating.server.address() as { port: number }).port;
    const healthy = (ca: Buffer): Promise<boolean> =>
      new Promise((resolve) => {
        const call = request({ host: '127.0.0.1', port, path: '/healthz', ca, agent: false }, (response) => { response.resume(); resolve(response.statusCode === 200); });
        call.on('error', () => { resolve(false); });
        call.end();
      });
    try {
      assert.equal(await healthy(firstCa), true);
      // A new pair over the same files, as cert-manager writes it.
      const second = makeTlsCertificate(directory, ['127.0.0.1']);
      const secondCa = readFileSync(second.certificate);
      const deadline = Date.now() + 5000;
      while (!(await healthy(secondCa)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(await healthy(secondCa), true, 'the new certificate is served');
      assert.equal(await healthy(firstCa), false, 'the old one is not');
    } finally {
      await rotating.close();
    }
  });

  it('refuses to load an issuing key the CA did not certify, and a bundle with a forged certificate', async () => {
    const directory = scratchDirectory('issuer-uncertified');
    const rogue = await createIssuingKey(directory);
    await assert.rejects(loadCertifiedIssuingKey(rogue.key, DOMAIN, loadTrustBundles(fixture.bundles), now()), (error: unknown) => error instanceof IssuingKeyError && error.code === 'uncertified-issuing-key');
    // A certificate signed by another CA, pasted into the bundle, makes the bundle malformed.
    const other = await createIssuerFixture(scratchDirectory('issuer-other'), DOMAIN, ['127.0.0.1']);
    const bundlePath = join(fixture.bundles, `${DOMAIN}.jwks.json`);
    const document = JSON.parse(readFileSync(bundlePath, 'utf8')) as { issuers: string[] };
    const otherDocument = JSON.parse(readFileSync(join(other.bundles, `${DOMAIN}.jwks.json`), 'utf8')) as { issuers: string[] };
    const forgedDirectory = scratchDirectory('issuer-forged-bundle');
    writeFileSync(join(forgedDirectory, `${DOMAIN}.jwks.json`), JSON.stringify({ ...document, issuers: [...document.issuers, ...otherDocument.issuers] }));
    assert.throws(() => loadTrustBundles(forgedDirectory), (error: unknown) => error instanceof TrustBundleError && /issuers\[1\]: not signed by a CA key/.test(error.message));
  });

  it('a credential from another domain\'s issuer does not verify here (unknown key)', async () => {
    const other = await createIssuerFixture(scratchDirectory('issuer-foreign'), DOMAIN, ['127.0.0.1']);
    const otherBundles = loadTrustBundles(other.bundles);
    const loaded = await loadCertifiedIssuingKey(other.issuingKey, DOMAIN, otherBundles, now());
    const foreign = new Issuer({ trustDomain: DOMAIN, issuingKey: loaded.key, certificate: loaded.certificate, bundles: otherBundles, attestors: [new JoinTokenAttestor(other.joinTokens)], ttlSeconds: 600, renewalGraceSeconds: 0 });
    const sign = generateKeyPair('ed25519');
    const { token } = other.joinTokens.create({ agent: 'rogue', namespaces: [], ttlSeconds: 600, nowSeconds: now() });
    const issued = await foreign.issue(await buildCredentialRequest({ signKey: sign.privateKey, kexPublicKey: generateKeyPair('x25519').publicKey, attestation: { type: 'join-token', token }, nowSeconds: now() }), now());
    assert.throws(() => verifyCredential(issued.credential, loadTrustBundles(fixture.bundles), now()), /no CA key or certified issuer/);
    await assert.rejects(foreign.issue('x.y.z', now()), (error: unknown) => error instanceof IssuanceRefusal && error.code === 'bad-request');
  });
});
