// Heap taken by the agent's tables when full at once, at their default capacities: the replay
// cache (nonces), the handshakes in progress (flows, and their index for DNAT) and the whois registry with entries shaped
// as the handshake makes them, then the verified-credential and token caches and the pair keys,
// filled through the verifier with real credentials of 4,096 agents and two tokens each. Run
// without a heap limit, since the script holds the peers' keys too (about a minute: every agent
// gets keys and a credential):
//   node --expose-gc --import tsx scripts/benchmarks/table-memory.ts
import { randomBytes } from 'node:crypto';
import { ExpiringTable, flowKey, type SeenNonce } from '../../agent/src/handshake/handshake-state.ts';
import { isnKey, type ServerFlow, type TranslatedFlow } from '../../agent/src/handshake/context.ts';
import { PeerRegistry } from '../../agent/src/whois/registry.ts';
import type { VerifiedIdentity } from '../../agent/src/token/identity-token.ts';
import { agentConfigSchema } from '../../agent/src/runtime/config-schema.ts';
import { createPublicKey } from 'node:crypto';
import { rmSync } from 'node:fs';
import { PeerVerifier } from '../../agent/src/handshake/peer-verifier.ts';
import { packJws } from '../../agent/src/protocol/wire.ts';
import { createAgent, createDomain, tokenFor } from '../lib/identities.ts';

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');
const heapMiB = () => {
  gc();
  return process.memoryUsage().heapUsed / 1024 / 1024;
};

const defaults = agentConfigSchema('/').parse({}).handshake;
const before = heapMiB();
const now = Date.now();
const nonces = new ExpiringTable<SeenNonce>(defaults.maxNonces, () => now);
const flows = new ExpiringTable<ServerFlow>(defaults.maxFlows, () => now);
const translatedFlows = new ExpiringTable<TranslatedFlow>(defaults.maxFlows, () => now);
const whois = new PeerRegistry();
// One identity and one pair key shared by every entry, as the token and key caches share them.
const peer = { subject: 'spiffe://demo.synpass/web', attributes: {} } as unknown as VerifiedIdentity;
const pairKey = randomBytes(32);
const address = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
for (let i = 0; i < defaults.maxNonces; i++) {
  const key = flowKey(address(i), 1024 + (i % 60000), '10.0.0.2', 8080);
  nonces.set(randomBytes(16).toString('latin1'), { expiresAt: now + 31_000 });
  if (i < defaults.maxFlows) {
    flows.set(key, { role: 'server', clientNonce: Buffer.from(randomBytes(16)), serverNonce: null, clientIsn: i, serverIsn: 0, pairKey, peer, fast: true, syn: null, local: null, expiresAt: now + 30_000 });
    translatedFlows.set(isnKey(address(i), 1024 + (i % 60000), i), { key, address: '10.0.0.2', port: 8080, expiresAt: now + 30_000 });
  }
  if (i < whois.limit) whois.record('10.0.0.2:8080', `${address(i)}:${String(1024 + (i % 60000))}`, peer);
}
const handshakeTables = heapMiB() - before;

// Credentials and tokens as peers present them: packed JWS, verified once, cached.
const domain = await createDomain('memory.synpass');
const own = await createAgent(domain, 'api');
const ownRaw = Buffer.from(createPublicKey(own.kex).export({ format: 'jwk' }).x ?? '', 'base64url');
const verifier = new PeerVerifier(domain.bundles, { kex: own.kex, kexRaw: ownRaw }, () => Math.floor(Date.now() / 1000));
const attributes = (i: number) => ({ 'app.name': `app-${String(i)}`, 'app.tier': 'frontend', 'app.team': 'payments', 'host.name': `node-${String(i)}`, 'host.os': 'linux' });
const peers = [];
for (let i = 0; i < verifier.credentials.limit; i++) {
  const agent = await createAgent(domain, `peer-${String(i)}`);
  rmSync(agent.directory, { recursive: true, force: true });
  peers.push({ agent, tokens: [await tokenFor(agent, `spiffe://memory.synpass/w${String(i)}a`, attributes(i)), await tokenFor(agent, `spiffe://memory.synpass/w${String(i)}b`, attributes(i))] });
}
for (const peer of peers) {
  for (const token of peer.tokens) {
    const packed = packJws(token);
    const verified = verifier.verify(packJws(peer.agent.credentialCompact), packed);
    if (!('credential' in verified)) throw new Error(`a peer did not verify: ${verified.reason}`);
    // As after the handshake checked the signature or proof over the token's digest.
    verifier.rememberToken(packed, verified);
    verifier.pairKey(verified.credential);
  }
}
// The peers' own keys and tokens go; what stays is what the verifier holds.
peers.length = 0;
const caches = heapMiB() - before - handshakeTables;
// Held to here, so that no collection above could take the tables.
const sizes = { nonces: nonces.size, flows: flows.size, translatedFlows: translatedFlows.size, whoisPeers: whois.size, ...Object.fromEntries(Object.entries(verifier.tables()).map(([name, size]) => [name, size.entries])) };
rmSync(domain.directory, { recursive: true, force: true });
const round = (mib: number) => Math.round(mib * 10) / 10;
process.stdout.write(
  `${JSON.stringify({ ...sizes, baselineMiB: round(before), handshakeTablesMiB: round(handshakeTables), cachesMiB: round(caches), heapUsedMiB: round(heapMiB()), rssMiB: Math.round(process.memoryUsage().rss / 1024 / 1024), heapLimitMiB: Math.round((await import('node:v8')).getHeapStatistics().heap_size_limit / 1024 / 1024) })}\n`,
);
