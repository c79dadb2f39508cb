// scripts/bench-flood: legitimate known-pair connections from web to api while the outsider
// floods api, per flood kind and rate, against the same load with no flood in the same run.
// Root; every phase is bounded in time. Library for test/e2e/attack.test.ts, CLI when run.
//   BENCH_FLOOD_SECONDS=8 BENCH_FLOOD_RATES=10000,max BENCH_FLOOD_FIRST_CONTACTS=30
//   BENCH_FLOOD_KINDS=token-less,forced-verify,verbatim-replay,malformed,spoofed-token-less,floor
//   (floor: the token-less flood, dropped by the lab's switch before it reaches api: what sending
//   it costs this machine whatever the receiver does, so the best any receiver can reach here)
//   BENCH_FLOOD_QUEUE_RATE_PER_SOURCE=<n> (api's datapath.queueRatePerSource; its default otherwise)
//   BENCH_FLOOD_KERNEL=1 (agents run the kernel fast path: known pairs and token-less SYNs are
//   judged in the kernel, first-contact-looking floods still meet the queue)
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeMessage, encodeMessage, MessageType, NONCE_BYTES, SYN_SIGNATURE_BYTES } from '../../agent/src/protocol/wire.ts';
import { apiMetrics, captureHandshake, inject, metric, readdressed, rssSampler, SERVICE_PORT, startAttackLab, verdictsBetween, writePackets } from '../lib/attack-lab.ts';
import { processTicks, TICKS_PER_SECOND } from '../lib/proc.ts';
import type { IdentityLab } from '../lib/identity-lab.ts';
import { sleep, type NetnsProcess } from '../lib/lab.ts';
import { mutatedPackets } from '../lib/packet-mutator.ts';
import { plainSyn } from '../lib/packets.ts';
import { withBody } from '../lib/rebody.ts';
import { runLoad } from './lab-load.ts';

export const FLOOD_KINDS = ['token-less', 'forced-verify', 'verbatim-replay', 'malformed', 'spoofed-token-less'] as const;

/** Sources of the spoofed flood: lab addresses no host uses. */
const SPOOFED_SOURCES = [...Array.from({ length: 90 }, (_, i) => 10 + i), ...Array.from({ length: 100 }, (_, i) => 110 + i)];
/** `floor` measures the machine rather than the agent: it runs only when BENCH_FLOOD_KINDS names it. */
export type FloodKind = (typeof FLOOD_KINDS)[number] | 'floor';
export type FloodRate = number | 'max';

export interface FloodConfig {
  seconds: number;
  rates: FloodRate[];
  kinds: FloodKind[];
  /** Connections web keeps open at once. */
  concurrency: number;
  /** First contacts (caches flushed before each) web makes after the known-pair load, still in the flood. */
  firstContacts: number;
  /** api's datapath.queueRatePerSource; undefined: its default. */
  queueRatePerSource?: number;
  /** Agents run the kernel fast path. */
  kernel?: boolean;
  prefix?: string;
  net?: number;
}

export interface FloodRow {
  kind: FloodKind | 'none';
  rate: FloodRate;
  /** What the sender reached. */
  sentPerSecond: number;
  /** From the first counter reading to the last. */
  phaseSeconds: number;
  legitimate: { perSecond: number; completed: number; failed: number; p50: number; p99: number };
  /** Sequential first contacts from web, flood still on. */
  firstContact: { completed: number; failed: number; p50: number; p99: number };
  /** api's CPU, share of one core. */
  agentCpu: number;
  peakRssMiB: number;
  /** Dropped by the kernel: queue full, and above the source rate before the queue. */
  queueDropped: number;
  sourceLimited: number;
  /** Verdicts the agent gave during the phase. */
  judged: number;
  /** Drops during the phase by reason, kernel ones included. */
  drops: Record<string, number>;
  logLinesDropped: number;
  flowLogDropped: number;
}

/** The packets of one flood kind, sent from the outsider to api's service. */
async function floodPackets(fixture: IdentityLab, kind: FloodKind): Promise<Uint8Array[]> {
  const { lab } = fixture;
  const outsider = lab.address('outsider');
  const api = lab.address('api');
  if (kind === 'token-less' || kind === 'floor') {
    return Array.from({ length: 4096 }, (_, i) => plainSyn(outsider, api, SERVICE_PORT, 1024 + i, randomBytes(4).readUInt32BE(0)));
  }
  if (kind === 'spoofed-token-less') {
    // Many sources, each under its per-source rate: what a per-source budget cannot hold.
    const subnet = outsider.slice(0, outsider.lastIndexOf('.') + 1);
    return Array.from({ length: 4096 }, (_, i) => plainSyn(`${subnet}${String(SPOOFED_SOURCES[i % SPOOFED_SOURCES.length])}`, api, SERVICE_PORT, 1024 + i, randomBytes(4).readUInt32BE(0)));
  }
  // A fresh first contact, so its time is inside the replay window for the whole phase.
  const captured = await captureHandshake(fixture, 4, true);
  if (kind === 'verbatim-replay') return [readdressed(captured.syn, outsider, api)];
  if (kind === 'forced-verify') {
    // Credential and token verify from the cache, policy admits the identity, and only the
    // signature over a nonce never seen is left: the costliest check a stranger can force.
    return Array.from({ length: 1024 }, () => {
      const forged = withBody(captured.syn, (body) => {
        const message = decodeMessage(body);
        if (message.type !== MessageType.Syn) throw new Error('captured SYN carries no SYN message');
        return encodeMessage({ ...message, nonce: randomBytes(NONCE_BYTES), time: Math.floor(Date.now() / 1000), signature: randomBytes(SYN_SIGNATURE_BYTES) });
      });
      return readdressed(forged, outsider, api);
    });
  }
  const v6 = await captureHandshake(fixture, 6, false);
  const outsider6 = lab.address('outsider', 6);
  const api6 = lab.address('api', 6);
  const bases = [
    ...[captured.syn, captured.synAck, captured.ack].map((p) => readdressed(p, outsider, api)),
    ...[v6.syn, v6.synAck, v6.ack].map((p) => readdressed(p, outsider6, api6)),
  ];
  return [...mutatedPackets(bases, 20261203, 4096)];
}

/** The flood goes on this much longer than the known-pair load, for the first contacts. */
const FIRST_CONTACT_SECONDS = 4;

async function phase(fixture: IdentityLab, directory: string, config: FloodConfig, kind: FloodKind | 'none', rate: FloodRate): Promise<FloodRow> {
  // The floor's packets die on the lab's bridge: api never sees them.
  const floor = kind === 'floor' ? dropAtSwitch(fixture) : null;
  try {
    const sender =
      kind === 'none'
        ? null
        : inject(fixture.lab, 'replay', writePackets(join(directory, `${kind}.hex`), await floodPackets(fixture, kind)), [String(rate), String(config.seconds + FIRST_CONTACT_SECONDS)]);
    return await measured(fixture, config, kind, rate, sender);
  } finally {
    floor?.();
  }
}

/** Drops the outsider's packets in the switch namespace's bridge (nft, bridge family); returns the undo. */
function dropAtSwitch(fixture: IdentityLab): () => void {
  const { lab } = fixture;
  lab.exec('sw', ['nft', 'add', 'table', 'bridge', 'synpass_floor']);
  lab.exec('sw', ['nft', 'add', 'chain', 'bridge', 'synpass_floor', 'forward', '{ type filter hook forward priority 0; }']);
  lab.exec('sw', ['nft', 'add', 'rule', 'bridge', 'synpass_floor', 'forward', 'ip', 'saddr', lab.address('outsider'), 'drop']);
  return () => {
    lab.exec('sw', ['nft', 'delete', 'table', 'bridge', 'synpass_floor']);
  };
}

async function measured(fixture: IdentityLab, config: FloodConfig, kind: FloodKind | 'none', rate: FloodRate, sender: NetnsProcess | null): Promise<FloodRow> {
  const { lab, api } = fixture;
  const pid = api.process.pid;
  await sender?.waitFor((l) => l.sending === true, 30_000);
  const readBefore = performance.now();
  const statusBefore = await api.status();
  const metricsBefore = await apiMetrics(lab);
  const ticksBefore = processTicks(pid);
  const started = performance.now();
  const memory = rssSampler(pid, 250);
  // The flood reaches its rate first; the load ends before it does.
  await sleep(500);
  const load = await runLoad(lab, ['rate', lab.address('api'), String(SERVICE_PORT), String(config.concurrency), String((config.seconds - 1.5) * 1000), '10000000']);
  const first =
    config.firstContacts === 0
      ? { count: 0, failed: 0, p50: Number.NaN, p99: Number.NaN }
      : await runLoad(lab, ['sequential', lab.address('api'), String(SERVICE_PORT), String(config.firstContacts), fixture.web.socket, api.socket]);
  const sent = sender === null ? { perSecond: 0 } : await sender.waitFor((l) => typeof l.sent === 'number', (config.seconds + FIRST_CONTACT_SECONDS + 30) * 1000);
  const wall = (performance.now() - started) / 1000;
  const agentCpu = (processTicks(pid) - ticksBefore) / TICKS_PER_SECOND / wall;
  // Kernel rule counters are read at each rule check (every second here).
  await sleep(1_200);
  const { peak } = memory.stop();
  const statusAfter = await api.status();
  const phaseSeconds = (performance.now() - readBefore) / 1000;
  const metricsAfter = await apiMetrics(lab);
  const delta = (name: string, labels = '') => metric(metricsAfter, name, labels) - metric(metricsBefore, name, labels);
  const verdicts = verdictsBetween(statusBefore, statusAfter);
  const sourceLimited = verdicts['drop:source-rate-limited'] ?? 0;
  return {
    kind,
    rate,
    sentPerSecond: Number(sent.perSecond),
    phaseSeconds,
    legitimate: { perSecond: load.perSecond!, completed: load.completed!, failed: load.failed!, p50: load.p50!, p99: load.p99! },
    firstContact: { completed: first.count!, failed: first.failed!, p50: first.p50!, p99: first.p99! },
    agentCpu,
    peakRssMiB: peak,
    queueDropped: (statusAfter.kernelQueue?.dropped ?? 0) - (statusBefore.kernelQueue?.dropped ?? 0),
    sourceLimited,
    judged: Object.values(verdicts).reduce((sum, n) => sum + n, 0) - sourceLimited,
    drops: Object.fromEntries(Object.entries(verdicts).flatMap(([key, n]) => (key.startsWith('drop:') ? [[key.slice('drop:'.length), n]] : []))),
    logLinesDropped: delta('synpass_log_dropped_lines_total'),
    flowLogDropped: delta('synpass_flow_log_dropped_total', 'reason="backlog"'),
  };
}

/** Baseline first and last (its mean is what ratios are against), each kind at each rate between. */
export async function floodBench(config: FloodConfig, progress: (text: string) => void = () => undefined): Promise<FloodRow[]> {
  const directory = mkdtempSync(join(tmpdir(), 'synpass-flood-'));
  const fixture = await startAttackLab({
    prefix: config.prefix ?? 'fl',
    net: config.net ?? 96,
    serviceSeconds: (config.kinds.length * config.rates.length + 2) * (config.seconds + FIRST_CONTACT_SECONDS + 40) + 60,
    apiEnv: { SYNPASS_DATAPATH_RULE_CHECK_SECONDS: '1', ...(config.queueRatePerSource === undefined ? {} : { SYNPASS_DATAPATH_QUEUE_RATE_PER_SOURCE: String(config.queueRatePerSource) }) },
    ...(config.kernel === undefined ? {} : { kernel: config.kernel }),
  });
  try {
    // Known pair from here on, warm.
    await runLoad(fixture.lab, ['rate', fixture.lab.address('api'), String(SERVICE_PORT), String(config.concurrency), '1000', '10000000']);
    const rows: FloodRow[] = [];
    progress('baseline');
    rows.push(await phase(fixture, directory, config, 'none', 0));
    for (const kind of config.kinds) {
      for (const rate of config.rates) {
        progress(`${kind} at ${String(rate)}/s`);
        rows.push(await phase(fixture, directory, config, kind, rate));
      }
    }
    progress('baseline again');
    rows.push(await phase(fixture, directory, config, 'none', 0));
    return rows;
  } finally {
    await fixture.down();
    rmSync(directory, { recursive: true, force: true });
  }
}

function format(rows: FloodRow[]): string {
  const baselines = rows.filter((r) => r.kind === 'none');
  const base = {
    perSecond: baselines.reduce((s, r) => s + r.legitimate.perSecond, 0) / baselines.length,
    p50: baselines.reduce((s, r) => s + r.legitimate.p50, 0) / baselines.length,
    p99: baselines.reduce((s, r) => s + r.legitimate.p99, 0) / baselines.length,
    firstP50: baselines.reduce((s, r) => s + r.firstContact.p50, 0) / baselines.length,
  };
  const header =
    '| flood | sent/s | legit ok | legit conn/s | x no flood | p50 µs | x | p99 µs | x | first contacts ok | first-contact p50 µs | x | agent CPU | peak RSS MiB | judged | source-limited | queue drops | log lines dropped |';
  const lines = rows.map((r) => {
    const l = r.legitimate;
    const ok = l.completed + l.failed === 0 ? 0 : l.completed / (l.completed + l.failed);
    return `| ${r.kind === 'none' ? 'none' : `${r.kind} @ ${String(r.rate)}`} | ${r.sentPerSecond} | ${(ok * 100).toFixed(2)}% | ${l.perSecond.toFixed(0)} | ${(l.perSecond / base.perSecond).toFixed(2)} | ${l.p50.toFixed(0)} | ${(l.p50 / base.p50).toFixed(2)} | ${l.p99.toFixed(0)} | ${(l.p99 / base.p99).toFixed(2)} | ${r.firstContact.completed}/${r.firstContact.completed + r.firstContact.failed} | ${r.firstContact.p50.toFixed(0)} | ${(r.firstContact.p50 / base.firstP50).toFixed(2)} | ${(r.agentCpu * 100).toFixed(0)}% | ${r.peakRssMiB.toFixed(1)} | ${r.judged} | ${r.sourceLimited} | ${r.queueDropped} | ${r.logLinesDropped + r.flowLogDropped} |`;
  });
  return [header, `|${'---|'.repeat(19)}`, ...lines].join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const env = process.env;
  const rows = await floodBench(
    {
      seconds: Number(env.BENCH_FLOOD_SECONDS ?? 8),
      rates: (env.BENCH_FLOOD_RATES ?? '10000,max').split(',').map((r) => (r === 'max' ? 'max' : Number(r))),
      kinds: (env.BENCH_FLOOD_KINDS?.split(',') ?? [...FLOOD_KINDS]) as FloodKind[],
      concurrency: Number(env.BENCH_FLOOD_CONCURRENCY ?? 8),
      firstContacts: Number(env.BENCH_FLOOD_FIRST_CONTACTS ?? 30),
      ...(env.BENCH_FLOOD_QUEUE_RATE_PER_SOURCE === undefined ? {} : { queueRatePerSource: Number(env.BENCH_FLOOD_QUEUE_RATE_PER_SOURCE) }),
      kernel: env.BENCH_FLOOD_KERNEL === '1',
    },
    (text) => process.stderr.write(`bench-flood: ${text}\n`),
  );
  process.stdout.write(`${format(rows)}\n`);
}
