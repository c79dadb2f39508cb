// The namespace demo: web and api run agents of trust domain demo.synpass, the outsider runs
// none (then a rogue agent of an untrusted domain), and an attacker replays a captured SYN and
// builds a new one from its credential and token. After the first contact, web's connections to
// api take the kernel fast path (when this host allows it): no packet is queued to either agent,
// and the kernel's own counters give the reason; scans and replayed fast SYNs die there too.
// Prints one row per scenario; exits 0 only if every row is as expected.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ParsedPacket, parsePacket } from '../agent/src/datapath/packet.ts';
import { decodeMessage, encodeMessage, MessageType } from '../agent/src/protocol/wire.ts';
import { BATCH_UID, prepareIdentities } from './lib/identity-lab.ts';
import { Lab, ROOT, sleep, type AgentHandle } from './lib/lab.ts';
import { withBody } from './lib/rebody.ts';
import { FAST_COUNTERS, kernelVerdicts, type FastCounter } from '../agent/src/kernel/layouts.ts';

const RAW_PROBE = join(ROOT, 'scripts/lib/raw-probe.ts');

interface Row {
  connection: string;
  expected: string;
  /** For the attacks: the drop reason that proves the right check caught them. */
  expectedReason?: string;
  result: string;
  reason: string;
  identity: string;
}

/** api's first SYN verdict after `after` from `source`: an address, or an address:port. */
/** A SYN verdict from `source` (address or address:port), or a per-second summary of its drops. */
function lastVerdictFrom(agent: AgentHandle, source: string, after: number): Record<string, unknown> | undefined {
  return agent.process.lines
    .slice(after)
    .find(
      (l) =>
        (l.event === 'handshake' && l.direction === 'ingress' && l.stage === 'syn' && (String(l.source) === source || String(l.source).startsWith(`${source}:`))) ||
        (l.event === 'drops' && String(l.source) === source),
    );
}

interface KernelView {
  running: boolean;
  counters: Record<FastCounter, number>;
  queued: number;
}

/** The agent's kernel fast path counters and how many packets its queue has received. */
async function kernelView(agent: AgentHandle): Promise<KernelView> {
  const status = (await agent.status()) as unknown as { kernelFastPath: { running: boolean; counters?: Record<FastCounter, number> }; queue: { received: number } };
  const zero = Object.fromEntries(FAST_COUNTERS.map((name) => [name, 0])) as Record<FastCounter, number>;
  return { running: status.kernelFastPath.running, counters: status.kernelFastPath.counters ?? zero, queued: status.queue.received };
}

/** The kernel's verdict between two views, as a reason ("-" when the kernel judged nothing). */
function kernelReason(before: KernelView, after: KernelView): string {
  const moved = Object.fromEntries(FAST_COUNTERS.map((name) => [name, after.counters[name] - before.counters[name]])) as Record<FastCounter, number>;
  const rows = kernelVerdicts(moved).filter((row) => row.direction === 'ingress');
  const row = rows.find((r) => r.action === 'drop') ?? rows[0];
  return row === undefined ? '-' : `${row.reason} (kernel)`;
}

const directory = mkdtempSync(join(tmpdir(), 'synpass-demo-'));
const lab = Lab.up('demo', 7, { kernel: true });
const rows: Row[] = [];
try {
  const files = await prepareIdentities(lab, directory);
  // The service runs before synpass does, as on a host where it is installed later: the agent's
  // listener sweep puts it on the kernel fast path (docs/operations.md, Which services).
  await lab.peer('api', ['server', '8080', 'http']).waitFor((l) => l.listening === 8080);
  process.stderr.write('demo: lab up, keys issued, api serving; starting agents\n');
  const api = await lab.startAgent('api', ['--config', files.configs.api]);
  const web = await lab.startAgent('web', ['--config', files.configs.web]);
  const apiAddress = lab.address('api');

  // 1. web -> api over HTTP, captured on the bridge for the replay below.
  const capture = await lab.capture('tcp port 8080 and tcp[tcpflags] & tcp-syn != 0', 2, 10_000);
  const http = await lab.peerOnce('web', ['http', apiAddress, '8080']);
  await capture.waitFor((l) => typeof l.hex === 'string');
  await capture.stop();
  const synHex = capture.lines.find((l) => typeof l.hex === 'string' && decodes(l.hex)?.isSyn)?.hex as string | undefined;
  const webSeen = api.process.lines.find((l) => l.event === 'handshake' && l.stage === 'syn' && l.direction === 'ingress');
  const apiSeen = web.process.lines.find((l) => l.event === 'handshake' && l.stage === 'syn-ack');
  rows.push({
    connection: 'web -> api:8080 (HTTP)',
    expected: 'connected',
    result: http.status === 200 ? 'connected' : 'failed',
    reason: reasonOf(webSeen),
    identity: `${subjectOf(webSeen)} <-> ${subjectOf(apiSeen)}`,
  });

  // 2. A second connection: the agents know each other. With the kernel fast path both kernels
  // prove and judge it, and neither agent sees a packet; without it, the handshake ends at the
  // SYN-ACK in the agents.
  const [apiKernel, webKernel] = [await kernelView(api), await kernelView(web)];
  const fastCapture = await lab.capture(`tcp port 8080 and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn`, 1, 10_000);
  const again = await lab.peerOnce('web', ['http', apiAddress, '8080']);
  await fastCapture.waitFor((l) => typeof l.done === 'number');
  const fastSynHex = fastCapture.lines.find((l) => typeof l.hex === 'string')?.hex as string | undefined;
  const [apiAfter, webAfter] = [await kernelView(api), await kernelView(web)];
  const kernelJudged = apiKernel.running && apiAfter.counters.synAccepted > apiKernel.counters.synAccepted;
  const fast = web.process.lines.filter((l) => l.event === 'handshake' && l.stage === 'syn-ack').at(-1);
  const queuedNow = apiAfter.queued - apiKernel.queued + webAfter.queued - webKernel.queued;
  rows.push({
    connection: kernelJudged ? 'web -> api:8080 again (kernel fast path)' : 'web -> api:8080 again (known peer)',
    expected: 'connected',
    result: again.status === 200 ? 'connected' : 'failed',
    reason: kernelJudged ? `ok-kernel, ${queuedNow} queued` : reasonOf(fast),
    identity: kernelJudged ? `${subjectOf(webSeen)} (key from first contact)` : subjectOf(fast),
  });

  // 3. On web itself, a process of another workload (user nobody = "batch"): api does not admit it.
  const batchMark = api.process.lines.length;
  const batch = await lab.peerOnce('web', ['echo', apiAddress, '8080', 'hi'], 4_000, BATCH_UID).catch(() => ({ error: 'timeout' }));
  const batchVerdict = api.process.lines
    .slice(batchMark)
    .find((l) => l.event === 'handshake' && l.direction === 'ingress' && l.stage === 'syn');
  rows.push({
    connection: 'web, user nobody (workload batch) -> api',
    expected: 'cloaked',
    result: 'echoed' in batch ? 'connected' : 'cloaked',
    reason: reasonOf(batchVerdict),
    identity: subjectOf(batchVerdict),
  });

  // 4. The outsider (no agent) tries a normal connection. With the kernel fast path, api's kernel
  // drops its SYN before the queue (policy opens no port of api to peers without identity).
  const mark = api.process.lines.length;
  const outsiderKernel = await kernelView(api);
  const outsider = await lab.peerOnce('outsider', ['echo', apiAddress, '8080', 'hi'], 4_000).catch(() => ({ error: 'timeout' }));
  const outsiderVerdict = lastVerdictFrom(api, lab.address('outsider'), mark);
  rows.push({
    connection: 'outsider -> api:8080 (no agent)',
    expected: 'cloaked',
    result: 'echoed' in outsider ? 'connected' : 'cloaked',
    reason: dropReason(kernelReason(outsiderKernel, await kernelView(api)), outsiderVerdict),
    identity: '-',
  });

  // 5. A raw SYN scan of api's protected ports: a capture must see nothing come back.
  const silence = await lab.capture(`src host ${apiAddress} and tcp`, 100, 3_000);
  const scanMark = api.process.lines.length;
  const scanKernel = await kernelView(api);
  await runProbe(lab, ['syn-scan', lab.address('outsider'), apiAddress, '8080', '7000']);
  await sleep(1_500);
  await silence.stop();
  const replies = silence.lines.filter((l) => typeof l.hex === 'string').length;
  const scanVerdict = lastVerdictFrom(api, lab.address('outsider'), scanMark);
  rows.push({
    connection: 'outsider raw SYN scan of api:8080,7000',
    expected: 'cloaked',
    result: replies === 0 ? 'cloaked' : `${replies} replies`,
    reason: dropReason(kernelReason(scanKernel, await kernelView(api)), scanVerdict),
    identity: '-',
  });

  /** Sends raw packets from the outsider, posing as web, and reads api's verdict on them. */
  const attack = async (connection: string, hex: string | undefined, expectedReason: string): Promise<Row> => {
    const mark = api.process.lines.length;
    if (hex) await runProbe(lab, ['send', apiAddress, hex]);
    await sleep(500);
    // By port too: web's refused batch workload may still be retransmitting its own SYNs.
    const port = hex === undefined ? null : decodes(hex)?.sourcePort;
    const verdict = lastVerdictFrom(api, `${lab.address('web')}:${port ?? '?'}`, mark);
    return { connection, expected: 'rejected', expectedReason, result: verdict?.verdict === 'drop' ? 'rejected' : 'accepted', reason: reasonOf(verdict), identity: '-' };
  };

  // 6. The attacker replays web's captured SYN (token and all).
  rows.push(await attack('attacker replays web\'s SYN', synHex, 'replayed-syn'));

  // 6b. With the kernel fast path: the attacker replays web's captured fast SYN; api's kernel has
  // seen it.
  if (kernelJudged && fastSynHex !== undefined) {
    const before = await kernelView(api);
    await runProbe(lab, ['send', apiAddress, fastSynHex]);
    await sleep(500);
    const reason = kernelReason(before, await kernelView(api));
    rows.push({
      connection: 'attacker replays web\'s fast SYN',
      expected: 'rejected',
      expectedReason: 'replayed-syn (kernel)',
      result: reason.endsWith('(kernel)') && !reason.startsWith('ok') ? 'rejected' : 'accepted',
      reason,
      identity: '-',
    });
  }

  // 7. The attacker lifts credential and token from that SYN into a new one with a fresh nonce
  // and time: the agent signature over them no longer verifies.
  const lifted =
    synHex === undefined
      ? undefined
      : withBody(Buffer.from(synHex, 'hex'), (body) => {
          const message = decodeMessage(body);
          if (message.type !== MessageType.Syn) return body;
          return encodeMessage({ ...message, nonce: randomBytes(16), time: Math.floor(Date.now() / 1000) });
        });
  rows.push(await attack('attacker reuses web\'s token, new nonce', lifted && Buffer.from(lifted).toString('hex'), 'bad-proof'));

  // 8. A rogue agent whose trust domain api does not trust.
  const rogue = await lab.startAgent('outsider', ['--config', files.configs.outsider]);
  const rogueMark = api.process.lines.length;
  const rogueTry = await lab.peerOnce('outsider', ['echo', apiAddress, '8080', 'hi'], 4_000).catch(() => ({ error: 'timeout' }));
  const rogueVerdict = lastVerdictFrom(api, lab.address('outsider'), rogueMark);
  rows.push({
    connection: 'rogue.example agent -> api:8080',
    expected: 'cloaked',
    result: 'echoed' in rogueTry ? 'connected' : 'cloaked',
    reason: reasonOf(rogueVerdict),
    identity: '-',
  });
  await rogue.process.stop();
} finally {
  await lab.down();
  rmSync(directory, { recursive: true, force: true });
}

function decodes(hex: string): ParsedPacket | null {
  const bytes = Uint8Array.from(Buffer.from(hex, 'hex'));
  const packet = new ParsedPacket();
  return parsePacket(bytes, 0, bytes.length, packet) ? packet : null;
}

/** A logged verdict's reason; the kernel fast path's own verdicts say so. */
/**
 * A drop's reason: the kernel's counters when they moved (its flow-log line may have been folded
 * into a `drops` summary, which names no path, when the same source was dropped a moment before),
 * else the agent's verdict.
 */
function dropReason(kernel: string, line: Record<string, unknown> | undefined): string {
  return kernel !== '-' ? kernel : reasonOf(line);
}

function reasonOf(line: Record<string, unknown> | undefined): string {
  if (typeof line?.reason !== 'string') return '-';
  return line.path === 'kernel' ? `${line.reason} (kernel)` : line.reason;
}

function subjectOf(line: Record<string, unknown> | undefined): string {
  const peer = line?.peer as { subject?: string } | null | undefined;
  return peer?.subject ?? '-';
}

async function runProbe(lab: Lab, args: string[]): Promise<void> {
  const probe = lab.spawn('outsider', [process.execPath, '--import', 'tsx', RAW_PROBE, ...args]);
  await probe.waitFor((l) => typeof l.sent === 'number', 10_000);
  await probe.exited;
}

const widths = [40, 10, 28, 60];
const header = ['connection', 'result', 'reason', 'verified peer identity'];
const line = (cells: string[]) => cells.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join(' ').trimEnd();
const asExpected = (row: Row): boolean => row.result === row.expected && (row.expectedReason === undefined || row.reason === row.expectedReason);
const ok = rows.every(asExpected);
process.stdout.write(`${line(header)}\n${line(widths.map((w) => '-'.repeat(w)))}\n`);
for (const row of rows) {
  const mark = asExpected(row) ? '' : `   <-- expected ${row.expected}${row.expectedReason === undefined ? '' : ` (${row.expectedReason})`}`;
  process.stdout.write(`${line([row.connection, row.result, row.reason, row.identity])}${mark}\n`);
}
process.stdout.write(`\n${ok ? 'demo: every scenario as expected' : 'demo: some scenarios were NOT as expected'}\n`);
process.exit(ok ? 0 : 1);
