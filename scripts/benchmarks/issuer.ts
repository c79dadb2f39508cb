// Credentials the issuer signs per second on one core (this process, one thread), for renewals
// (the steady state of a fleet: credential and proof verified, request verified, credential
// signed) and join tokens, then over HTTPS with a keep-alive client in the same process (so the
// client's TLS work shares the core: a lower bound). The baseline measured in the same run is one
// bare Ed25519 signature, the least an issuance can cost. Bounded: BENCH_ISSUER_COUNT requests.
//   node --import tsx scripts/benchmarks/issuer.ts
import { sign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { performance } from 'node:perf_hooks';
import { calculateJwkThumbprint, exportJWK } from 'jose';
import { JoinTokenAttestor } from '../../agent/src/issuer/attestors/join-token.ts';
import { buildCredentialRequest, buildRenewalProof } from '../../agent/src/issuer/credential-request.ts';
import { Issuer } from '../../agent/src/issuer/issuer.ts';
import { loadCertifiedIssuingKey } from '../../agent/src/issuer/issuing-key.ts';
import { startIssuerServer } from '../../agent/src/issuer/server.ts';
import { createAgentLog } from '../../agent/src/telemetry/log.ts';
import { verifyCredential } from '../../agent/src/token/credential.ts';
import { loadTrustBundles } from '../../agent/src/token/trust-bundle.ts';
import { createIssuerFixture } from '../lib/issuer-fixture.ts';
import { scratchDirectory } from '../lib/scratch.ts';
import { generateKeyPair } from '../../agent/src/identity/key-generation.ts';

const COUNT = Number(process.env.BENCH_ISSUER_COUNT ?? 3000);
const DOMAIN = 'bench.synpass';
const FLEET = 5000;
const RENEW_EVERY_SECONDS = 1800;
const now = (): number => Math.floor(Date.now() / 1000);

const fixture = await createIssuerFixture(scratchDirectory('bench-issuer'), DOMAIN, ['127.0.0.1']);
const bundles = loadTrustBundles(fixture.bundles);
const loaded = await loadCertifiedIssuingKey(fixture.issuingKey, DOMAIN, bundles, now());
const issuer = new Issuer({ trustDomain: DOMAIN, issuingKey: loaded.key, certificate: loaded.certificate, bundles, attestors: [new JoinTokenAttestor(fixture.joinTokens)], ttlSeconds: 3600, renewalGraceSeconds: 0 });
const kex = generateKeyPair('x25519').publicKey;

// One agent's current credential; every renewal request brings a new key, as agents do.
const first = generateKeyPair('ed25519');
const joined = await issuer.issue(
  await buildCredentialRequest({ signKey: first.privateKey, kexPublicKey: kex, attestation: { type: 'join-token', token: fixture.joinTokens.create({ agent: 'bench', namespaces: ['app'], ttlSeconds: 600, nowSeconds: now() }).token }, nowSeconds: now() }),
  now(),
);
const current = verifyCredential(joined.credential, bundles, now());

async function renewalRequests(count: number, currentKey: KeyObject): Promise<string[]> {
  const requests: string[] = [];
  for (let i = 0; i < count; i++) {
    const next = generateKeyPair('ed25519');
    const proof = await buildRenewalProof(currentKey, current.signKid, await calculateJwkThumbprint(await exportJWK(next.publicKey)), now());
    requests.push(await buildCredentialRequest({ signKey: next.privateKey, kexPublicKey: kex, attestation: { type: 'credential', credential: current.compact, proof }, nowSeconds: now() }));
  }
  return requests;
}

async function joinRequests(count: number): Promise<string[]> {
  const requests: string[] = [];
  for (let i = 0; i < count; i++) {
    const { token } = fixture.joinTokens.create({ agent: `bench-${i}`, namespaces: ['app'], ttlSeconds: 600, nowSeconds: now() });
    requests.push(await buildCredentialRequest({ signKey: generateKeyPair('ed25519').privateKey, kexPublicKey: kex, attestation: { type: 'join-token', token }, nowSeconds: now() }));
  }
  return requests;
}

async function rate(requests: readonly string[], issue: (request: string) => Promise<unknown>): Promise<number> {
  const started = performance.now();
  for (const compact of requests) await issue(compact);
  return requests.length / ((performance.now() - started) / 1000);
}

const signKey = first.privateKey;
const payload = Buffer.alloc(600, 7);
const startedBaseline = performance.now();
for (let i = 0; i < COUNT; i++) sign(null, payload, signKey);
const signaturesPerSecond = COUNT / ((performance.now() - startedBaseline) / 1000);

const renewals = await rate(await renewalRequests(COUNT, first.privateKey), (compact) => issuer.issue(compact, now()));
const joins = await rate(await joinRequests(Math.min(COUNT, 1000)), (compact) => issuer.issue(compact, now()));

const { log } = createAgentLog('warn');
const server = await startIssuerServer({ listen: '127.0.0.1:0', tlsCertificate: fixture.tlsCertificate, tlsKey: fixture.tlsKey, ratePerSource: 0, issuer, log });
const port = (server.server.address() as { port: number }).port;
const agent = new Agent({ keepAlive: true, maxSockets: 8, ca: readFileSync(fixture.tlsCertificate) });
const post = (compact: string): Promise<void> =>
  new Promise((resolve, reject) => {
    const call = request({ host: '127.0.0.1', port, path: '/v1/credentials', method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (response) => {
      response.resume();
      response.on('end', () => { if (response.statusCode === 200) resolve(); else reject(new Error(`status ${response.statusCode ?? 0}`)); });
    });
    call.on('error', reject);
    call.end(JSON.stringify({ request: compact }));
  });
const httpsRequests = await renewalRequests(COUNT, first.privateKey);
const startedHttps = performance.now();
// Eight in flight, as several agents renew at once.
let next = 0;
await Promise.all(Array.from({ length: 8 }, async () => { while (next < httpsRequests.length) await post(httpsRequests[next++]!); }));
const https = httpsRequests.length / ((performance.now() - startedHttps) / 1000);
agent.destroy();
await server.close();

const fleetShare = (perSecond: number): string => `${((FLEET / RENEW_EVERY_SECONDS / perSecond) * 100).toFixed(3)} %`;
const table = [
  ['Ed25519 signature alone (baseline)', signaturesPerSecond, 1],
  ['renewal, in process', renewals, renewals / signaturesPerSecond],
  ['join token, in process (file store)', joins, joins / signaturesPerSecond],
  ['renewal over HTTPS (client on the same core)', https, https / signaturesPerSecond],
] as const;
process.stdout.write(`issuer on one core, ${COUNT} requests each\n`);
for (const [name, perSecond, ratio] of table) process.stdout.write(`  ${name.padEnd(46)} ${perSecond.toFixed(0).padStart(7)}/s  ${ratio.toFixed(3)}x baseline\n`);
process.stdout.write(`a fleet of ${FLEET} agents renewing every ${RENEW_EVERY_SECONDS / 60} min costs ${fleetShare(renewals)} of a core in process, ${fleetShare(https)} over HTTPS\n`);
