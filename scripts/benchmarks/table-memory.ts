// Heap taken by the agent's largest tables when full at once: the replay cache (nonces), the
// handshakes in progress (flows) and the whois registry, at their default capacities and with
// entries shaped as the handshake makes them. Run with the shipped heap limit:
//   node --max-old-space-size=96 --expose-gc --import tsx scripts/benchmarks/table-memory.ts
import { randomBytes } from 'node:crypto';
import { ExpiringTable, flowKey, type SeenNonce } from '../../agent/src/handshake/handshake-state.ts';
import type { ServerFlow } from '../../agent/src/handshake/context.ts';
import { PeerRegistry } from '../../agent/src/whois/registry.ts';
import type { VerifiedIdentity } from '../../agent/src/token/identity-token.ts';
import { agentConfigSchema } from '../../agent/src/runtime/config-schema.ts';

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
  }
  if (i < whois.limit) whois.record('10.0.0.2:8080', `${address(i)}:${String(1024 + (i % 60000))}`, peer);
}
const after = heapMiB();
// Held to here, so that the collection above cannot take the tables.
const sizes = { nonces: nonces.size, flows: flows.size, whoisPeers: whois.size };
process.stdout.write(
  `${JSON.stringify({ ...sizes, heapMiB: Math.round((after - before) * 10) / 10, rssMiB: Math.round(process.memoryUsage().rss / 1024 / 1024), heapLimitMiB: Math.round((await import('node:v8')).getHeapStatistics().heap_size_limit / 1024 / 1024) })}\n`,
);
