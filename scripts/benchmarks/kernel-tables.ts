// How long the agent holds its event loop when a policy edit, a key rotation or a flush touches
// every entry of the kernel fast path's full tables (65,536 server and 65,536 client entries):
// the real KernelFastPath on its own maps (loaded and pinned in a scratch directory, attached
// nowhere) with the real policy authorizer. A policy edit judges the entries in slices, and a key
// rotation or a flush reaches the kernel in slices: it prints each one's whole time and the
// longest the event loop was held meanwhile; edits for entries of one peer workload and of as many
// peers as entries (each its own token, as from many client hosts).
// First, on the maps of a second load, the same 65,536 server entries written one system call
// each (as the agent wrote them before batching) against one batch. Root (loads BPF):
//   node --import tsx scripts/benchmarks/kernel-tables.ts
import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { PolicyAuthorizer } from '../../agent/src/handshake/authorizer.ts';
import type { VerifiedIdentity } from '../../agent/src/token/identity-token.ts';
import { KernelFastPath } from '../../agent/src/kernel/fast-path.ts';
import { KEY_SIZE, MAP_CAPACITY, serverKey, serverValue } from '../../agent/src/kernel/layouts.ts';
import { fastPathObjectPath, loadBinding } from '../../agent/src/native/addon.ts';
import { compile } from '../lib/policy-dir.ts';

const PIN_DIR = `/sys/fs/bpf/synpass-bench-tables-${process.pid}`;
const BASELINE_PIN_DIR = `${PIN_DIR}-baseline`;
const ENTRIES = MAP_CAPACITY.fast_servers;
const PORT = 8080;
const LOCAL = '10.0.0.1';

function policyAdmitting(from: string) {
  return compile({
    'api.yaml': [
      'policies:',
      '  - name: api',
      '    selector: { app.name: api }',
      '    ingress:',
      `      - { name: from, action: allow, ports: [${PORT}], from: { app.name: ${from} } }`,
      '    egress:',
      `      - { name: to, action: allow, ports: [${PORT}], to: { app.name: ${from} } }`,
      '',
    ].join('\n'),
  });
}

const address = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
const local = { 'synpass.subject': 'spiffe://bench/api', 'app.name': 'api' };
const peer: VerifiedIdentity = {
  trustDomain: 'bench',
  subject: 'spiffe://bench/web',
  attributes: { 'synpass.subject': 'spiffe://bench/web', 'app.name': 'web' },
  provenance: {},
  agent: 'spiffe://bench/agent/web',
  expiresAt: 2e9,
};

function timed(label: string, run: () => void): number {
  const started = performance.now();
  run();
  const milliseconds = performance.now() - started;
  process.stdout.write(`${label}: ${milliseconds.toFixed(0)} ms\n`);
  return milliseconds;
}

let current = policyAdmitting('web');
const path = KernelFastPath.load({
  pinDir: PIN_DIR,
  cgroup: '/',
  interfaces: [],
  excluded: [],
  windowSeconds: 30,
  acceptMark: 0x100,
  clientMark: 0x200,
  newInterfaces: null,
  acceptSample: 0,
  sourceRate: 0,
  sourceBurst: 0,
  budgetMark: 0x400,
  workloadCgroups: [],
});
const expiresAt = Date.now() / 1000 + 3600;
const fastKeys = Array.from({ length: ENTRIES }, () => randomBytes(16));

/** Full tables; `distinctPeers`: every entry's peer a token of its own (same attributes). */
function fill(distinctPeers: boolean): void {
  for (let i = 0; i < ENTRIES; i++) {
    const fast = { fastId: i, key: fastKeys[i]! };
    const proven = { fast, peer: distinctPeers ? { ...peer, attributes: { ...peer.attributes } } : peer, local, expiresAt, credential: {} as never, tokenSignature: new Uint8Array(64) };
    path.admitClient({ ...proven, peerAddress: address(i), localAddress: LOCAL, port: PORT });
    path.useServer({ ...proven, serverAddress: address(i), port: PORT, owner: { uid: 0, workload: 0 } });
  }
}

/**
 * `change`, then until `settled`: the whole time, how long the call itself took, and the longest
 * the event loop was held meanwhile (that call, or any turn after it).
 */
async function holding(change: () => void, settled: () => Promise<void>): Promise<{ total: number; returned: number; held: number }> {
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  const started = performance.now();
  change();
  const returned = performance.now() - started;
  await settled();
  const total = performance.now() - started;
  delay.disable();
  return { total, returned, held: Math.max(returned, delay.max / 1e6) };
}

/** A rotation or a flush: until the kernel caught up. */
async function caughtUp(label: string, change: () => void): Promise<void> {
  let turns = 0;
  const { total, returned, held } = await holding(change, async () => {
    while (path.backlogSize > 0) {
      turns++;
      await new Promise((resolve) => setImmediate(resolve));
    }
  });
  process.stdout.write(`${label}: ${total.toFixed(0)} ms over ${turns + 1} turns of the loop, the event loop held at most ${held.toFixed(1)} ms (returned after ${returned.toFixed(1)} ms)\n`);
}

/** A policy edit: until its walk over the tables ends. */
async function edited(label: string, from: string, authorizer: PolicyAuthorizer): Promise<void> {
  current = policyAdmitting(from);
  const { total, held } = await holding(
    () => {
      path.reauthorize(authorizer, () => ({ 'app.name': 'api' }));
    },
    () => path.rejudged,
  );
  process.stdout.write(`${label}: ${total.toFixed(0)} ms in ${path.lastRejudging?.slices ?? '?'} slices, the event loop held at most ${held.toFixed(1)} ms\n`);
}

try {
  fill(false);
  process.stdout.write(`${ENTRIES} server and ${ENTRIES} client entries\n`);
  // The baseline, on the maps of a second load: the same entries written one system call each.
  const native = loadBinding();
  const fd = native.fastPathLoad(fastPathObjectPath(), BASELINE_PIN_DIR).maps.fast_servers!;
  const keys = Array.from({ length: ENTRIES }, (_, i) => serverKey(address(i), LOCAL, i, PORT));
  const values = Array.from({ length: ENTRIES }, (_, i) => serverValue(fastKeys[i]!, true, false, expiresAt));
  const perEntry = timed(`baseline: ${ENTRIES} server entries written one system call each`, () => {
    for (let i = 0; i < ENTRIES; i++) native.mapUpdate(fd, keys[i]!, values[i]!, 0);
  });
  const batched = timed('the same entries in one batch', () => {
    native.mapWriteBatch(fd, Buffer.concat(keys), KEY_SIZE.fast_servers, Buffer.concat(values), values[0]!.length);
  });
  process.stdout.write(`batch: ${(batched / perEntry).toFixed(3)}x the baseline's time\n`);
  const authorizer = new PolicyAuthorizer(() => current);
  const edits = [
    ['policy edit, no verdict changes', 'web'],
    ['policy edit revoking every entry', 'nobody'],
    ['policy edit restoring them', 'web'],
  ] as const;
  process.stdout.write('entries of one peer workload:\n');
  for (const [label, from] of edits) await edited(`  ${label}`, from, authorizer);
  path.forgetAll();
  fill(true);
  process.stdout.write(`entries of ${ENTRIES} peers:\n`);
  for (const [label, from] of edits) await edited(`  ${label}`, from, authorizer);
  await caughtUp('key rotation (every server entry retiring, every client entry dropped)', () => {
    path.retire(expiresAt);
  });
  fill(true);
  await caughtUp('flush (every entry deleted)', () => {
    path.forgetAll();
  });
} finally {
  KernelFastPath.detach(PIN_DIR);
  KernelFastPath.detach(BASELINE_PIN_DIR);
}
