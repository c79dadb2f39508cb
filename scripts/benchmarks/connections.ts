// scripts/bench: connection rate, sequential connect latency and bulk throughput between two
// lab namespaces: without agents (the baseline), with pass-through agents, and with identity
// agents (known pair, and first contact with peer caches flushed before every connect). Every
// number is printed against the baseline measured in this same run.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareIdentities } from '../../test/support/identity-lab.ts';
import { Lab, type AgentHandle } from '../../test/support/lab.ts';

const LOAD = new URL('./load.ts', import.meta.url).pathname;
// Ports the example policy (policy/examples/three-tier) opens from web to api.
const CONNECT_PORT = 8080;
const SINK_PORT = 7000;
const config = {
  rateConcurrency: 32,
  rateMs: Number(process.env.BENCH_RATE_MS ?? 4000),
  rateMax: 60_000,
  sequentialCount: Number(process.env.BENCH_SEQUENTIAL ?? 2000),
  firstContactCount: Number(process.env.BENCH_FIRST_CONTACT ?? 300),
  bulkBytes: Number(process.env.BENCH_BULK_BYTES ?? 200e6),
};

interface Results {
  rate?: number;
  p50: number;
  p99: number;
  throughput?: number;
  tripsPerConnection?: number;
}

// Accepted-connection log lines cost the agent as much as a trip; benchmarks measure the
// datapath, so agents log warnings (drops) only.
process.env.SYNPASS_LOG_LEVEL ??= 'warn';

async function load(lab: Lab, args: string[]): Promise<Record<string, number>> {
  const child = lab.spawn('web', [process.execPath, '--import', 'tsx', LOAD, ...args]);
  const line = await child.waitFor(() => true, 120_000);
  await child.exited;
  return line as Record<string, number>;
}

async function queued(agents: AgentHandle[]): Promise<number> {
  const counts = await Promise.all(agents.map(async (agent) => (await agent.status()).queue.received ?? 0));
  return counts.reduce((sum, value) => sum + value, 0);
}

async function sequential(lab: Lab, agents: AgentHandle[], count: number, flushSockets: string[] = []): Promise<Results> {
  const before = await queued(agents);
  const result = await load(lab, ['sequential', lab.address('api'), String(CONNECT_PORT), String(count), ...flushSockets]);
  const trips = agents.length > 0 ? ((await queued(agents)) - before) / result.count! : 0;
  return { p50: result.p50!, p99: result.p99!, tripsPerConnection: trips };
}

async function measure(lab: Lab, agents: AgentHandle[]): Promise<Results> {
  const host = lab.address('api');
  const rate = await load(lab, ['rate', host, String(CONNECT_PORT), String(config.rateConcurrency), String(config.rateMs), String(config.rateMax)]);
  if ((rate.failed ?? 0) > 0) process.stderr.write(`warning: ${rate.failed} connections failed\n`);
  const latency = await sequential(lab, agents, config.sequentialCount);
  // Bulk throughput swings run to run on a shared 2-core machine: take the median of three.
  const bulkRuns: number[] = [];
  for (let i = 0; i < 3; i++) {
    bulkRuns.push((await load(lab, ['bulk', host, String(SINK_PORT), String(config.bulkBytes)])).megabytesPerSecond!);
  }
  bulkRuns.sort((a, b) => a - b);
  return { ...latency, rate: rate.perSecond!, throughput: bulkRuns[1]! };
}

function fmt(value: number | undefined, digits = 0): string {
  return value === undefined ? '-' : value.toFixed(digits);
}

function report(name: string, base: Results, run: Results): string[] {
  const cells = [
    name.padEnd(28),
    `${fmt(run.rate)}/s`.padStart(9),
    (run.rate === undefined ? '-' : `${fmt(run.rate / base.rate!, 2)}x`).padStart(6),
    `${fmt(run.p50)}us`.padStart(8),
    `+${fmt(run.p50 - base.p50)}`.padStart(6),
    `${fmt(run.p99)}us`.padStart(8),
    `+${fmt(run.p99 - base.p99)}`.padStart(7),
    (run.throughput === undefined ? '-' : `${fmt(run.throughput / base.throughput!, 3)}x`).padStart(7),
    fmt(run.tripsPerConnection, 1).padStart(6),
  ];
  return [cells.join(' ')];
}

const directory = mkdtempSync(join(tmpdir(), 'synpass-bench-'));
const lab = Lab.up('bn', 90);
try {
  const files = await prepareIdentities(lab, directory);
  await lab
    .spawn('api', [process.execPath, '--import', 'tsx', LOAD, 'server', String(CONNECT_PORT), String(SINK_PORT)])
    .waitFor((l) => l.listening === true);

  // Warm the server, the kernel's socket caches and the CPU up before the baseline, or the first
  // phase pays for it and every ratio after it looks better than it is.
  process.stderr.write('bench: warm-up (discarded)\n');
  await load(lab, ['rate', lab.address('api'), String(CONNECT_PORT), '32', '1500', String(config.rateMax)]);
  await load(lab, ['bulk', lab.address('api'), String(SINK_PORT), String(config.bulkBytes)]);
  process.stderr.write('bench: baseline (no agents)\n');
  const baseline = await measure(lab, []);

  process.stderr.write('bench: pass-through agents\n');
  let agents = [await lab.startAgent('api'), await lab.startAgent('web')];
  const passThrough = await measure(lab, agents);
  for (const agent of agents) await agent.process.stop();

  process.stderr.write('bench: identity agents\n');
  agents = [await lab.startAgent('api', ['--config', files.configs.api]), await lab.startAgent('web', ['--config', files.configs.web])];
  const identityKnown = await measure(lab, agents);
  process.stderr.write('bench: identity agents, first contact (caches flushed before each connect)\n');
  const firstContact = await sequential(lab, agents, config.firstContactCount, agents.map((agent) => agent.socket));

  const header = [
    'mode'.padEnd(28),
    'conn/s'.padStart(9),
    'ratio'.padStart(6),
    'seq p50'.padStart(8),
    'added'.padStart(6),
    'seq p99'.padStart(8),
    'added'.padStart(7),
    'bulk'.padStart(7),
    'trips'.padStart(6),
  ].join(' ');
  const lines = [
    `rate: ${config.rateConcurrency} concurrent for ${config.rateMs} ms; sequential: ${config.sequentialCount} connects; bulk: ${config.bulkBytes / 1e6} MB x3 (median)`,
    header,
    ...report('no agents (baseline)', baseline, baseline),
    ...report('pass-through', baseline, passThrough),
    ...report('identity, known pair', baseline, identityKnown),
    ...report('identity, first contact', baseline, firstContact),
    'trips: queued packets per connection, both agents together; added: microseconds over the baseline',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
} finally {
  await lab.down();
  rmSync(directory, { recursive: true, force: true });
}
