// Credential lifecycle over real packets: two agents join from join tokens against an issuer in
// its own namespace, renew every few seconds with fresh keys while a connection stays open and a
// connect loop never fails, ride out the issuer's absence until expiry, then cloak and say why,
// and come back when it returns.
import assert from 'node:assert/strict';
import { type KeyObject } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { SignJWT } from 'jose';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isRoot, synpassCommand, waitUntil, type AgentHandle } from '../../scripts/lib/lab.ts';
import { joinTokenFile, LAB_CLUSTER, startIssuerLab, type IssuerLab } from '../../scripts/lib/issuer-lab.ts';
import { createIssuingKey } from '../../agent/src/issuer/issuing-key.ts';
import { scratchDirectory } from '../../scripts/lib/scratch.ts';
import { countersMoved, kernelFastPathOf, type KernelFastPathStatus } from '../../scripts/lib/kernel-counters.ts';
import { verifyCredential } from '../../agent/src/token/credential.ts';
import { loadTrustBundles } from '../../agent/src/token/trust-bundle.ts';
import { generateKeyPair } from '../../agent/src/identity/key-generation.ts';

const ECHO_PORT = 7000;
const TTL_SECONDS = 8;

interface Renewal {
  renewals: number;
  failures: number;
  failingSince: string | null;
  lastError: string | null;
}

async function renewalOf(agent: AgentHandle): Promise<Renewal> {
  const status = (await agent.status()) as unknown as { identity: { renewal: Renewal } };
  return status.identity.renewal;
}

async function fastCounters(agent: AgentHandle): Promise<KernelFastPathStatus> {
  const fast = kernelFastPathOf(await agent.status());
  assert.equal(fast.running, true);
  return fast;
}

describe('credential lifecycle with an issuer', { skip: !isRoot() && 'needs root (network namespaces)', timeout: 180_000 }, () => {
  let lab: IssuerLab;

  before(async () => {
    lab = await startIssuerLab({ prefix: 'iss', net: 20, ttlSeconds: TTL_SECONDS, kernel: true, server: { port: ECHO_PORT, kind: 'echo', seconds: 170 } });
  });
  after(async () => {
    await lab.down();
  });

  it('both agents joined with their join tokens, which are spent and deleted', () => {
    for (const [name, agent] of [['web', lab.web], ['api', lab.api]] as const) {
      const joined = agent.process.lines.find((line) => line.msg === 'credential obtained by node attestation' && line.attestation === 'join-token');
      assert.ok(joined, 'joined with the join token');
      assert.equal(existsSync(joinTokenFile(lab.directory, name)), false, `${name}'s join token file is deleted`);
    }
    // A slow start may already show a renewal (half-life 4 s): the joins are what is counted.
    const audits = lab.issuer.lines.filter((line) => line.audit === 'issued' && line.attestation === 'join-token');
    assert.deepEqual(audits.map((line) => line.subject).sort(), ['spiffe://demo.synpass/agent/join/api', 'spiffe://demo.synpass/agent/join/web']);
    const states = lab.fixture.joinTokens.list(Math.floor(Date.now() / 1000)).map((row) => row.state);
    assert.deepEqual(states, ['used', 'used']);
  });

  it('renews at least 5 times while a connection stays up and a connect loop sees no failure', async (t) => {
    const held = lab.lab.peer('web', ['hold', lab.lab.address('api'), String(ECHO_PORT)], { stdin: true });
    await held.waitFor((line) => line.connected === true);
    const start = { web: (await renewalOf(lab.web)).renewals, api: (await renewalOf(lab.api)).renewals };
    const [apiBefore, webBefore] = [await fastCounters(lab.api), await fastCounters(lab.web)];
    // One connect every 250 ms for as long as 5 renewals take (half-life 4 s ± 10 %: about 20 s).
    const loop = lab.lab.peer('web', ['rounds', lab.lab.address('api'), String(ECHO_PORT), '110', '250']);
    const done = await loop.waitFor((line) => line.ok !== undefined, 60_000);
    const web = await renewalOf(lab.web);
    const api = await renewalOf(lab.api);
    assert.ok(web.renewals - start.web >= 5, `web renewed ${web.renewals - start.web} times`);
    assert.ok(api.renewals - start.api >= 5, `api renewed ${api.renewals - start.api} times`);
    assert.deepEqual(loop.lines.filter((line) => line.failed !== undefined && line.ok === undefined), []);
    assert.deepEqual(done, { ok: 110, failed: 0 });
    held.write('still here\n');
    await held.waitFor((line) => line.echoed === 'still here');
    held.closeStdin();
    // Each renewal brought new keys: the issuer saw a new key every time.
    const keys = new Set(lab.issuer.lines.filter((line) => line.audit === 'issued' && line.subject === 'spiffe://demo.synpass/agent/join/web').map((line) => line.key));
    assert.ok(keys.size >= 6, `web presented ${keys.size} keys`);
    assert.equal(web.failures, 0);
    // Between renewals known pairs ran in the kernel: each renewal's new keys refreshed its maps.
    const [apiAfter, webAfter] = [await fastCounters(lab.api), await fastCounters(lab.web)];
    const [apiMoved, webMoved] = [countersMoved(apiBefore, apiAfter), countersMoved(webBefore, webAfter)];
    const fastConnects = apiMoved.synAccepted ?? 0;
    assert.ok(fastConnects >= 20, `${fastConnects} of 110 connects took the kernel fast path`);
    // api's renewals never left a fast SYN of web's unanswered (a retransmission timeout, about
    // 1 s): api kept what web proved under its previous keys and told web to learn the new ones.
    assert.deepEqual([webMoved.synFallback ?? 0, apiMoved.synUnknownPeer ?? 0], [0, 0]);
    const retired = webMoved.clientRetired ?? 0;
    assert.ok(retired >= 1, 'web learned api anew after its renewals');
    t.diagnostic(`renewals: web ${web.renewals - start.web}, api ${api.renewals - start.api}; connects 110, failed 0, on the kernel fast path ${fastConnects}, web's entries retired by api ${retired}`);
  });

  it('with the issuer stopped the agents work until expiry, then cloak and report why; they recover when it returns', async () => {
    lab.issuer.signal('SIGTERM');
    await lab.issuer.exited;
    const stoppedAt = Date.now();
    // Still inside the credential's life: connections work.
    const early = await lab.lab.peerOnce('web', ['echo', lab.lab.address('api'), String(ECHO_PORT), 'early']);
    assert.deepEqual(early, { echoed: 'early' });
    // Past it (at most one TTL after the last renewal), the agents cloak.
    await waitUntil('web reports its credential expired', async () => {
      const status = (await lab.web.status()) as unknown as { identity: { credentialExpiresAt: string } };
      return Date.parse(status.identity.credentialExpiresAt) < Date.now() - 1000;
    }, (TTL_SECONDS + 5) * 1000);
    assert.ok(Date.now() - stoppedAt <= (TTL_SECONDS + 5) * 1000);
    assert.equal((await lab.web.status() as unknown as { readiness: { ready: boolean } }).readiness.ready, false);
    const cloaked = await lab.lab.peerOnce('web', ['rounds', lab.lab.address('api'), String(ECHO_PORT), '1', '0'], 15_000);
    assert.deepEqual(cloaked, { failed: 0, error: 'no echo within 3 s', at: cloaked.at });
    const renewal = await renewalOf(lab.web);
    assert.ok(renewal.failingSince !== null, 'status says since when renewals fail');
    assert.match(renewal.lastError ?? '', /issuer https:\/\/.*: (connect ECONNREFUSED|.*)/);
    const logged = lab.web.process.lines.some((line) => line.msg === 'credential renewal failed; the current credential stays in force');
    assert.ok(logged, 'the renewal failure is logged');
    const readiness = ((await lab.web.status()) as unknown as { readiness: { ready: boolean; checks: { credential: { ok: boolean; detail: string } } } }).readiness;
    assert.equal(readiness.ready, false);
    assert.match(readiness.checks.credential.detail, /^expired \d+ s ago; renewal failing since \d{4}-.*Z: issuer https:/);
    // The peer counted why: an expired credential.
    const api = (await lab.api.status()) as unknown as { verdicts: { reason: string; count: number }[] };
    assert.ok(api.verdicts.some((row) => row.reason === 'expired-credential' && row.count > 0), JSON.stringify(api.verdicts));

    lab.issuer = await lab.startIssuer();
    await waitUntil('web renews again', async () => (await renewalOf(lab.web)).failingSince === null, 20_000);
    await waitUntil('api renews again', async () => (await renewalOf(lab.api)).failingSince === null, 20_000);
    const back = await lab.lab.peerOnce('web', ['echo', lab.lab.address('api'), String(ECHO_PORT), 'back']);
    assert.deepEqual(back, { echoed: 'back' });
  });

  it('refuses, counted and audited, a replayed join token, a request without proof of possession, and service-account tokens of the wrong kind', async () => {
    const saToken = (claims: { audience?: string; namespace?: string; account?: string; expiresIn?: number; key?: KeyObject } = {}): Promise<string> =>
      new SignJWT({ 'kubernetes.io': { namespace: claims.namespace ?? 'synpass-system', serviceaccount: { name: claims.account ?? 'synpass-agent' }, pod: { name: 'synpass-agent-abcde' }, node: { name: 'node-a' } } })
        .setProtectedHeader({ alg: 'RS256', kid: 'sa-1' })
        .setIssuer(lab.serviceAccountIssuer)
        .setAudience(claims.audience ?? 'synpass')
        .setSubject('system:serviceaccount:synpass-system:synpass-agent')
        .setIssuedAt()
        .setExpirationTime(Math.floor(Date.now() / 1000) + (claims.expiresIn ?? 600))
        .sign(claims.key ?? lab.serviceAccountKey);
    const before = await lab.refusals('web');
    const cases: [string, Record<string, string>, boolean][] = [
      ['join-token-used', { type: 'join-token', token: lab.joinTokens.web }, false],
      ['bad-proof', { type: 'join-token', token: lab.joinTokens.api }, true],
      ['k8s-wrong-audience', { type: 'kubernetes', token: await saToken({ audience: 'vault' }) }, false],
      ['k8s-expired', { type: 'kubernetes', token: await saToken({ expiresIn: -120 }) }, false],
      ['k8s-wrong-service-account', { type: 'kubernetes', token: await saToken({ namespace: 'default' }) }, false],
      ['k8s-wrong-service-account', { type: 'kubernetes', token: await saToken({ account: 'builder' }) }, false],
      ['k8s-bad-signature', { type: 'kubernetes', token: await saToken({ key: generateKeyPair('rsa2048').privateKey }) }, false],
    ];
    for (const [reason, attestation, forged] of cases) {
      const answer = await lab.probe('web', attestation, forged);
      assert.deepEqual(answer, { status: 403, error: reason }, reason);
      assert.ok(lab.issuer.lines.some((line) => line.audit === 'refused' && line.reason === reason && line.source === lab.lab.address('web')), `${reason} audited with its source`);
    }
    const after = await lab.refusals('web');
    const expected = new Map<string, number>();
    for (const [reason] of cases) expected.set(reason, (expected.get(reason) ?? 0) + 1);
    for (const [reason, count] of expected) assert.equal((after[reason] ?? 0) - (before[reason] ?? 0), count, `${reason} counted`);
    // The right token from the right service account is a node credential named after its node.
    assert.deepEqual(await lab.probe('web', { type: 'kubernetes', token: await saToken() }), { status: 200, subject: `spiffe://demo.synpass/agent/k8s/${LAB_CLUSTER}/node-a` });
  });

  it('an issuer whose issuing key the CA did not certify refuses to start, with an audit line', async () => {
    const rogue = await createIssuingKey(scratchDirectory('issuer-rogue'));
    const refused = lab.lab.spawn('outsider', [
      ...synpassCommand(), 'issuer', 'run', '--domain', 'demo.synpass', '--trust-bundles', lab.fixture.bundles, '--issuing-key', rogue.key,
      '--tls-cert', lab.fixture.tlsCertificate, '--tls-key', lab.fixture.tlsKey, '--listen', '127.0.0.1:0',
    ]);
    assert.equal(await refused.exited, 2);
    assert.ok(refused.lines.some((line) => line.audit === 'refused' && line.reason === 'uncertified-issuing-key'), JSON.stringify(refused.lines));
  });

  it('a revoked agent is cloaked on its next connect, and the issuer will not renew it', async () => {
    // Deny web's current key; a renewal may slip in between reading and listing, so after web's
    // next renewal attempt (refused by the issuer once its key is listed) list again until the
    // key web holds is the listed one. The connect follows at once, inside the credential's
    // life: past it, a peer would drop web as expired-credential first.
    const attempts = async (): Promise<number> => {
      const renewal = await renewalOf(lab.web);
      return renewal.renewals + renewal.failures;
    };
    const listed: string[] = [];
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = verifyCredential(readFileSync(join(lab.directory, 'web', 'credential.jwt'), 'utf8').trim(), loadTrustBundles(lab.fixture.bundles), Math.floor(Date.now() / 1000), 3600);
      if (listed.includes(current.signKid)) break;
      listed.push(current.signKid);
      writeFileSync(lab.denyList, `keys: [${listed.join(', ')}]\n`);
      await Promise.all([lab.web, lab.api].map((agent) => agent.process.waitFor((line) => line.msg === 'deny list reloaded' && (line.keys as number) === listed.length, 5000)));
      const before = await attempts();
      await waitUntil('web attempts a renewal', async () => (await attempts()) > before, TTL_SECONDS * 1000);
    }
    assert.equal((await renewalOf(lab.web)).failingSince !== null, true, 'the issuer refuses to renew the listed key');
    const cloaked = await lab.lab.peerOnce('web', ['rounds', lab.lab.address('api'), String(ECHO_PORT), '1', '0'], 15_000);
    assert.equal(cloaked.failed, 0, 'web cannot reach api any more');
    const api = (await lab.api.status()) as unknown as { verdicts: { reason: string; count: number }[]; identity: { denyList: { keys: number } } };
    assert.ok(api.verdicts.some((row) => row.reason === 'revoked-credential' && row.count > 0), JSON.stringify(api.verdicts));
    assert.equal(api.identity.denyList.keys, listed.length);
    assert.ok(lab.issuer.lines.some((line) => line.audit === 'refused' && line.reason === 'revoked' && line.subject === 'spiffe://demo.synpass/agent/join/web'));
  });
});
